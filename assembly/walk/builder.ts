// The io-pgtable operations on a table in RAM, written once for every format:
// map (largest pages that fit), unmap (bytes unmapped), and iovaToPhys via
// the walker.
//
// map is all or nothing: a first pass over the range finds any present leaf
// (EEXIST), any table pointer outside RAM (EFAULT) and counts the tables it
// would have to allocate (ENOMEM if the frame allocator has fewer); only then
// does the second pass write, and it cannot fail.
//
// unmap never splits a leaf: a leaf only partly inside the range stays and
// is not counted. A table whose whole span lies inside the range is emptied,
// unlinked and (if it came from the frame allocator) freed.
import { inRam, loadPte, storePte } from "../mem/phys";
import { allocFrames, freeFrames, framesFree, frameIsAllocated } from "../mem/frames";
import { ctxRoot, ctxLevels, ctxFlags, ctxPgsizes } from "./context";
import { ST_OK, ERR_EEXIST, ERR_ENOMEM, ERR_EFAULT, KIND_INVALID, KIND_LEAF } from "../abi";

let tablesNeeded: u32 = 0;

@inline function slotLast(iova: u64, shift: u32): u64 { return iova | ((<u64>1 << shift) - 1); }

// Whether [iova, chunkLast] can be one leaf at this level.
@inline function fitsLeaf<F>(level: u32, iova: u64, chunkLast: u64, hpa: u64, pgsizes: u64): bool {
  const fmt = changetype<F>(0);
  const shift = fmt.levelShift(level);
  if (((fmt.leafLevels() >> level) & 1) == 0 || ((pgsizes >> shift) & 1) == 0) return false;
  const mask = (<u64>1 << shift) - 1;
  return (iova & mask) == 0 && chunkLast == (iova | mask) && (hpa & mask) == 0;
}

// virt: the table does not exist yet (everything below it is counted as new).
function mapCheck<F>(table: u64, virt: bool, level: u32, iova: u64, last: u64, hpa: u64, pgsizes: u64): u32 {
  const fmt = changetype<F>(0);
  const shift = fmt.levelShift(level);
  if (!virt && !inRam(table, 4096)) return ERR_EFAULT;
  let cur = iova, out = hpa;
  while (true) {
    const end = slotLast(cur, shift);
    const chunkLast = end < last ? end : last;
    const pte = virt ? 0 : loadPte(table + (<u64>fmt.index(cur, level) << 3));
    const kind = virt ? KIND_INVALID : fmt.entryKind(pte, level);
    if (kind != KIND_INVALID) {
      if (kind == KIND_LEAF) return ERR_EEXIST;
      const st = mapCheck<F>(fmt.tableAddr(pte), false, level - 1, cur, chunkLast, out, pgsizes);
      if (st != ST_OK) return st;
    } else if (!fitsLeaf<F>(level, cur, chunkLast, out, pgsizes)) {
      tablesNeeded++;
      mapCheck<F>(0, true, level - 1, cur, chunkLast, out, pgsizes);
    }
    if (chunkLast == last) return ST_OK;
    out += chunkLast - cur + 1;
    cur = chunkLast + 1;
  }
}

function mapApply<F>(table: u64, level: u32, iova: u64, last: u64, hpa: u64, prot: u32, flags: u32, pgsizes: u64): void {
  const fmt = changetype<F>(0);
  const shift = fmt.levelShift(level);
  let cur = iova, out = hpa;
  while (true) {
    const end = slotLast(cur, shift);
    const chunkLast = end < last ? end : last;
    const pteAddr = table + (<u64>fmt.index(cur, level) << 3);
    const pte = loadPte(pteAddr);
    if (fmt.entryKind(pte, level) != KIND_INVALID) {
      mapApply<F>(fmt.tableAddr(pte), level - 1, cur, chunkLast, out, prot, flags, pgsizes);
    } else if (fitsLeaf<F>(level, cur, chunkLast, out, pgsizes)) {
      storePte(pteAddr, fmt.makeLeaf(out, level, prot, flags));
    } else {
      const sub = allocFrames(1);
      storePte(pteAddr, fmt.makeTable(sub));
      mapApply<F>(sub, level - 1, cur, chunkLast, out, prot, flags, pgsizes);
    }
    if (chunkLast == last) return;
    out += chunkLast - cur + 1;
    cur = chunkLast + 1;
  }
}

export function buildMap<F>(ctx: usize, iova: u64, last: u64, hpa: u64, prot: u32): u32 {
  const levels = ctxLevels(ctx);
  const root = changetype<F>(0).rootAddr(ctxRoot(ctx));
  const pgsizes = ctxPgsizes(ctx);
  tablesNeeded = 0;
  const st = mapCheck<F>(root, false, levels - 1, iova, last, hpa, pgsizes);
  if (st != ST_OK) return st;
  if (tablesNeeded > framesFree()) return ERR_ENOMEM;
  mapApply<F>(root, levels - 1, iova, last, hpa, prot, ctxFlags(ctx), pgsizes);
  return ST_OK;
}

function unmapRange<F>(table: u64, level: u32, iova: u64, last: u64): u64 {
  const fmt = changetype<F>(0);
  const shift = fmt.levelShift(level);
  if (!inRam(table, 4096)) return 0;
  let bytes: u64 = 0;
  let cur = iova;
  while (true) {
    const end = slotLast(cur, shift);
    const chunkLast = end < last ? end : last;
    const whole = chunkLast == end && (cur & ((<u64>1 << shift) - 1)) == 0;
    const pteAddr = table + (<u64>fmt.index(cur, level) << 3);
    const pte = loadPte(pteAddr);
    const kind = fmt.entryKind(pte, level);
    if (kind != KIND_INVALID) {
      if (kind == KIND_LEAF) {
        if (whole) { storePte(pteAddr, 0); bytes += <u64>1 << shift; }
      } else {
        const sub = fmt.tableAddr(pte);
        bytes += unmapRange<F>(sub, level - 1, cur, chunkLast);
        if (whole) {
          storePte(pteAddr, 0);
          if (frameIsAllocated(sub)) freeFrames(sub, 1);
        }
      }
    }
    if (chunkLast == last) return bytes;
    cur = chunkLast + 1;
  }
}

export function buildUnmap<F>(ctx: usize, iova: u64, last: u64): u64 {
  const root = changetype<F>(0).rootAddr(ctxRoot(ctx));
  return unmapRange<F>(root, ctxLevels(ctx) - 1, iova, last);
}
