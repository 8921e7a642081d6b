// Host physical RAM: HPA 0 .. size, backed by the engine's memory. Reads,
// writes and views are checked against RAM here; frames for page tables and
// other host structures come from the engine's frame allocator.
import { toU64, toLength, hex, type Address } from "./addr.js";
import { bytes as checkBytes, integer } from "./args.js";
import { fail } from "./errors.js";
import * as abi from "./engine/abi.js";
import type { Engine } from "./engine/engine.js";

export class PhysicalMemory {
  /** RAM size in bytes. */
  readonly size: bigint;

  /** @internal */
  constructor(private readonly engine: Engine) {
    this.size = engine.ramSize;
  }

  /** Checks [hpa, hpa + len) against RAM and returns its linear-memory offset. */
  private span(hpa: Address, len: number, what: string): number {
    const start = toU64(hpa, `${what} hpa`);
    const end = start + BigInt(len);
    if (end > (1n << 64n)) fail("EOVERFLOW", `${what}: ${hex(start)} + ${len} wraps past 2^64`);
    if (start > this.size || end > this.size) fail("EFAULT", `${what}: [${hex(start)}, ${hex(end)}) is outside RAM (size ${hex(this.size)})`);
    return this.engine.ramOffset(start);
  }

  /** A copy of len bytes at hpa. */
  read(hpa: Address, len: number): Uint8Array {
    const n = toLength(len, "read length");
    const off = this.span(hpa, n, "read");
    return this.engine.bytes.slice(off, off + n);
  }

  write(hpa: Address, bytes: Uint8Array): void {
    const data = checkBytes(bytes, "write bytes");
    const off = this.span(hpa, data.length, "write");
    this.engine.bytes.set(data, off);
  }

  /** A zero-copy view of RAM; it stays valid for the host's lifetime. */
  view(hpa: Address, len: number): Uint8Array {
    const n = toLength(len, "view length");
    const off = this.span(hpa, n, "view");
    return new Uint8Array(this.engine.buffer, off, n);
  }

  readU64(hpa: Address): bigint {
    const off = this.span(hpa, 8, "readU64");
    if (off % 8 !== 0) fail("EINVAL", `readU64: ${hex(toU64(hpa, "hpa"))} is not 8-byte aligned`);
    return this.engine.data.getBigUint64(off, true);
  }

  writeU64(hpa: Address, value: Address): void {
    const off = this.span(hpa, 8, "writeU64");
    if (off % 8 !== 0) fail("EINVAL", `writeU64: ${hex(toU64(hpa, "hpa"))} is not 8-byte aligned`);
    this.engine.data.setBigUint64(off, toU64(value, "writeU64 value"), true);
  }

  /** count contiguous zeroed 4 KiB frames; returns the HPA of the first. */
  allocFrames(count = 1): bigint {
    integer(count, "allocFrames count", 1, 0xffffffff);
    const hpa = BigInt.asUintN(64, this.engine.wasm.framesAlloc(count));
    if (hpa === (1n << 64n) - 1n) fail("ENOMEM", `no run of ${count} free frames (${this.framesFree} free in all)`);
    return hpa;
  }

  /** Frees frames from allocFrames; EINVAL (nothing freed) when any of them is not allocated. */
  freeFrames(hpa: Address, count = 1): void {
    const start = toU64(hpa, "freeFrames hpa");
    integer(count, "freeFrames count", 1, 0xffffffff);
    if (start % 4096n !== 0n) fail("EINVAL", `freeFrames: ${hex(start)} is not 4 KiB aligned`);
    if (this.engine.wasm.framesRelease(start, count) !== abi.ST_OK) {
      fail("EINVAL", `freeFrames: [${hex(start)}, +${count} frames) is not wholly allocated`);
    }
  }

  /** Frames the allocator can still hand out. */
  get framesFree(): number { return this.engine.u32(abi.FRAMES_FREE); }
}
