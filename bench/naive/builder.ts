// The io-pgtable operations of the twin, written once for every format.
//
// map is all or nothing: a check pass over the range finds any present leaf
// (EEXIST), any table outside RAM (EFAULT) and counts the tables it would
// allocate (ENOMEM beyond the free frames); then an apply pass writes, using
// the largest page that fits and descending into (never replacing) existing
// tables. Tables are allocated in the engine's order, so HPAs match.
//
// unmap never splits a leaf: a leaf only partly inside the range stays and is
// not counted. A table whose whole span lies inside the range is unlinked and,
// if the frame allocator owns it, freed.
import * as abi from "../../src/engine/abi.js";
import type { Context } from "./context.js";
import { KIND_INVALID, KIND_LEAF, type Format } from "./formats.js";
import type { FrameAllocator } from "./frames.js";
import type { Ram } from "./ram.js";

/**
 * The apply pass met something the check pass did not see (tables aliased or
 * in a cycle, rewritten by the pass itself). The engine has no defined
 * behaviour there (it recurses below the leaf level), so the twin stops.
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

export class Builder {
  constructor(private readonly ram: Ram, private readonly frames: FrameAllocator) {}

  /** ST_OK or ERR_EEXIST / ERR_EFAULT / ERR_ENOMEM, with nothing written on an error. */
  map(ctx: Context, iova: bigint, last: bigint, hpa: bigint, prot: number): number {
    const fmt = ctx.fmt;
    if (!fmt) return abi.ERR_EINVAL;
    const root = fmt.rootAddr(ctx.root);
    const counter = { tables: 0 };
    const st = this.check(fmt, root, false, ctx.levels - 1, iova, last, hpa, ctx.pgsizes, counter);
    if (st !== abi.ST_OK) return st;
    if (counter.tables > this.frames.free) return abi.ERR_ENOMEM;
    this.apply(fmt, root, ctx.levels - 1, iova, last, hpa, prot, ctx.flags, ctx.pgsizes);
    return abi.ST_OK;
  }

  // virt: the table does not exist yet, everything below it is new.
  private check(fmt: Format, table: bigint, virt: boolean, level: number, iova: bigint, last: bigint, hpa: bigint,
    pgsizes: bigint, counter: { tables: number }): number {
    const shift = fmt.levelShift(level);
    if (!virt && !this.ram.inRam(table, 4096n)) return abi.ERR_EFAULT;
    let cur = iova, out = hpa;
    for (;;) {
      const end = slotLast(cur, shift);
      const chunkLast = end < last ? end : last;
      const pte = virt ? 0n : this.ram.loadPte(table + (fmt.index(cur, level) << 3n));
      const kind = virt ? KIND_INVALID : fmt.entryKind(pte, level);
      if (kind !== KIND_INVALID) {
        if (kind === KIND_LEAF) return abi.ERR_EEXIST;
        const st = this.check(fmt, fmt.tableAddr(pte), false, level - 1, cur, chunkLast, out, pgsizes, counter);
        if (st !== abi.ST_OK) return st;
      } else if (!fitsLeaf(fmt, level, cur, chunkLast, out, pgsizes)) {
        counter.tables++;
        this.check(fmt, 0n, true, level - 1, cur, chunkLast, out, pgsizes, counter);
      }
      if (chunkLast === last) return abi.ST_OK;
      out += chunkLast - cur + 1n;
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
      if (fmt.entryKind(pte, level) !== KIND_INVALID) {
        this.apply(fmt, fmt.tableAddr(pte), level - 1, cur, chunkLast, out, prot, flags, pgsizes);
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
    return this.unmapRange(fmt, fmt.rootAddr(ctx.root), ctx.levels - 1, iova, last);
  }

  private unmapRange(fmt: Format, table: bigint, level: number, iova: bigint, last: bigint): bigint {
    const shift = fmt.levelShift(level);
    if (!this.ram.inRam(table, 4096n)) return 0n;
    let bytes = 0n;
    let cur = iova;
    for (;;) {
      const end = slotLast(cur, shift);
      const chunkLast = end < last ? end : last;
      const whole = chunkLast === end && (cur & ((1n << BigInt(shift)) - 1n)) === 0n;
      const pteAddr = table + (fmt.index(cur, level) << 3n);
      const pte = this.ram.loadPte(pteAddr);
      const kind = fmt.entryKind(pte, level);
      if (kind !== KIND_INVALID) {
        if (kind === KIND_LEAF) {
          if (whole) { this.ram.storePte(pteAddr, 0n); bytes += 1n << BigInt(shift); }
        } else {
          const sub = fmt.tableAddr(pte);
          bytes += this.unmapRange(fmt, sub, level - 1, cur, chunkLast);
          if (whole) {
            this.ram.storePte(pteAddr, 0n);
            if (this.frames.isAllocated(sub)) this.frames.release(sub, 1);
          }
        }
      }
      if (chunkLast === last) return bytes;
      cur = chunkLast + 1n;
    }
  }
}
