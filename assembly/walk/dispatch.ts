// The one place that turns a context's format id into the specialised
// generic code: every operation switches here once per call, never per entry.
// Processes always use x86-64 tables (they model a Linux process on x86).
import { ctxPtr, ctxFormat, ctxFlags, ctxS2Id } from "./context";
import { walk, walkIn, noWalk, walkStage } from "./walker";
import { buildMap, buildUnmap, buildMapFresh, beginUndo, endUndo, commitUndo, rollbackMap, removeLeaves, undoTables, buildGuestMap, buildGuestUnmap, beginGuestCall } from "./builder";
import { visitRange, setVisitNeed, setDirtyScan, beginRuns, flushRun, pinnedEnd, mappedEnd, dirtyFound,
  LEAF_CHECK, LEAF_PIN, LEAF_UNPIN, LEAF_DISOWN, LEAF_DIRTY } from "./leaves";
import { X86Format } from "../fmt/x86_64";
import { Arm64S1Format, Arm64S2Format } from "../fmt/arm64";
import { VtdSlFormat } from "../fmt/vtd_sl";
import { ST_OK, ERR_EINVAL, ERR_EFAULT, FAULT_NO_CONTEXT, FORMAT_X86_64, FORMAT_ARM64_S1, FORMAT_VTD_SL, FORMAT_ARM64_S2, MAP_LIST_ENTRY_SIZE } from "../abi";

function walkOver<F>(ctx: usize, s2: usize, iova: u64, access: u32, mode: u32): u32 {
  switch (ctxFormat(s2)) {
    case FORMAT_VTD_SL: return walkIn<F, VtdSlFormat>(ctx, iova, access, mode, s2);
    case FORMAT_ARM64_S2: return walkIn<F, Arm64S2Format>(ctx, iova, access, mode, s2);
    default: walkStage = 2; return noWalk(FAULT_NO_CONTEXT);
  }
}

// Stage 1 (x86-64 / VT-d first level, or Arm stage 1) over stage 2 (VT-d second level, or Arm stage 2).
function walkNested(ctx: usize, s2: usize, iova: u64, access: u32, mode: u32): u32 {
  switch (ctxFormat(ctx)) {
    case FORMAT_X86_64: return walkOver<X86Format>(ctx, s2, iova, access, mode);
    case FORMAT_ARM64_S1: return walkOver<Arm64S1Format>(ctx, s2, iova, access, mode);
    default: return noWalk(FAULT_NO_CONTEXT);
  }
}

export function walkContext(ctx: usize, iova: u64, access: u32, mode: u32): u32 {
  const s2 = ctxS2Id(ctx);
  if (s2 != 0) return walkNested(ctx, ctxPtr(s2), iova, access, mode);
  switch (ctxFormat(ctx)) {
    case FORMAT_X86_64: return walk<X86Format>(ctx, iova, access, mode);
    case FORMAT_ARM64_S1: return walk<Arm64S1Format>(ctx, iova, access, mode);
    case FORMAT_VTD_SL: return walk<VtdSlFormat>(ctx, iova, access, mode);
    case FORMAT_ARM64_S2: return walk<Arm64S2Format>(ctx, iova, access, mode);
    default: return noWalk(FAULT_NO_CONTEXT);
  }
}

export function mapRange(ctx: usize, iova: u64, last: u64, hpa: u64, prot: u32): u32 {
  switch (ctxFormat(ctx)) {
    case FORMAT_X86_64: return buildMap<X86Format>(ctx, iova, last, hpa, prot);
    case FORMAT_ARM64_S1: return buildMap<Arm64S1Format>(ctx, iova, last, hpa, prot);
    case FORMAT_VTD_SL: return buildMap<VtdSlFormat>(ctx, iova, last, hpa, prot);
    case FORMAT_ARM64_S2: return buildMap<Arm64S2Format>(ctx, iova, last, hpa, prot);
    default: return ERR_EINVAL;
  }
}

// Maps every (iova, last, hpa) entry of the list at `list`, all or nothing:
// when an entry fails, the leaves of the ones before it go and the undo log
// takes back the tables they created or replaced, as a pinned map's failure does.
function mapListIn<F>(ctx: usize, list: usize, count: u32, prot: u32): u32 {
  beginUndo();
  for (let k: u32 = 0; k < count; k++) {
    const e = list + <usize>k * MAP_LIST_ENTRY_SIZE;
    const st = buildMap<F>(ctx, load<u64>(e), load<u64>(e, 8), load<u64>(e, 16), prot);
    if (st == ST_OK) continue;
    for (let j: u32 = 0; j < k; j++) {
      const d = list + <usize>j * MAP_LIST_ENTRY_SIZE;
      removeLeaves<F>(ctx, load<u64>(d), load<u64>(d, 8));
    }
    undoTables();
    return st;
  }
  commitUndo<F>();
  return ST_OK;
}

