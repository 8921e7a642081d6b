// The io-pgtable operations of the twin, written once for every format.
//
// Each call reaches a table at most once: a table met twice (aliased, or in
// a cycle) makes map refuse with EINVAL before anything changes, and unmap
// neither descends into nor frees it again; the root is never freed.
//
// map is all or nothing: a check pass finds any present leaf (EEXIST), table
// outside RAM (EFAULT) or aliasing (EINVAL) and counts the tables it would
// allocate plus the existing tables the frame allocator does not hold (ENOMEM
// beyond the free frames; counting of new tables stops there). Then those
// existing tables are adopted and an apply pass writes, using the largest
// page that fits and descending into (never replacing) existing tables.
// Tables are allocated in the engine's order, so HPAs match.
//
// unmap never splits a leaf: a leaf only partly inside the range stays and is
// not counted. A table whose whole span lies inside the range is unlinked and,
// on its first visit and if the frame allocator owns it, freed.
//
// Two modes serve process memory and pinned maps: mapFresh backs every 4 KiB
// leaf with a fresh frame the process owns (counted like a table by the check
// pass, allocated right after the tables above it); a map with an undo log
// records every table it creates, so rollback() can remove the leaves of a
// failed pinned map and then those tables, newest first.
import * as abi from "../../src/engine/abi.js";
import type { Context } from "./context.js";
import { KIND_LEAF, KIND_TABLE, type Format } from "./formats.js";
import type { FrameAllocator } from "./frames.js";
import type { FramePins } from "./pins.js";
import type { Ram } from "./ram.js";

/** Tables one pinned map may create (the engine's undo log size). */
export const UNDO_LOG_ENTRIES = abi.UNDO_LOG_ENTRIES;

/** The tables a pinned map created: where each was linked, and its frame. */
export type UndoLog = { pteAddr: bigint; table: bigint }[];

/**
 * The apply pass met something the check pass did not see. The check pass
 * refuses aliased and cyclic tables, so this is the twin's own assertion
 * failing: a bug, never an expected outcome.
 */
export class BuilderDivergence extends Error {
  constructor(message: string) {
    super(`naive builder: ${message}`);
    this.name = "BuilderDivergence";
  }
}

const slotLast = (iova: bigint, shift: number): bigint => iova | ((1n << BigInt(shift)) - 1n);

function fitsLeaf(fmt: Format, level: number, iova: bigint, chunkLast: bigint, hpa: bigint, pgsizes: bigint, fresh: boolean): boolean {
  const shift = fmt.levelShift(level);
  if (fresh && level !== 0) return false;
  if (((fmt.leafLevels() >> level) & 1) === 0 || ((pgsizes >> BigInt(shift)) & 1n) === 0n) return false;
  const mask = (1n << BigInt(shift)) - 1n;
  return (iova & mask) === 0n && chunkLast === (iova | mask) && (hpa & mask) === 0n;
}

interface MapCheck { visited: Set<bigint>; needed: number; adopted: number; overBudget: boolean; fresh: boolean }

export class Builder {
  constructor(private readonly ram: Ram, readonly frames: FrameAllocator, private readonly pins: FramePins) {}

  /** mmap: every page of [iova, last] gets a fresh zeroed 4 KiB frame the process owns. */
  mapFresh(ctx: Context, iova: bigint, last: bigint, prot: number): number {
    return this.map(ctx, iova, last, 0n, prot, { fresh: true });
  }

