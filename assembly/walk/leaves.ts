// Visiting the leaves of a range, written once for every format: pinning a
// process range for MAP_DMA, unpinning on UNMAP_DMA, releasing frames on
// munmap, and reading dirty bits. One recursive pass over the tables (not a
// walk per page); what happens at a leaf is one of a few operations.
//
// Each leaf is seen as the part of it inside the range: [cur, chunkLast] in
// the input space, starting at output address hpa.
import { inRam, loadPte, storePte } from "../mem/phys";
import { pinFrame, unpinFrame, disownFrame } from "../mem/pins";
import { ctxRoot, ctxLevels, ctxFlags } from "./context";
import { accessNeed, permsAllow } from "./perms";
import { buildMap } from "./builder";
import { ST_OK, ERR_EFAULT, KIND_INVALID, KIND_LEAF } from "../abi";

export const LEAF_CHECK: u32 = 0;   // every page present and allowing visitNeed, else EFAULT
export const LEAF_PIN: u32 = 1;     // pin each frame and gather physically contiguous runs (see onRun)
export const LEAF_UNPIN: u32 = 2;   // unpin each frame
export const LEAF_DISOWN: u32 = 3;  // the process lets go of each frame
export const LEAF_DIRTY: u32 = 4;   // set a bitmap bit per dirty leaf's pages, optionally clean it
export const LEAF_GATHER: u32 = 5;  // pin each frame and list its address (a vendor driver's pin)

let visitNeed: u32 = 0;
export let faultAt: u64 = 0;

// LEAF_PIN: the run being gathered; a run is mapped into the target context
// (sinkCtx, format G) when the next piece is not physically contiguous, and
// once at the end by the caller.
export let runIova: u64 = 0;
export let runHpa: u64 = 0;
export let runBytes: u64 = 0;
export let runsFlushed: u32 = 0;
let sinkCtx: usize = 0;
let sinkProt: u32 = 0;
// Target address = source address + sinkDelta (u64, wrapping): vaddr → iova.
let sinkDelta: u64 = 0;
// End (exclusive, source space) of what has been pinned, and of what is mapped.
export let pinnedEnd: u64 = 0;
export let mappedEnd: u64 = 0;

// LEAF_DIRTY parameters.
let dirtyBase: u64 = 0;
let dirtyShift: u32 = 12;
let dirtyBitmap: usize = 0;
let dirtyClear = false;
export let dirtyFound: u32 = 0;

// LEAF_GATHER: where the next frame's address goes.
let gatherAt: usize = 0;
export function beginGather(out: usize): void { gatherAt = out; }

export function setVisitNeed(access: u32, flags: u32): void { visitNeed = accessNeed(access, flags); }
export function setDirtyScan(base: u64, pgShift: u32, bitmap: usize, clear: bool): void {
  dirtyBase = base; dirtyShift = pgShift; dirtyBitmap = bitmap; dirtyClear = clear; dirtyFound = 0;
}
export function beginRuns(ctx: usize, prot: u32, delta: u64, start: u64): void {
  runBytes = 0; runsFlushed = 0; sinkCtx = ctx; sinkProt = prot; sinkDelta = delta; pinnedEnd = start; mappedEnd = start;
}

// Maps the gathered run into the target context (all or nothing per run).
export function flushRun<G>(): u32 {
  if (runBytes == 0) return ST_OK;
  runsFlushed++;
  const st = buildMap<G>(sinkCtx, runIova + sinkDelta, runIova + sinkDelta + (runBytes - 1), runHpa, sinkProt);
  if (st == ST_OK) mappedEnd = runIova + runBytes;
  return st;
}

@inline function forEachFrame(hpa: u64, bytes: u64, op: u32): void {
  for (let off: u64 = 0; off < bytes; off += 4096) {
    if (op == LEAF_PIN) pinFrame(hpa + off);
    else if (op == LEAF_UNPIN) unpinFrame(hpa + off);
    else disownFrame(hpa + off);
  }
}