export function mapList(ctx: usize, list: usize, count: u32, prot: u32): u32 {
  switch (ctxFormat(ctx)) {
    case FORMAT_X86_64: return mapListIn<X86Format>(ctx, list, count, prot);
    case FORMAT_ARM64_S1: return mapListIn<Arm64S1Format>(ctx, list, count, prot);
    case FORMAT_VTD_SL: return mapListIn<VtdSlFormat>(ctx, list, count, prot);
    case FORMAT_ARM64_S2: return mapListIn<Arm64S2Format>(ctx, list, count, prot);
    default: return ERR_EINVAL;
  }
}

export function unmapRange(ctx: usize, iova: u64, last: u64): u64 {
  switch (ctxFormat(ctx)) {
    case FORMAT_X86_64: return buildUnmap<X86Format>(ctx, iova, last);
    case FORMAT_ARM64_S1: return buildUnmap<Arm64S1Format>(ctx, iova, last);
    case FORMAT_VTD_SL: return buildUnmap<VtdSlFormat>(ctx, iova, last);
    case FORMAT_ARM64_S2: return buildUnmap<Arm64S2Format>(ctx, iova, last);
    default: return 0;
  }
}

// ---- guest tables: stage 1 (x86-64 or Arm stage 1) in guest memory, over stage 2

function guestMapOver<F>(ctx: usize, s2: usize, iova: u64, last: u64, gpa: u64, prot: u32, pool: usize, count: u32, released: usize, cap: u32): u32 {
  switch (ctxFormat(s2)) {
    case FORMAT_VTD_SL: return buildGuestMap<F, VtdSlFormat>(ctx, s2, iova, last, gpa, prot, pool, count, released, cap);
    case FORMAT_ARM64_S2: return buildGuestMap<F, Arm64S2Format>(ctx, s2, iova, last, gpa, prot, pool, count, released, cap);
    default: return ERR_EINVAL;
  }
}

export function guestMap(ctx: usize, iova: u64, last: u64, gpa: u64, prot: u32, pool: usize, count: u32, released: usize, cap: u32): u32 {
  beginGuestCall();
  const s2 = ctxS2Id(ctx);
  if (s2 == 0) return ERR_EINVAL;
  switch (ctxFormat(ctx)) {
    case FORMAT_X86_64: return guestMapOver<X86Format>(ctx, ctxPtr(s2), iova, last, gpa, prot, pool, count, released, cap);
    case FORMAT_ARM64_S1: return guestMapOver<Arm64S1Format>(ctx, ctxPtr(s2), iova, last, gpa, prot, pool, count, released, cap);
    default: return ERR_EINVAL;
  }
}

function guestUnmapOver<F>(ctx: usize, s2: usize, iova: u64, last: u64, released: usize, cap: u32): u64 {
  switch (ctxFormat(s2)) {
    case FORMAT_VTD_SL: return buildGuestUnmap<F, VtdSlFormat>(ctx, s2, iova, last, released, cap);
    case FORMAT_ARM64_S2: return buildGuestUnmap<F, Arm64S2Format>(ctx, s2, iova, last, released, cap);
    default: return 0;
  }
}

export function guestUnmap(ctx: usize, iova: u64, last: u64, released: usize, cap: u32): u64 {
  beginGuestCall();
  const s2 = ctxS2Id(ctx);
  if (s2 == 0) return 0;
  switch (ctxFormat(ctx)) {
    case FORMAT_X86_64: return guestUnmapOver<X86Format>(ctx, ctxPtr(s2), iova, last, released, cap);
    case FORMAT_ARM64_S1: return guestUnmapOver<Arm64S1Format>(ctx, ctxPtr(s2), iova, last, released, cap);
    default: return 0;
  }
}

// ---- process memory (x86-64 tables)

// mmap: every page of [vaddr, last] gets a fresh zeroed frame the process owns.
export function processMap(proc: usize, vaddr: u64, last: u64, prot: u32): u32 {
  return ctxFormat(proc) == FORMAT_X86_64 ? buildMapFresh<X86Format>(proc, vaddr, last, prot) : ERR_EINVAL;
}

