// The host's frame allocator: one bit per 4 KiB frame of RAM, first fit from
// the lowest frame that may be free. Page-table frames for host-owned tables
// and allocFrames() both come from here; a frame is zeroed when handed out.
import { frameBitmap, frameCount, ctrl } from "../layout";
import { FRAMES_FREE } from "../abi";
import { ramPtr } from "./phys";

let lowestMaybeFree: u32 = 0;

export function framesInit(): void {
  lowestMaybeFree = 0;
  store<u32>(ctrl + FRAMES_FREE, frameCount);
}

@inline export function framesFree(): u32 { return load<u32>(ctrl + FRAMES_FREE); }

@inline function isUsed(frame: u32): bool {
  return ((load<u8>(frameBitmap + (frame >> 3)) >> (frame & 7)) & 1) != 0;
}

@inline function setUsed(frame: u32, used: bool): void {
  const p = frameBitmap + (frame >> 3);
  const bit = <u8>(<u32>1 << (frame & 7));
  store<u8>(p, used ? load<u8>(p) | bit : load<u8>(p) & ~bit);
}

export function frameIsAllocated(hpa: u64): bool {
  const frame = hpa >> 12;
  return frame < <u64>frameCount && isUsed(<u32>frame);
}

// Lowest free frame at or after `from`, or frameCount. Skips full 64-frame words.
function nextFree(from: u32): u32 {
  let f = from;
  while (f < frameCount) {
    if ((f & 63) == 0 && f + 64 <= frameCount) {
      const word = load<u64>(frameBitmap + (f >> 3));
      if (word == 0xFFFFFFFFFFFFFFFF) { f += 64; continue; }
      return f + <u32>ctz(~word);
    }
    if (!isUsed(f)) return f;
    f++;
  }
  return frameCount;
}

// `count` contiguous zeroed frames; returns the HPA or u64.MAX_VALUE when no run fits.
export function allocFrames(count: u32): u64 {
  if (count == 0 || count > framesFree()) return u64.MAX_VALUE;
  let start = nextFree(lowestMaybeFree);
  lowestMaybeFree = start;
  while (start + count <= frameCount) {
    let run: u32 = 1;
    while (run < count && !isUsed(start + run)) run++;
    if (run == count) {
      for (let i: u32 = 0; i < count; i++) setUsed(start + i, true);
      store<u32>(ctrl + FRAMES_FREE, framesFree() - count);
      const hpa = <u64>start << 12;
      memory.fill(ramPtr(hpa), 0, <usize>count << 12);
      return hpa;
    }
    start = nextFree(start + run);
  }
  return u64.MAX_VALUE;
}

// Frees frames that are all allocated; returns false (and frees nothing) otherwise.
export function freeFrames(hpa: u64, count: u32): bool {
  if ((hpa & 0xfff) != 0 || count == 0) return false;
  const first = hpa >> 12;
  if (first >= <u64>frameCount || <u64>count > <u64>frameCount - first) return false;
  const f0 = <u32>first;
  for (let i: u32 = 0; i < count; i++) if (!isUsed(f0 + i)) return false;
  for (let i: u32 = 0; i < count; i++) setUsed(f0 + i, false);
  store<u32>(ctrl + FRAMES_FREE, framesFree() + count);
  if (f0 < lowestMaybeFree) lowestMaybeFree = f0;
  return true;
}

// Takes one frame the allocator does not hold yet (a table the builder found
// in RAM, or a root the user wrote there), without zeroing it.
export function claimFrame(hpa: u64): bool {
  const frame = hpa >> 12;
  if ((hpa & 0xfff) != 0 || frame >= <u64>frameCount || isUsed(<u32>frame)) return false;
  setUsed(<u32>frame, true);
  store<u32>(ctrl + FRAMES_FREE, framesFree() - 1);
  return true;
}
