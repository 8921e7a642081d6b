// Stage-1 entries as a guest writes them by hand, for both formats, and the
// hostile ones an attacker plants in its own tables.
import type { Rng } from "./rng.js";
import { DATA_FIRST, GUEST_BYTES, GUEST_PAGES, HOSTILE_FIRST, MiB, PAGE, type Stage1Format } from "./world.js";

/** x86-64: P | RW | US, and PS. Arm: table / page descriptor bits, block bits, AF | AP_EL0. */
const X86_TABLE = 0x7n, X86_PS = 0x80n;
const ARM_TABLE = 0x3n, ARM_BLOCK = 0x1n, ARM_LEAF_ATTRS = 0x440n;

export function tableEntry(format: Stage1Format, gpa: bigint): bigint {
  return gpa | (format === "x86-64" ? X86_TABLE : ARM_TABLE);
}

/** A leaf at a level (0: 4 KiB page; 1: 2 MiB; 2: 1 GiB). */
export function leafEntry(format: Stage1Format, gpa: bigint, level: number): bigint {
  if (format === "x86-64") return gpa | X86_TABLE | (level > 0 ? X86_PS : 0n);
  return gpa | ARM_LEAF_ATTRS | (level > 0 ? ARM_BLOCK : ARM_TABLE);
}

/** A hostile page: where the attacker's tables live. */
export function hostilePage(r: Rng, among = 32): bigint {
  return BigInt(HOSTILE_FIRST + r.int(among)) * PAGE;
}

/**
 * A hostile entry at one level of the table at `self`: a loop to itself, a
 * pointer into another hostile table or into a builder's table, a pointer
 * beyond stage 2, a large leaf over guest RAM, a leaf onto table pages, a
 * table pointer into data, garbage, reserved bits.
 */
export function hostileEntry(r: Rng, format: Stage1Format, level: number, self: bigint, builderPages: bigint[]): bigint {
  return r.weighted<() => bigint>([
    [2, () => tableEntry(format, self)],
    [2, () => tableEntry(format, hostilePage(r))],
    [builderPages.length ? 2 : 0, () => tableEntry(format, r.pick(builderPages))],
    [2, () => tableEntry(format, r.pick([GUEST_BYTES, GUEST_BYTES + 0x123000n, 1n << 40n]))],
    [2, () => leafEntry(format, r.pick([0n, 2n * MiB, 1n << 30n]), Math.max(1, level))],
    [2, () => leafEntry(format, BigInt(r.range(0, DATA_FIRST - 1)) * PAGE, 0)],
    [1, () => tableEntry(format, BigInt(r.range(DATA_FIRST, GUEST_PAGES - 1)) * PAGE)],
    [1, () => r.u64()],
    [1, () => tableEntry(format, BigInt(r.int(1024)) * PAGE) | (1n << BigInt(r.range(48, 62)))],
  ])();
}
