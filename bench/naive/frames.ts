// The twin's frame allocator: one byte per 4 KiB frame of RAM, first fit
// from the lowest frame that may be free, contiguous runs, frames zeroed when
// handed out. Same answers as assembly/mem/frames.ts for the same calls.
import type { Ram } from "./ram.js";

export class FrameAllocator {
  readonly count: number;
  private readonly used: Uint8Array;
  private lowestMaybeFree = 0;
  free: number;

  constructor(private readonly ram: Ram) {
    this.count = Number(ram.size >> 12n);
    this.used = new Uint8Array(this.count);
    this.free = this.count;
  }

  isAllocated(hpa: bigint): boolean {
    const frame = hpa >> 12n;
    return frame < BigInt(this.count) && this.used[Number(frame)] === 1;
  }

  private nextFree(from: number): number {
    let f = from;
    while (f < this.count && this.used[f] === 1) f++;
    return f;
  }

  /** HPA of `count` contiguous zeroed frames, or undefined when no run fits. */
  alloc(count: number): bigint | undefined {
    if (count === 0 || count > this.free) return undefined;
    let start = this.nextFree(this.lowestMaybeFree);
    this.lowestMaybeFree = start;
    while (start + count <= this.count) {
      let run = 1;
      while (run < count && this.used[start + run] === 0) run++;
      if (run === count) {
        this.used.fill(1, start, start + count);
        this.free -= count;
        const hpa = BigInt(start) << 12n;
        this.ram.zero(hpa, count * 4096);
        return hpa;
      }
      start = this.nextFree(start + run);
    }
    return undefined;
  }

  /** Frees frames that are all allocated; false (nothing freed) otherwise. */
  release(hpa: bigint, count: number): boolean {
    if ((hpa & 0xfffn) !== 0n || count === 0) return false;
    const first = hpa >> 12n;
    if (first >= BigInt(this.count) || BigInt(count) > BigInt(this.count) - first) return false;
    const f0 = Number(first);
    for (let i = 0; i < count; i++) if (this.used[f0 + i] === 0) return false;
    this.used.fill(0, f0, f0 + count);
    this.free += count;
    if (f0 < this.lowestMaybeFree) this.lowestMaybeFree = f0;
    return true;
  }

  /** Takes one frame not yet held (a table or root found in RAM), without zeroing it. */
  claim(hpa: bigint): boolean {
    const frame = hpa >> 12n;
    if ((hpa & 0xfffn) !== 0n || frame >= BigInt(this.count) || this.used[Number(frame)] === 1) return false;
    this.used[Number(frame)] = 1;
    this.free--;
    return true;
  }
}
