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
import * as abi from "../../src/engine/abi.js";
import type { Context } from "./context.js";
import { KIND_LEAF, KIND_TABLE, type Format } from "./formats.js";
import type { FrameAllocator } from "./frames.js";
import type { Ram } from "./ram.js";

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

function fitsLeaf(fmt: Format, level: number, iova: bigint, chunkLast: bigint, hpa: bigint, pgsizes: bigint): boolean {
  const shift = fmt.levelShift(level);
  if (((fmt.leafLevels() >> level) & 1) === 0 || ((pgsizes >> BigInt(shift)) & 1n) === 0n) return false;
  const mask = (1n << BigInt(shift)) - 1n;
  return (iova & mask) === 0n && chunkLast === (iova | mask) && (hpa & mask) === 0n;
}

interface MapCheck { visited: Set<bigint>; needed: number; adopted: number; overBudget: boolean }

export class Builder {
  constructor(private readonly ram: Ram, readonly frames: FrameAllocator) {}

  /** ST_OK or ERR_EEXIST / ERR_EFAULT / ERR_EINVAL / ERR_ENOMEM, with nothing written on an error. */
  map(ctx: Context, iova: bigint, last: bigint, hpa: bigint, prot: number): number {
    const fmt = ctx.fmt;
    if (!fmt) return abi.ERR_EINVAL;
    const root = fmt.rootAddr(ctx.root);
    if (!this.ram.inRam(root, 4096n)) return abi.ERR_EFAULT;
    // The root too must be held by the allocator, or a new table could be handed its frame.
    const adoptRoot = !this.frames.isAllocated(root);
    const state: MapCheck = { visited: new Set([root]), needed: 0, adopted: adoptRoot ? 1 : 0, overBudget: false };
    const st = this.check(fmt, root, false, ctx.levels - 1, iova, last, hpa, ctx.pgsizes, state);
    if (st !== abi.ST_OK) return st;
    if (state.overBudget) return abi.ERR_ENOMEM;
    if (adoptRoot) this.frames.claim(root);
    if (state.adopted > (adoptRoot ? 1 : 0)) this.adopt(fmt, root, ctx.levels - 1, iova, last);
    this.apply(fmt, root, ctx.levels - 1, iova, last, hpa, prot, ctx.flags, ctx.pgsizes);
    return abi.ST_OK;
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
      } else if (!state.overBudget && !fitsLeaf(fmt, level, cur, chunkLast, out, pgsizes)) {
        state.needed++;
        if (state.needed + state.adopted > this.frames.free) state.overBudget = true;
        else this.check(fmt, 0n, true, level - 1, cur, chunkLast, out, pgsizes, state);
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

  private apply(fmt: Format, table: bigint, level: number, iova: bigint, last: bigint, hpa: bigint, prot: number, flags: number, pgsizes: bigint): void {
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
        this.apply(fmt, fmt.tableAddr(pte), level - 1, cur, chunkLast, out, prot, flags, pgsizes);
      } else if (fmt.entryKind(pte, level) === KIND_LEAF) {
        throw new BuilderDivergence("a leaf the check pass did not see");
      } else if (fitsLeaf(fmt, level, cur, chunkLast, out, pgsizes)) {
        this.ram.storePte(pteAddr, fmt.makeLeaf(out, level, prot, flags));
      } else {
        const sub = this.frames.alloc(1);
        if (sub === undefined) throw new BuilderDivergence("out of frames after the check pass counted enough");
        this.ram.storePte(pteAddr, fmt.makeTable(sub));
        this.apply(fmt, sub, level - 1, cur, chunkLast, out, prot, flags, pgsizes);
      }
      if (chunkLast === last) return;
      out += chunkLast - cur + 1n;
      cur = chunkLast + 1n;
    }
  }

  /** Bytes of leaves wholly inside [iova, last] that were removed. */
  unmap(ctx: Context, iova: bigint, last: bigint): bigint {
    const fmt = ctx.fmt;
    if (!fmt) return 0n;
    const root = fmt.rootAddr(ctx.root);
    if (!this.ram.inRam(root, 4096n)) return 0n;
    return this.unmapRange(fmt, root, ctx.levels - 1, iova, last, new Set([root]));
  }

  private unmapRange(fmt: Format, table: bigint, level: number, iova: bigint, last: bigint, visited: Set<bigint>): bigint {
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
          bytes += this.unmapRange(fmt, sub, level - 1, cur, chunkLast, visited);
        }
        if (whole) {
          this.ram.storePte(pteAddr, 0n);
          if (first && this.frames.isAllocated(sub)) this.frames.release(sub, 1);
        }
      }
      if (chunkLast === last) return bytes;
      cur = chunkLast + 1n;
    }
  }
}
