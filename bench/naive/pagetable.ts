// A page table of the twin, with the io-pgtable operations and probe walks.
// Like the facade's PageTable it is a context (root + format + switches), and
// the builder works on the context its id names.
import { contextFlags, resolveFormat, type ResolvedFormat } from "../../src/format.js";
import type { Access, Address, DomainFlags, PageTableOptions, Prot, WalkResult, WalkStep } from "../../src/index.js";
import { accessBits, fail, hostMapSpans, hostMapStatus, permsOf, protBits, reasonName, rootArg, toU64, unmapSpan } from "./args.js";
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

/** The facade's claimRoot: every frame of the root, or none. */
function claimRoot(core: NaiveCore, root: bigint, frames: number): boolean {
  for (let i = 0; i < frames; i++) {
    if (!core.builder.frames.claim(root + BigInt(i) * 4096n)) {
      if (i > 0) core.builder.frames.release(root, i);
      return false;
    }
  }
  return true;
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
    const frames = this.format.rootFrames;
    if (options.root !== undefined) {
      const root = rootArg(options.root, core.ram.size, frames);
      this.root = root;
      // A root written into RAM by hand is adopted (when the allocator holds none of its frames); one from allocFrames() stays the caller's.
      this.ownsRoot = claimRoot(core, root, frames);
    } else {
      this.root = core.memory.allocFrames(frames);
      this.ownsRoot = true;
    }
    try {
      this.contextId = core.contexts.alloc();
    } catch (e) {
      if (this.ownsRoot) core.memory.freeFrames(this.root, frames);
      throw e;
    }
    core.contexts.set(this.contextId, this.format, contextBits, this.root);
  }

  private live(): void {
    if (this.destroyed) fail("ENODEV", "page table was destroyed");
  }

  map(iova: Address, hpa: Address, size: Address, prot: Prot = {}): void {
    this.live();
    const bits = protBits(prot);
    const { input: { first: i, last }, output: { first: p } } = hostMapSpans(this.format, iova, hpa, size);
    hostMapStatus(this.core.builder.map(this.core.contexts.get(this.contextId), i, last, p, bits), i, last);
  }

  unmap(iova: Address, size: Address): bigint {
    this.live();
    const { first: i, last } = unmapSpan(this.format, iova, size, "iova");
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
    if (this.ownsRoot) this.core.builder.frames.release(this.root, this.format.rootFrames);
  }
}
