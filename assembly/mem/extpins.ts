// A vendor driver's pins of process memory (vfio_pin_pages, the GUP part):
// the pages behind a VFIO mapping's vaddr range are pinned one frame at a
// time and their addresses handed back. Which IOVA page holds which pin, and
// how many times, is the control plane's record (src/vfio/external.ts); here
// are only the walk and the frame pins, so a call of 512 pages is one pass.
import { visitRange, setVisitNeed, beginGather, LEAF_CHECK, LEAF_GATHER } from "../walk/leaves";
import { ctxFormat, ctxFlags } from "../walk/context";
import { X86Format } from "../fmt/x86_64";
import { unpinFrame } from "./pins";
import { ST_OK, ERR_EINVAL, ERR_EFAULT } from "../abi";
import { FORMAT_X86_64 } from "../fmt/index";

// Every page of [vaddr, vaddr + npage * 4 KiB) must be present and allow
// `access` (EFAULT otherwise, nothing pinned); then each frame is pinned and
// its address stored at out.
export function pinProcessPages(proc: usize, vaddr: u64, npage: u32, access: u32, out: usize): u32 {
  if (ctxFormat(proc) != FORMAT_X86_64 || npage == 0) return ERR_EINVAL;
  const last = vaddr + ((<u64>npage << 12) - 1);
  setVisitNeed(access, ctxFlags(proc));
  if (visitRange<X86Format, X86Format>(proc, vaddr, last, LEAF_CHECK) != ST_OK) return ERR_EFAULT;
  beginGather(out);
  visitRange<X86Format, X86Format>(proc, vaddr, last, LEAF_GATHER);
  return ST_OK;
}

// Drops one pin of each listed frame (freed when nothing else holds it).
export function unpinFrameList(list: usize, count: u32): void {
  for (let i: u32 = 0; i < count; i++) unpinFrame(load<u64>(list + (<usize>i << 3)));
}
