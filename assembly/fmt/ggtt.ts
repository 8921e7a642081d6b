// Intel GPU global GTT (this package's model of it; GVT-g's gtt.c, gen8
// gen8_pte_t): one level, an array of `entries` u64s at the root, entry n
// translating the 4 KiB page n of the graphics memory address (GMA) space.
// There is no 9-bit index: the index is gma >> 12, and an index at or above
// `entries` (gma >> inputBits != 0, inputBits = 12 + log2(entries)) is an
// input-range fault. Over a stage 2 (walk/physs1.ts) the array is read at
// host-physical addresses and its output is an IOVA.
//
// level: 0 (the only one)   index: gma[inputBits-1:12]
//
//  63 .. 39   38 .. 12        11 .. 2   1   0
// [ ignored ][ page address ][ignored ][W ][P ]
//   P: present (readable); W: writable. No accessed/dirty bits, no privilege
//   levels, no execute control: what is present may be read and fetched.
//   Bits outside P, W and the address are not decoded (no reserved-bit faults).
import { PERM_R, PERM_W, PERM_X, PERM_U, KIND_INVALID, KIND_LEAF, FAULT_INPUT_RANGE } from "../abi";

export const GGTT_P: u64 = 1 << 0;
export const GGTT_W: u64 = 1 << 1;
export const GGTT_ADDR_MASK: u64 = 0x0000007FFFFFF000;

@final @unmanaged
export class GgttFormat {
  @inline levelShift(level: u32): u32 { return 12; }
  // The input check comes first, so the index is below entries (at most 2^20).
  @inline index(gma: u64, level: u32): u32 { return <u32>(gma >> 12); }
  @inline inputFault(gma: u64, inputBits: u32): u32 { return (gma >> inputBits) == 0 ? 0 : FAULT_INPUT_RANGE; }
  @inline rootAddr(root: u64): u64 { return root & ~<u64>0xfff; }

  @inline entryKind(pte: u64, level: u32): u32 { return (pte & GGTT_P) != 0 ? KIND_LEAF : KIND_INVALID; }
  @inline check(pte: u64, level: u32, rsvdMask: u64): u32 { return 0; }

  // One level: no entry points to a table.
  @inline tableAddr(pte: u64): u64 { return pte & GGTT_ADDR_MASK; }
  @inline leafAddr(pte: u64, level: u32): u64 { return pte & GGTT_ADDR_MASK; }

  @inline narrowTable(perms: u32, pte: u64, flags: u32): u32 { return perms; }
  @inline narrowLeaf(perms: u32, pte: u64, flags: u32): u32 { return (pte & GGTT_W) != 0 ? perms : perms & ~PERM_W; }
  // No privilege levels: U is always granted, as in the stage-2 formats.
  @inline fullPerms(): u32 { return PERM_R | PERM_W | PERM_X | PERM_U; }
  @inline leafFault(pte: u64, flags: u32): u32 { return 0; }

  // No accessed/dirty bits: nothing to set, and every leaf counts as dirty
  // (a dirty scan cannot tell, so it reports all, as for Arm leaves without DBM).
  @inline accessed(pte: u64, flags: u32): u64 { return pte; }
  @inline tableAccessed(pte: u64, flags: u32): u64 { return pte; }
  @inline dirtied(pte: u64, flags: u32): u64 { return pte; }
  @inline isDirty(pte: u64, flags: u32): bool { return true; }
  @inline cleaned(pte: u64): u64 { return pte; }

  // Never called: every 4 KiB slot of the one level takes a leaf.
  @inline makeTable(addr: u64): u64 { return 0; }
  // A present entry is readable, so a write-only map comes out read-write.
  @inline makeLeaf(addr: u64, level: u32, prot: u32, flags: u32): u64 {
    return (prot & PERM_W) != 0 ? addr | GGTT_P | GGTT_W : addr | GGTT_P;
  }

  @inline leafLevels(): u32 { return 0b1; }
}