// munmap: the process lets go of the frames (freed unless pinned), then the leaves go.
export function processUnmap(proc: usize, vaddr: u64, last: u64): u64 {
  if (ctxFormat(proc) != FORMAT_X86_64) return 0;
  visitRange<X86Format, X86Format>(proc, vaddr, last, LEAF_DISOWN);
  return buildUnmap<X86Format>(proc, vaddr, last);
}

// ---- MAP_DMA / UNMAP_DMA

function pinMapInto<G>(proc: usize, dom: usize, vaddr: u64, last: u64, iova: u64, prot: u32): u32 {
  beginUndo();
  beginRuns(dom, prot, iova - vaddr, vaddr);
  let st = visitRange<X86Format, G>(proc, vaddr, last, LEAF_PIN);
  if (st == ST_OK) st = flushRun<G>();
  if (st == ST_OK) { commitUndo<G>(); return ST_OK; }
  // Undo: the mapped runs and the tables they created, then every pin taken.
  // (A run that failed mapped nothing: buildMap is all or nothing.)
  if (mappedEnd != vaddr) rollbackMap<G>(dom, iova, iova + (mappedEnd - vaddr) - 1);
  else endUndo();
  if (pinnedEnd != vaddr) visitRange<X86Format, X86Format>(proc, vaddr, pinnedEnd - 1, LEAF_UNPIN);
  return st;
}

// Pins the process pages of [vaddr, vaddr + size) and maps them at iova in the
// domain, all or nothing: every page is checked first (EFAULT, nothing
// touched), then pinned and mapped in physically contiguous runs with the
// largest pages that fit; a failure (ENOMEM, EEXIST) undoes everything.
export function pinMap(proc: usize, dom: usize, vaddr: u64, last: u64, iova: u64, access: u32, prot: u32): u32 {
  if (ctxFormat(proc) != FORMAT_X86_64) return ERR_EINVAL;
  setVisitNeed(access, ctxFlags(proc));
  if (visitRange<X86Format, X86Format>(proc, vaddr, last, LEAF_CHECK) != ST_OK) return ERR_EFAULT;
  switch (ctxFormat(dom)) {
    case FORMAT_X86_64: return pinMapInto<X86Format>(proc, dom, vaddr, last, iova, prot);
    case FORMAT_ARM64_S1: return pinMapInto<Arm64S1Format>(proc, dom, vaddr, last, iova, prot);
    case FORMAT_VTD_SL: return pinMapInto<VtdSlFormat>(proc, dom, vaddr, last, iova, prot);
    case FORMAT_ARM64_S2: return pinMapInto<Arm64S2Format>(proc, dom, vaddr, last, iova, prot);
    default: return ERR_EINVAL;
  }
}

function unpinUnmapIn<G>(dom: usize, iova: u64, last: u64): u64 {
  visitRange<G, G>(dom, iova, last, LEAF_UNPIN);
  return buildUnmap<G>(dom, iova, last);
}

// Unpins every frame mapped in [iova, last], then unmaps; returns the bytes unmapped.
export function unpinUnmap(dom: usize, iova: u64, last: u64): u64 {
  switch (ctxFormat(dom)) {
    case FORMAT_X86_64: return unpinUnmapIn<X86Format>(dom, iova, last);
    case FORMAT_ARM64_S1: return unpinUnmapIn<Arm64S1Format>(dom, iova, last);
    case FORMAT_VTD_SL: return unpinUnmapIn<VtdSlFormat>(dom, iova, last);
    case FORMAT_ARM64_S2: return unpinUnmapIn<Arm64S2Format>(dom, iova, last);
    default: return 0;
  }
}

// ---- dirty tracking

// Sets bit i of the bitmap for every dirty page i (of 1 << pgShift bytes,
// counted from iova) in [iova, last]; with clear, cleans the dirty bits it
// read. Returns the number of bits set.
export function dirtyScan(dom: usize, iova: u64, last: u64, pgShift: u32, bitmap: usize, clear: bool): u32 {
  setDirtyScan(iova, pgShift, bitmap, clear);
  switch (ctxFormat(dom)) {
    case FORMAT_X86_64: visitRange<X86Format, X86Format>(dom, iova, last, LEAF_DIRTY); break;
    case FORMAT_ARM64_S1: visitRange<Arm64S1Format, Arm64S1Format>(dom, iova, last, LEAF_DIRTY); break;
    case FORMAT_VTD_SL: visitRange<VtdSlFormat, VtdSlFormat>(dom, iova, last, LEAF_DIRTY); break;
    case FORMAT_ARM64_S2: visitRange<Arm64S2Format, Arm64S2Format>(dom, iova, last, LEAF_DIRTY); break;
    default: return 0;
  }
  return dirtyFound;
}