  /**
   * ST_OK or ERR_EEXIST / ERR_EFAULT / ERR_EINVAL / ERR_ENOMEM, with nothing written on an error.
   * With an undo log, every table created is appended to it (ENOMEM when it would overflow).
   */
  map(ctx: Context, iova: bigint, last: bigint, hpa: bigint, prot: number, mode: { fresh?: boolean; undo?: UndoLog } = {}): number {
    const fmt = ctx.fmt;
    if (!fmt) return abi.ERR_EINVAL;
    const root = fmt.rootAddr(ctx.root);
    if (!this.ram.inRam(root, 4096n)) return abi.ERR_EFAULT;
    // The root too must be held by the allocator, or a new table could be handed its frame.
    const adoptRoot = !this.frames.isAllocated(root);
    const fresh = mode.fresh === true;
    const state: MapCheck = { visited: new Set([root]), needed: 0, adopted: adoptRoot ? 1 : 0, overBudget: false, fresh };
    const st = this.check(fmt, root, false, ctx.levels - 1, iova, last, hpa, ctx.pgsizes, state);
    if (st !== abi.ST_OK) return st;
    if (state.overBudget) return abi.ERR_ENOMEM;
    if (mode.undo && mode.undo.length + state.needed > UNDO_LOG_ENTRIES) return abi.ERR_ENOMEM;
    if (adoptRoot) this.frames.claim(root);
    if (state.adopted > (adoptRoot ? 1 : 0)) this.adopt(fmt, root, ctx.levels - 1, iova, last);
    this.apply(fmt, root, ctx.levels - 1, iova, last, hpa, prot, ctx.flags, ctx.pgsizes, fresh, mode.undo);
    return abi.ST_OK;
  }

  /**
   * Undoes a pinned map that failed: removes the leaves of [iova, last]
   * (tables stay linked), then unlinks and frees the logged tables, newest
   * first, so RAM and the allocator are as before the map.
   */
  rollback(ctx: Context, iova: bigint, last: bigint, undo: UndoLog): void {
    this.unmap(ctx, iova, last, true);
    for (let k = undo.length - 1; k >= 0; k--) {
      this.ram.storePte(undo[k].pteAddr, 0n);
      this.frames.release(undo[k].table, 1);
    }
    undo.length = 0;
  }

  // virt: the table does not exist yet, everything below it is new.
  private check(fmt: Format, table: bigint, virt: boolean, level: number, iova: bigint, last: bigint, hpa: bigint,
    pgsizes: bigint, state: MapCheck): number {
    const shift = fmt.levelShift(level);
    let cur = iova, out = hpa;
    for (;;) {
      const end = slotLast(cur, shift);
      const chunkLast = end < last ? end : last;
      const pte = virt ? 0n : this.ram.loadPte(table + (fmt.index(cur, level) << 3n));
      const kind = virt ? -1 : fmt.entryKind(pte, level);
      if (kind === KIND_LEAF) return abi.ERR_EEXIST;
      if (kind === KIND_TABLE) {
        const sub = fmt.tableAddr(pte);
        if (!this.ram.inRam(sub, 4096n)) return abi.ERR_EFAULT;
        if (state.visited.has(sub)) return abi.ERR_EINVAL;
        state.visited.add(sub);
        if (!this.frames.isAllocated(sub)) state.adopted++;
        const st = this.check(fmt, sub, false, level - 1, cur, chunkLast, out, pgsizes, state);
        if (st !== abi.ST_OK) return st;
      } else if (!state.overBudget) {
        if (!fitsLeaf(fmt, level, cur, chunkLast, out, pgsizes, state.fresh)) {
          state.needed++;
          if (state.needed + state.adopted > this.frames.free) state.overBudget = true;
          else this.check(fmt, 0n, true, level - 1, cur, chunkLast, out, pgsizes, state);
        } else if (state.fresh) {
          // The page's own frame.
          state.needed++;
          if (state.needed + state.adopted > this.frames.free) state.overBudget = true;
        }
      }
      if (state.overBudget && virt) return abi.ST_OK;
      if (chunkLast === last) return abi.ST_OK;
      out += chunkLast - cur + 1n;
      cur = chunkLast + 1n;
    }
  }

  /** Hands the range's existing tables that the allocator does not hold to it. */
  private adopt(fmt: Format, table: bigint, level: number, iova: bigint, last: bigint): void {
    const shift = fmt.levelShift(level);
    let cur = iova;
    for (;;) {
      const end = slotLast(cur, shift);
      const chunkLast = end < last ? end : last;
      const pte = this.ram.loadPte(table + (fmt.index(cur, level) << 3n));
      if (fmt.entryKind(pte, level) === KIND_TABLE) {
        const sub = fmt.tableAddr(pte);
        if (!this.frames.isAllocated(sub)) this.frames.claim(sub);
        this.adopt(fmt, sub, level - 1, cur, chunkLast);
      }
      if (chunkLast === last) return;
      cur = chunkLast + 1n;
    }
  }

