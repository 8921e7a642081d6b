// Ownership and pin counts of the frames behind process memory, in the twin.
// mmap gives the process fresh frames it owns; MAP_DMA pins them. A frame
// goes back to the allocator when neither holds it, so munmap of a pinned
// page leaves the frame to the device until the last unpin. Frames outside
// RAM (a doorbell, a BAR) are never counted or freed.
import type { FrameAllocator } from "./frames.js";

export class FramePins {
  private readonly pins: Uint32Array;
  private readonly owned: Uint8Array;

  constructor(private readonly frames: FrameAllocator) {
    this.pins = new Uint32Array(frames.count);
    this.owned = new Uint8Array(frames.count);
  }

  private frameOf(hpa: bigint): number | undefined {
    const f = hpa >> 12n;
    return f < BigInt(this.frames.count) ? Number(f) : undefined;
  }

  private releaseIfUnheld(f: number): void {
    if (this.pins[f] === 0 && this.owned[f] === 0) this.frames.release(BigInt(f) << 12n, 1);
  }

  markOwned(hpa: bigint): void {
    const f = this.frameOf(hpa);
    if (f !== undefined) this.owned[f] = 1;
  }

  pin(hpa: bigint): void {
    const f = this.frameOf(hpa);
    if (f !== undefined) this.pins[f]++;
  }

  unpin(hpa: bigint): void {
    const f = this.frameOf(hpa);
    if (f === undefined || this.pins[f] === 0) return;
    this.pins[f]--;
    this.releaseIfUnheld(f);
  }

  /** The process lets go of the frame (munmap). */
  disown(hpa: bigint): void {
    const f = this.frameOf(hpa);
    if (f === undefined || this.owned[f] === 0) return;
    this.owned[f] = 0;
    this.releaseIfUnheld(f);
  }

  count(hpa: bigint): number {
    const f = this.frameOf(hpa);
    return f === undefined ? 0 : this.pins[f];
  }
}