@inline function markDirty(first: u64, last: u64): void {
  let bit = (first - dirtyBase) >> dirtyShift;
  const end = (last - dirtyBase) >> dirtyShift;
  while (true) {
    const p = dirtyBitmap + <usize>(bit >> 3);
    store<u8>(p, load<u8>(p) | <u8>(<u32>1 << <u32>(bit & 7)));
    dirtyFound++;
    if (bit == end) break;
    bit++;
  }
}

// Returns ST_OK, or ERR_EFAULT (faultAt set) for LEAF_CHECK on a hole or a
// page the access may not use, or the failure of mapping a LEAF_PIN run into
// a context of format G (which stops the visit).
export function visitLeaves<F, G>(table: u64, level: u32, iova: u64, last: u64, perms: u32, flags: u32, op: u32): u32 {
  const fmt = changetype<F>(0);
  const shift = fmt.levelShift(level);
  let cur = iova;
  while (true) {
    const end = cur | ((<u64>1 << shift) - 1);
    const chunkLast = end < last ? end : last;
    const pteAddr = table + (<u64>fmt.index(cur, level) << 3);
    const pte = inRam(table, 4096) ? loadPte(pteAddr) : 0;
    const kind = fmt.entryKind(pte, level);
    if (kind == KIND_INVALID || fmt.check(pte, level, 0) != 0) {
      if (op == LEAF_CHECK) { faultAt = cur; return ERR_EFAULT; }
    } else if (kind == KIND_LEAF) {
      const p = fmt.narrowLeaf(perms, pte, flags);
      const hpa = fmt.leafAddr(pte, level) | (cur & ((<u64>1 << shift) - 1));
      const bytes = chunkLast - cur + 1;
      if (op == LEAF_CHECK) {
        if (fmt.leafFault(pte, flags) != 0 || !permsAllow(p, visitNeed)) { faultAt = cur; return ERR_EFAULT; }
      } else if (op == LEAF_PIN) {
        forEachFrame(hpa, bytes, op);
        pinnedEnd = chunkLast + 1;
        if (runBytes != 0 && runHpa + runBytes == hpa) {
          runBytes += bytes;
        } else {
          const st = flushRun<G>();
          if (st != ST_OK) { runBytes = 0; return st; }
          runIova = cur; runHpa = hpa; runBytes = bytes;
        }
      } else if (op == LEAF_GATHER) {
        for (let off: u64 = 0; off < bytes; off += 4096) {
          pinFrame(hpa + off);
          store<u64>(gatherAt, hpa + off);
          gatherAt += 8;
        }
      } else if (op == LEAF_DIRTY) {
        if (fmt.isDirty(pte, flags)) {
          markDirty(cur, chunkLast);
          if (dirtyClear) storePte(pteAddr, fmt.cleaned(pte));
        }
      } else {
        forEachFrame(hpa, bytes, op);
      }
    } else {
      const st = visitLeaves<F, G>(fmt.tableAddr(pte), level - 1, cur, chunkLast, fmt.narrowTable(perms, pte, flags), flags, op);
      if (st != ST_OK) return st;
    }
    if (chunkLast == last) return ST_OK;
    cur = chunkLast + 1;
  }
}

export function visitRange<F, G>(ctx: usize, iova: u64, last: u64, op: u32): u32 {
  const fmt = changetype<F>(0);
  return visitLeaves<F, G>(fmt.rootAddr(ctxRoot(ctx)), ctxLevels(ctx) - 1, iova, last, fmt.fullPerms(), ctxFlags(ctx), op);
}

// LEAF_DIRTY over a context of format F (setDirtyScan first); the bits set.
export function visitDirty<F>(ctx: usize, iova: u64, last: u64): u32 {
  visitRange<F, F>(ctx, iova, last, LEAF_DIRTY);
  return dirtyFound;
}
