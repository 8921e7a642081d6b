// MAP_DMA and UNMAP_DMA into a domain of format G, over a process's x86-64
// tables: pin and map in physically contiguous runs, all or nothing; unpin
// then unmap. walk/dispatch.ts checks the process side and picks G.
import { visitRange, beginRuns, flushRun, pinnedEnd, mappedEnd, LEAF_PIN, LEAF_UNPIN } from "./leaves";
import { buildUnmap, beginUndo, endUndo, commitUndo, rollbackMap } from "./builder";
import { X86Format } from "../fmt/x86_64";
import { ST_OK } from "../abi";

export function pinMapInto<G>(proc: usize, dom: usize, vaddr: u64, last: u64, iova: u64, prot: u32): u32 {
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

export function unpinUnmapWith<G>(dom: usize, iova: u64, last: u64): u64 {
  visitRange<G, G>(dom, iova, last, LEAF_UNPIN);
  return buildUnmap<G>(dom, iova, last);
}
