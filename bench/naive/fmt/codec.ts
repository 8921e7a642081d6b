// What a page-table format of the twin answers: BigInt versions of the
// engine's inlined format questions, for the walker and the builder. Levels
// are numbered with the leaf as 0.
import * as abi from "../../../src/engine/abi.js";

export const KIND_INVALID = abi.KIND_INVALID;
export const KIND_TABLE = abi.KIND_TABLE;
export const KIND_LEAF = abi.KIND_LEAF;

export interface Format {
  /** The engine format id (src/engine/abi.ts) this codec answers for. */
  readonly id: number;
  levelShift(level: number): number;
  index(iova: bigint, level: number): bigint;
  /** 0, or the fault for an input address the table cannot translate. */
  inputFault(iova: bigint, inputBits: number): number;
  rootAddr(root: bigint): bigint;
  entryKind(pte: bigint, level: number): number;
  /** 0, or the fault for reserved / address-size bits. rsvdMask comes from the context. */
  check(pte: bigint, level: number, rsvdMask: bigint): number;
  tableAddr(pte: bigint): bigint;
  leafAddr(pte: bigint, level: number): bigint;
  narrowTable(perms: number, pte: bigint, flags: number): number;
  narrowLeaf(perms: number, pte: bigint, flags: number): number;
  fullPerms(): number;
  /** 0, or a fault a valid leaf raises before the permission check. */
  leafFault(pte: bigint, flags: number): number;
  /** A leaf the walk used (flags: the context's, e.g. EAFE or HD). */
  accessed(pte: bigint, flags: number): bigint;
  /** A table entry the walk passed through (x86 sets A; Arm table descriptors have no AF). */
  tableAccessed(pte: bigint, flags: number): bigint;
  dirtied(pte: bigint, flags: number): bigint;
  isDirty(pte: bigint, flags: number): boolean;
  /** The leaf with its dirty state cleared (a dirty-bitmap read that clears). */
  cleaned(pte: bigint): bigint;
  makeTable(addr: bigint): bigint;
  makeLeaf(addr: bigint, level: number, prot: number, flags: number): bigint;
  /** Levels at which a leaf may stand, as a mask of levels. */
  leafLevels(): number;
}

export const bit = (n: number): bigint => 1n << BigInt(n);
/** The offset bits of a leaf at `level` in a 4 KiB-granule radix table. */
export const pageMask = (level: number): bigint => bit(12 + 9 * level) - 1n;
export const ALL_PERMS = abi.PERM_R | abi.PERM_W | abi.PERM_X | abi.PERM_U;
