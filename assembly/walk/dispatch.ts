// The operations on a context, whatever its format: each picks the generic
// code's specialisation for the context's format once per call, never per
// entry, through the switches generated from the format registry
// (walk/byformat.ts, from fmt/index.ts). Processes always use x86-64 tables
// (they model a Linux process on x86).
import { ctxPtr, ctxFormat, ctxFlags, ctxS2Id } from "./context";
import { walkSingle, walkNested, walkPhysS1, mapIn, mapListIn, unmapIn, guestMapIn, guestUnmapIn, pinMapIn, unpinUnmapIn, dirtyScanIn } from "./byformat";
import { buildUnmap, buildMapFresh, beginGuestCall } from "./builder";
import { visitRange, setVisitNeed, setDirtyScan, LEAF_CHECK, LEAF_DISOWN } from "./leaves";
import { X86Format } from "../fmt/x86_64";
import { FORMAT_X86_64 } from "../fmt/index";
import { ST_OK, ERR_EINVAL, ERR_EFAULT, CTX_S1_PHYS_TABLES } from "../abi";

// A two-stage context: stage 1 (x86-64 / VT-d first level, or Arm stage 1,
// tables at GPAs; or ggtt, tables at HPAs) over stage 2 (VT-d second level,
// or Arm stage 2).
export function walkContext(ctx: usize, iova: u64, access: u32, mode: u32): u32 {
  const s2 = ctxS2Id(ctx);
  if (s2 != 0) {
    if ((ctxFlags(ctx) & CTX_S1_PHYS_TABLES) != 0) return walkPhysS1(ctx, ctxPtr(s2), iova, access, mode);
    return walkNested(ctx, ctxPtr(s2), iova, access, mode);
  }
  return walkSingle(ctx, iova, access, mode);
}

export function mapRange(ctx: usize, iova: u64, last: u64, hpa: u64, prot: u32): u32 { return mapIn(ctx, iova, last, hpa, prot); }

// Every (iova, last, hpa) entry of the list at `list`, all or nothing (walk/maplist.ts).
export function mapList(ctx: usize, list: usize, count: u32, prot: u32): u32 { return mapListIn(ctx, list, count, prot); }

export function unmapRange(ctx: usize, iova: u64, last: u64): u64 { return unmapIn(ctx, iova, last); }

// ---- guest tables: stage 1 (x86-64 or Arm stage 1) in guest memory, over stage 2

export function guestMap(ctx: usize, iova: u64, last: u64, gpa: u64, prot: u32, pool: usize, count: u32, released: usize, cap: u32): u32 {
  beginGuestCall();
  const s2 = ctxS2Id(ctx);
  if (s2 == 0) return ERR_EINVAL;
  return guestMapIn(ctx, ctxPtr(s2), iova, last, gpa, prot, pool, count, released, cap);
}

export function guestUnmap(ctx: usize, iova: u64, last: u64, released: usize, cap: u32): u64 {
  beginGuestCall();
  const s2 = ctxS2Id(ctx);
  if (s2 == 0) return 0;
  return guestUnmapIn(ctx, ctxPtr(s2), iova, last, released, cap);
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

// Pins the process pages of [vaddr, vaddr + size) and maps them at iova in the
// domain, all or nothing: every page is checked first (EFAULT, nothing
// touched), then pinned and mapped in physically contiguous runs with the
// largest pages that fit (walk/pinned.ts); a failure (ENOMEM, EEXIST) undoes everything.
export function pinMap(proc: usize, dom: usize, vaddr: u64, last: u64, iova: u64, access: u32, prot: u32): u32 {
  if (ctxFormat(proc) != FORMAT_X86_64) return ERR_EINVAL;
  setVisitNeed(access, ctxFlags(proc));
  if (visitRange<X86Format, X86Format>(proc, vaddr, last, LEAF_CHECK) != ST_OK) return ERR_EFAULT;
  return pinMapIn(proc, dom, vaddr, last, iova, prot);
}

// Unpins every frame mapped in [iova, last], then unmaps; returns the bytes unmapped.
export function unpinUnmap(dom: usize, iova: u64, last: u64): u64 { return unpinUnmapIn(dom, iova, last); }

// ---- dirty tracking

// Sets bit i of the bitmap for every dirty page i (of 1 << pgShift bytes,
// counted from iova) in [iova, last]; with clear, cleans the dirty bits it
// read. Returns the number of bits set.
export function dirtyScan(dom: usize, iova: u64, last: u64, pgShift: u32, bitmap: usize, clear: bool): u32 {
  setDirtyScan(iova, pgShift, bitmap, clear);
  return dirtyScanIn(dom, iova, last);
}
