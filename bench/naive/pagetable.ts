// A page table of the twin, with the io-pgtable operations and probe walks.
// Like the facade's PageTable it is a context (root + format + switches), and
// the builder works on the context its id names.
import * as abi from "../../src/engine/abi.js";
import { contextFlags, resolveFormat, type ResolvedFormat } from "../../src/format.js";
import type { Access, Address, DomainFlags, PageTableOptions, Prot, WalkResult, WalkStep } from "../../src/index.js";
import { accessBits, fail, hex, lastOf, PAGE_SIZE, permsOf, protBits, reasonName, requireAligned, toU64 } from "./args.js";
import type { Builder } from "./builder.js";
import type { Contexts } from "./context.js";
import type { DoorbellWindow } from "./dma.js";
import type { NaiveIotlb } from "./iotlb.js";
import type { NaivePhysicalMemory } from "./memory.js";
import type { Ram } from "./ram.js";
import { walk, type WalkStepRecord } from "./walker.js";

/** What page tables and domains of one twin host share. */
export interface NaiveCore {
  ram: Ram;
  memory: NaivePhysicalMemory;
  contexts: Contexts;
  builder: Builder;
  iotlb: NaiveIotlb;
  /** The host's MSI doorbell HPAs: device writes that translate there are interrupts. */
  doorbell: DoorbellWindow;
}

/** Releases an id as the facade does: the IOTLB forgets the context, then the id is free. */
export function releaseContext(core: NaiveCore, id: number): void {
  core.iotlb.flushContext(id);
  core.contexts.release(id);
}

/** A walk with no IOTLB fill and no A/D update, reporting every entry read. */
export function probeWalk(core: NaiveCore, contextId: number, levels: number, iova: bigint, access: number): WalkResult {
  const trace: WalkStepRecord[] = [];
  const r = walk(core.ram, core.contexts.get(contextId), iova, access, { trace, contexts: core.contexts });
  const top = levels - 1;
  const steps: WalkStep[] = trace.map((t, n) => ({ level: top - n, entryAddress: t.entryAddress, entry: t.entry }));
  if (!("hpa" in r)) return { fault: { reason: reasonName(r.status), level: r.level, stage: "stage" in r && r.stage === 2 ? 2 : 1 }, steps };
  return { hpa: r.hpa, pageSize: 1n << BigInt(r.sizeLog), perms: permsOf(r.perms), steps };
}

export class NaivePageTable {
  readonly format: ResolvedFormat;
  readonly root: bigint;
  readonly contextId: number;
  private readonly ownsRoot: boolean;
  private destroyed = false;

  constructor(private readonly core: NaiveCore, options: PageTableOptions, flags: DomainFlags = {}) {
    this.format = resolveFormat(options);
    const contextBits = contextFlags(this.format, flags);
    if (options.root !== undefined) {
      const root = toU64(options.root, "root");
      requireAligned(root, PAGE_SIZE, "root");
      if (root + PAGE_SIZE > core.ram.size) fail("EFAULT", `root ${hex(root)} is outside RAM`);
      this.root = root;
      // A root written into RAM by hand is adopted; one from allocFrames() stays the caller's.
      this.ownsRoot = core.builder.frames.claim(root);
    } else {
      this.root = core.memory.allocFrames(1);
      this.ownsRoot = true;
    }
    try {
      this.contextId = core.contexts.alloc();
    } catch (e) {
      if (this.ownsRoot) core.memory.freeFrames(this.root);
      throw e;
    }
    core.contexts.set(this.contextId, this.format, contextBits, this.root);
  }

  private live(): void {
    if (this.destroyed) fail("ENODEV", "page table was destroyed");
  }

  private checkInputRange(first: bigint, last: bigint, what: string): void {
    if (!this.format.inputRanges.some(([lo, hi]) => first >= lo && last <= hi)) {
      fail("EINVAL", `${what}: [${hex(first)}, ${hex(last)}] is outside the ${this.format.inputBits}-bit input address space`);
    }
  }

  map(iova: Address, hpa: Address, size: Address, prot: Prot = {}): void {
    this.live();
    const i = toU64(iova, "iova"), p = toU64(hpa, "hpa"), s = toU64(size, "size");
    const bits = protBits(prot);
    requireAligned(i, PAGE_SIZE, "iova");
    requireAligned(p, PAGE_SIZE, "hpa");
    requireAligned(s, PAGE_SIZE, "size");
    const last = lastOf(i, s, "map iova");
    const hpaLast = lastOf(p, s, "map hpa");
    this.checkInputRange(i, last, "map");
    if (hpaLast >> BigInt(this.format.physAddrWidth) !== 0n) fail("EINVAL", `map: hpa range ends at ${hex(hpaLast)}, beyond the ${this.format.physAddrWidth}-bit physical address width`);
    const st = this.core.builder.map(this.core.contexts.get(this.contextId), i, last, p, bits);
    if (st === abi.ST_OK) return;
    if (st === abi.ERR_EEXIST) fail("EEXIST", `map: [${hex(i)}, ${hex(last)}] overlaps an existing mapping`);
    if (st === abi.ERR_ENOMEM) fail("ENOMEM", `map: not enough free frames for the page tables of [${hex(i)}, ${hex(last)}]`);
    if (st === abi.ERR_EFAULT) fail("EFAULT", `map: a table on the path of [${hex(i)}, ${hex(last)}] lies outside RAM`);
    fail("EINVAL", `map: a table on the path of [${hex(i)}, ${hex(last)}] is reached twice (aliased, or in a cycle)`);
  }

  unmap(iova: Address, size: Address): bigint {
    this.live();
    const i = toU64(iova, "iova"), s = toU64(size, "size");
    requireAligned(i, PAGE_SIZE, "iova");
    requireAligned(s, PAGE_SIZE, "size");
    const last = lastOf(i, s, "unmap iova");
    this.checkInputRange(i, last, "unmap");
    return this.core.builder.unmap(this.core.contexts.get(this.contextId), i, last);
  }

  iovaToPhys(iova: Address): bigint | undefined {
    this.live();
    const r = walk(this.core.ram, this.core.contexts.get(this.contextId), toU64(iova, "iova"), 0);
    return "hpa" in r ? r.hpa : undefined;
  }

  walk(iova: Address, access: Access = "read"): WalkResult {
    this.live();
    return probeWalk(this.core, this.contextId, this.format.levels, toU64(iova, "iova"), accessBits(access));
  }

  /** Unmaps everything (freeing builder tables), releases the id, frees an owned root. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const [lo, hi] of this.format.inputRanges) this.core.builder.unmap(this.core.contexts.get(this.contextId), lo, hi);
    releaseContext(this.core, this.contextId);
    if (this.ownsRoot) this.core.builder.frames.release(this.root, 1);
  }
}
