// Host physical RAM as the twin's users see it: checked reads, writes and
// views, u64 accessors, and the frame allocator. Same checks and errno as
// the facade's PhysicalMemory.
import type { Address } from "../../src/index.js";
import { fail, hex, toU64 } from "./args.js";
import type { FrameAllocator } from "./frames.js";
import type { Ram } from "./ram.js";

export class NaivePhysicalMemory {
  readonly size: bigint;

  constructor(private readonly ram: Ram, private readonly frames: FrameAllocator) {
    this.size = ram.size;
  }

  /** Checks [hpa, hpa + len) against RAM; returns the byte offset. */
  private span(hpa: Address, len: number, what: string): number {
    const start = toU64(hpa, `${what} hpa`);
    if (!Number.isSafeInteger(len) || len < 0) fail("EINVAL", `${what}: length must be a non-negative integer`);
    const end = start + BigInt(len);
    if (end > 1n << 64n) fail("EOVERFLOW", `${what}: ${hex(start)} + ${len} wraps past 2^64`);
    if (start > this.size || end > this.size) fail("EFAULT", `${what}: [${hex(start)}, ${hex(end)}) is outside RAM (size ${hex(this.size)})`);
    return Number(start);
  }

  read(hpa: Address, len: number): Uint8Array {
    const off = this.span(hpa, len, "read");
    return this.ram.bytes.slice(off, off + len);
  }

  write(hpa: Address, bytes: ArrayLike<number>): void {
    const off = this.span(hpa, bytes.length, "write");
    this.ram.bytes.set(bytes, off);
  }

  /** A view on the twin's RAM ArrayBuffer. */
  view(hpa: Address, len: number): Uint8Array {
    const off = this.span(hpa, len, "view");
    return new Uint8Array(this.ram.buffer, off, len);
  }

  readU64(hpa: Address): bigint {
    const off = this.span(hpa, 8, "readU64");
    if (off % 8 !== 0) fail("EINVAL", `readU64: ${hex(off)} is not 8-byte aligned`);
    return this.ram.loadPte(BigInt(off));
  }

  writeU64(hpa: Address, value: Address): void {
    const off = this.span(hpa, 8, "writeU64");
    if (off % 8 !== 0) fail("EINVAL", `writeU64: ${hex(off)} is not 8-byte aligned`);
    this.ram.storePte(BigInt(off), toU64(value, "writeU64 value"));
  }

  allocFrames(count = 1): bigint {
    if (!Number.isSafeInteger(count) || count <= 0 || count > 0xffffffff) fail("EINVAL", `allocFrames: count must be a positive integer, got ${count}`);
    const hpa = this.frames.alloc(count);
    if (hpa === undefined) fail("ENOMEM", `no run of ${count} free frames (${this.framesFree} free in all)`);
    return hpa;
  }

  freeFrames(hpa: Address, count = 1): void {
    const start = toU64(hpa, "freeFrames hpa");
    if (!Number.isSafeInteger(count) || count <= 0 || count > 0xffffffff) fail("EINVAL", `freeFrames: count must be a positive integer, got ${count}`);
    if (start % 4096n !== 0n) fail("EINVAL", `freeFrames: ${hex(start)} is not 4 KiB aligned`);
    if (!this.frames.release(start, count)) fail("EINVAL", `freeFrames: [${hex(start)}, +${count} frames) is not wholly allocated`);
  }

  get framesFree(): number { return this.frames.free; }
}
