// Addresses are u64 as bigint at the facade; a safe-integer number is
// accepted. Every check happens here, before anything enters WASM.
import { fail } from "./errors.js";
import { show } from "./args.js";

export type Address = bigint | number;

export const U64_MAX = (1n << 64n) - 1n;
export const PAGE_SIZE = 4096n;

export function toU64(value: Address, what: string): bigint {
  if (typeof value === "bigint") {
    if (value < 0n || value > U64_MAX) fail("EINVAL", `${what} ${value} is not a 64-bit unsigned value`);
    return value;
  }
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    fail("EINVAL", `${what} must be a bigint or a non-negative safe integer, got ${show(value)}`);
  }
  return BigInt(value);
}

/** A byte count that fits a single engine call (below 2^32): a non-negative safe integer or a bigint. */
export function toLength(value: Address, what: string, max = 0xffffffff): number {
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0 && value <= max) return value;
  const n = toU64(value, what);
  if (n > BigInt(max)) fail("EINVAL", `${what} ${n} is too large (at most ${max})`);
  return Number(n);
}

/** Inclusive last address of [start, start + size); size > 0. Wrapping past 2^64 is EOVERFLOW. */
export function lastOf(start: bigint, size: bigint, what: string): bigint {
  if (size === 0n) fail("EINVAL", `${what}: size is zero`);
  const last = start + size - 1n;
  if (last > U64_MAX) fail("EOVERFLOW", `${what}: 0x${start.toString(16)} + 0x${size.toString(16)} wraps past 2^64`);
  return last;
}

export function requireAligned(value: bigint, align: bigint, what: string): void {
  if (value % align !== 0n) fail("EINVAL", `${what} 0x${value.toString(16)} is not aligned to 0x${align.toString(16)}`);
}

export const hex = (v: bigint | number): string => "0x" + v.toString(16);