  private apply(fmt: Format, table: bigint, level: number, iova: bigint, last: bigint, hpa: bigint, prot: number, flags: number, pgsizes: bigint,
    fresh: boolean, undo: UndoLog | undefined): void {
    if (level < 0) throw new BuilderDivergence("a present entry below the leaf level");
    if (!this.ram.inRam(table, 4096n)) throw new BuilderDivergence(`table 0x${table.toString(16)} outside RAM`);
    const shift = fmt.levelShift(level);
    let cur = iova, out = hpa;
    for (;;) {
      const end = slotLast(cur, shift);
      const chunkLast = end < last ? end : last;
      const pteAddr = table + (fmt.index(cur, level) << 3n);
      const pte = this.ram.loadPte(pteAddr);
      if (fmt.entryKind(pte, level) === KIND_TABLE) {
        this.apply(fmt, fmt.tableAddr(pte), level - 1, cur, chunkLast, out, prot, flags, pgsizes, fresh, undo);
      } else if (fmt.entryKind(pte, level) === KIND_LEAF) {
        throw new BuilderDivergence("a leaf the check pass did not see");
      } else if (fitsLeaf(fmt, level, cur, chunkLast, out, pgsizes, fresh)) {
        let page = out;
        if (fresh) {
          const frame = this.frames.alloc(1);
          if (frame === undefined) throw new BuilderDivergence("out of frames for a fresh page after the check pass counted enough");
          this.pins.markOwned(frame);
          page = frame;
        }
        this.ram.storePte(pteAddr, fmt.makeLeaf(page, level, prot, flags));
      } else {
        const sub = this.frames.alloc(1);
        if (sub === undefined) throw new BuilderDivergence("out of frames after the check pass counted enough");
        this.ram.storePte(pteAddr, fmt.makeTable(sub));
        undo?.push({ pteAddr, table: sub });
        this.apply(fmt, sub, level - 1, cur, chunkLast, out, prot, flags, pgsizes, fresh, undo);
      }
      if (chunkLast === last) return;
      out += chunkLast - cur + 1n;
      cur = chunkLast + 1n;
    }
  }

  /** Bytes of leaves wholly inside [iova, last] that were removed; keepTables leaves every table linked. */
  unmap(ctx: Context, iova: bigint, last: bigint, keepTables = false): bigint {
    const fmt = ctx.fmt;
    if (!fmt) return 0n;
    const root = fmt.rootAddr(ctx.root);
    if (!this.ram.inRam(root, 4096n)) return 0n;
    return this.unmapRange(fmt, root, ctx.levels - 1, iova, last, new Set([root]), keepTables);
  }

  private unmapRange(fmt: Format, table: bigint, level: number, iova: bigint, last: bigint, visited: Set<bigint>, keepTables: boolean): bigint {
    const shift = fmt.levelShift(level);
    let bytes = 0n;
    let cur = iova;
    for (;;) {
      const end = slotLast(cur, shift);
      const chunkLast = end < last ? end : last;
      const whole = chunkLast === end && (cur & ((1n << BigInt(shift)) - 1n)) === 0n;
      const pteAddr = table + (fmt.index(cur, level) << 3n);
      const pte = this.ram.loadPte(pteAddr);
      const kind = fmt.entryKind(pte, level);
      if (kind === KIND_LEAF) {
        if (whole) { this.ram.storePte(pteAddr, 0n); bytes += 1n << BigInt(shift); }
      } else if (kind === KIND_TABLE) {
        const sub = fmt.tableAddr(pte);
        const first = this.ram.inRam(sub, 4096n) && !visited.has(sub);
        if (first) {
          visited.add(sub);
          bytes += this.unmapRange(fmt, sub, level - 1, cur, chunkLast, visited, keepTables);
        }
        if (whole && !keepTables) {
          this.ram.storePte(pteAddr, 0n);
          if (first && this.frames.isAllocated(sub)) this.frames.release(sub, 1);
        }
      }
      if (chunkLast === last) return bytes;
      cur = chunkLast + 1n;
    }
  }
}
