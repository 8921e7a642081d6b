// A page table in RAM with the io-pgtable operations. The table is an engine
// context (root + format + config); the engine's builder does the work.
import { toU64, type Address } from "./addr.js";
import { accessBits, permsOf, protBits, reasonName, type Access, type FaultReason, type Perms, type Prot } from "./access.js";
import { fail } from "./errors.js";
import { hostMapSpans, hostMapStatus, rootArg, unmapSpan } from "./mapargs.js";
import { contextFlags, resolveFormat, setContext, type DomainFlags, type PageTableOptions, type ResolvedFormat } from "./format.js";
import * as abi from "./engine/abi.js";
import type { Engine } from "./engine/engine.js";
import type { PhysicalMemory } from "./memory.js";

export interface WalkStep { level: number; entryAddress: bigint; entry: bigint }

/** A probe walk: no IOTLB fill, no accessed/dirty update. */
export interface WalkResult {
  hpa?: bigint;
  pageSize?: bigint;
  perms?: Perms;
  fault?: { reason: FaultReason; level: number; stage: 1 | 2 };
  /** Every entry read, top level first. */
  steps: WalkStep[];
}

export class PageTable {
  readonly format: ResolvedFormat;
  readonly root: bigint;
  /** Engine context id of the table (used by the builder and by probe walks). */
  readonly contextId: number;
  private readonly ownsRoot: boolean;
  private destroyed = false;

  /** @internal */
  constructor(private readonly engine: Engine, ram: PhysicalMemory, options: PageTableOptions, flags: DomainFlags = {}) {
    this.format = resolveFormat(options);
    const contextBits = contextFlags(this.format, flags);
    const frames = this.format.rootFrames;
    if (options.root !== undefined) {
      const root = rootArg(options.root, ram.size, frames);
      this.root = root;
      // A root written into RAM by hand is adopted, so the frame allocator
      // never hands it out; one from allocFrames() stays the caller's.
      this.ownsRoot = claimRoot(engine, root, frames);
    } else {
      this.root = ram.allocFrames(frames);
      this.ownsRoot = true;
    }
    try {
      this.contextId = engine.allocContextId();
    } catch (e) {
      if (this.ownsRoot) ram.freeFrames(this.root, frames);
      throw e;
    }
    setContext(engine.wasm, this.contextId, this.format, contextBits, this.root);
  }

  private live(): void {
    if (this.destroyed) fail("ENODEV", "page table was destroyed");
  }

  /** Maps [iova, iova + size) to [hpa, hpa + size) with the largest pages that fit. All or nothing. */
  map(iova: Address, hpa: Address, size: Address, prot: Prot = {}): void {
    this.live();
    // prot first: with several faults in one request, the first check's errno is the one reported.
    const bits = protBits(prot);
    const { input: { first: i, last }, output: { first: p } } = hostMapSpans(this.format, iova, hpa, size);
    hostMapStatus(this.engine.wasm.ptMap(this.contextId, i, last, p, bits), i, last);
  }

  /** Removes every leaf wholly inside [iova, iova + size); returns the bytes unmapped. */
  unmap(iova: Address, size: Address): bigint {
    this.live();
    const { first: i, last } = unmapSpan(this.format, iova, size, "iova");
    // i64 results arrive signed; bytes unmapped are unsigned.
    return BigInt.asUintN(64, this.engine.wasm.ptUnmap(this.contextId, i, last));
  }

  /** The HPA iova translates to, or undefined when nothing is mapped there (no permission check). */
  iovaToPhys(iova: Address): bigint | undefined {
    this.live();
    const i = toU64(iova, "iova");
    return this.engine.wasm.probe(this.contextId, i, 0, 0) === abi.ST_OK ? this.engine.u64(abi.RES_HPA) : undefined;
  }

  /** A probe walk of iova, reporting every entry read. */
  walk(iova: Address, access: Access = "read"): WalkResult {
    this.live();
    return probeWalk(this.engine, this.contextId, this.format.levels, toU64(iova, "iova"), accessBits(access));
  }

  /** Unmaps everything (freeing the tables the builder allocated), releases the context, frees an owned root. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const [lo, hi] of this.format.inputRanges) this.engine.wasm.ptUnmap(this.contextId, lo, hi);
    this.engine.releaseContextId(this.contextId);
    if (this.ownsRoot) this.engine.wasm.framesRelease(this.root, this.format.rootFrames);
  }
}

/**
 * Adopts a root of `frames` frames when the allocator holds none of them (a
 * root written by hand); a root the allocator already holds, even in part,
 * stays the caller's and nothing is claimed.
 */
function claimRoot(engine: Engine, root: bigint, frames: number): boolean {
  for (let i = 0; i < frames; i++) {
    if (engine.wasm.framesClaim(root + BigInt(i) * 4096n) !== abi.ST_OK) {
      if (i > 0) engine.wasm.framesRelease(root, i);
      return false;
    }
  }
  return true;
}

/** Every walk starts at the top level (levels - 1), so step n is at level levels - 1 - n. */
export function probeWalk(engine: Engine, contextId: number, levels: number, iova: bigint, access: number): WalkResult {
  const st = engine.wasm.probe(contextId, iova, access, 1);
  const steps: WalkStep[] = [];
  const count = engine.u32(abi.RES_TRACE_COUNT);
  const top = levels - 1;
  for (let n = 0; n < count; n++) {
    const rec = abi.TRACE + n * abi.TRACE_RECORD_SIZE;
    steps.push({ level: top - n, entryAddress: engine.u64(rec), entry: engine.u64(rec + 8) });
  }
  if (st !== abi.ST_OK) return { fault: { reason: reasonName(st), level: engine.u32(abi.RES_LEVEL), stage: engine.u32(abi.RES_STAGE) === 2 ? 2 : 1 }, steps };
  const sizeLog = engine.u32(abi.RES_SIZE_LOG);
  return { hpa: engine.u64(abi.RES_HPA), pageSize: 1n << BigInt(sizeLog), perms: permsOf(engine.u32(abi.RES_PERMS)), steps };
}
