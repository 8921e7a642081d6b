// Translation contexts: a page-table root with its format and configuration.
// Page tables and domains share one id space: ids from 1, freed ids reused
// last in, first out, at most MAX_CONTEXTS - 1 live at once. Ids are part of
// fault records and of IOTLB tags, so they are handed out as the facade does.
import * as abi from "../../src/engine/abi.js";
import type { ResolvedFormat } from "../../src/format.js";
import { fail } from "./args.js";
import { formatById, type Format } from "./formats.js";

export interface Context {
  /** undefined once released: a walk then faults with no-context. */
  fmt: Format | undefined;
  levels: number;
  inputBits: number;
  /** CTX_* switches, CTX_LIVE included. */
  flags: number;
  root: bigint;
  /** Page sizes the builder may use, as a mask of sizes (4 KiB always). */
  pgsizes: bigint;
  /** Bits that fault as reserved / address-size in every entry. */
  rsvdMask: bigint;
  /** Page sizes (as 1 << sizeLog) this context has in the IOTLB. */
  tlbSizes: bigint;
  /** An IOVA window (inclusive) where device writes are interrupt requests; start > end: none. */
  msiStart: bigint;
  msiEnd: bigint;
  /** Nested translation: the stage-2 context this stage-1 context runs over (0: none). */
  s2: number;
}


// Address bits from the physical-address width up to bit 51, and XD without NX.
function rsvdMaskFor(paWidth: number, flags: number): bigint {
  let mask = paWidth >= 52 ? 0n : ((1n << 52n) - 1n) & ~((1n << BigInt(paWidth)) - 1n);
  if ((flags & abi.CTX_NX) === 0) mask |= 1n << 63n;
  return mask;
}

// A released (or never set) context translates nothing and has no MSI window.
const released = (): Context => ({ fmt: undefined, levels: 0, inputBits: 0, flags: 0, root: 0n, pgsizes: 0n, rsvdMask: 0n, tlbSizes: 0n, msiStart: 1n, msiEnd: 0n, s2: 0 });

export class Contexts {
  private readonly records = new Map<number, Context>();
  private readonly freeIds: number[] = [];
  private nextId = 1;

  alloc(): number {
    const id = this.freeIds.pop() ?? this.nextId;
    if (id === this.nextId) {
      if (id >= abi.MAX_CONTEXTS) fail("ENOSPC", `all ${abi.MAX_CONTEXTS - 1} page-table contexts are in use`);
      this.nextId++;
    }
    return id;
  }

  /** flags: the facade's contextFlags for the domain's switches. */
  set(id: number, format: ResolvedFormat, ctxFlags: number, root: bigint): void {
    this.records.set(id, {
      fmt: formatById(format.id),
      levels: format.levels,
      inputBits: format.inputBits,
      flags: ctxFlags | abi.CTX_LIVE,
      root,
      pgsizes: format.pageSizeMask | (1n << 12n),
      rsvdMask: rsvdMaskFor(format.physAddrWidth, ctxFlags),
      tlbSizes: 0n,
      msiStart: 1n,
      msiEnd: 0n,
      s2: 0,
    });
  }

  /** Makes id a stage-1 context over stage-2 context s2, its tables at GPAs, or with physTables at HPAs. */
  setNested(id: number, s2: number, physTables = false): void {
    const ctx = this.get(id);
    ctx.s2 = s2;
    ctx.flags = s2 !== 0 && physTables ? ctx.flags | abi.CTX_S1_PHYS_TABLES : ctx.flags & ~abi.CTX_S1_PHYS_TABLES;
  }

  /** New request switches; the reserved-bit mask and the stage-2 link's mode stay what they were, as in the engine. */
  setFlags(id: number, flags: number): void {
    const ctx = this.get(id);
    ctx.flags = flags | abi.CTX_LIVE | (ctx.flags & abi.CTX_S1_PHYS_TABLES);
  }

  setMsiWindow(id: number, start: bigint, end: bigint): void {
    const ctx = this.get(id);
    ctx.msiStart = start;
    ctx.msiEnd = end;
  }

  get(id: number): Context {
    let ctx = this.records.get(id);
    if (!ctx) { ctx = released(); this.records.set(id, ctx); }
    return ctx;
  }

  ids(): IterableIterator<number> { return this.records.keys(); }

  /** The caller has flushed the context's IOTLB entries. */
  release(id: number): void {
    this.records.set(id, released());
    this.freeIds.push(id);
  }
}
