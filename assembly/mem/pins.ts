// Pin counts and ownership of frames that back process memory. A frame a
// process mmap()ed is "owned"; MAP_DMA pins it. It returns to the frame
// allocator when neither holds it: munmap of a pinned page leaves the frame
// in place for the device until the last unpin, as the kernel's pinned
// pages outlive the user's mapping.
import { framePins, frameCount } from "../layout";
import { freeFrames } from "./frames";

const OWNED: u32 = 0x80000000;

@inline function slot(hpa: u64): usize { return framePins + (<usize>(hpa >> 12) << 2); }
@inline function tracked(hpa: u64): bool { return (hpa >> 12) < <u64>frameCount; }

export function markOwned(hpa: u64): void { if (tracked(hpa)) store<u32>(slot(hpa), load<u32>(slot(hpa)) | OWNED); }

// Frames outside RAM (a device BAR, say) are never pinned or freed.
export function pinFrame(hpa: u64): void {
  if (tracked(hpa)) store<u32>(slot(hpa), load<u32>(slot(hpa)) + 1);
}

function releaseIfUnheld(hpa: u64, word: u32): void {
  store<u32>(slot(hpa), word);
  if (word == 0) freeFrames(hpa & ~<u64>0xfff, 1);
}

export function unpinFrame(hpa: u64): void {
  if (!tracked(hpa)) return;
  const word = load<u32>(slot(hpa));
  if ((word & ~OWNED) == 0) return;
  releaseIfUnheld(hpa, word - 1);
}

// The process lets go of a frame (munmap).
export function disownFrame(hpa: u64): void {
  if (!tracked(hpa)) return;
  const word = load<u32>(slot(hpa));
  if ((word & OWNED) == 0) return;
  releaseIfUnheld(hpa, word & ~OWNED);
}

export function pinCount(hpa: u64): u32 { return tracked(hpa) ? load<u32>(slot(hpa)) & ~OWNED : 0; }
