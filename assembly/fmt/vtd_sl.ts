// Intel VT-d second-level paging (VT-d spec §9.8, "Second-Level Paging
// Entries"): the host's stage 2, IOVA (or GPA) → HPA, filled by MAP_DMA.
//
// levels by address width: 3 (39-bit), 4 (48-bit), 5 (57-bit)
// level: 4 SL-PML5E  3 SL-PML4E  2 SL-PDPE (PS → 1 GiB)  1 SL-PDE (PS → 2 MiB)  0 SL-PTE (4 KiB)
//
//  63  62   61..52  51..HAW  HAW-1..12    11  10  9  8  7   6..3  2  1  0
// [ - ][TM][ignored][rsvd ][address     ][SNP][-][D][A][PS][ - ][X][W][R]
//   An entry with neither R nor W is not present (the kernel's dma_pte_present).
//   No privilege levels: R, W and X must allow the access at every level.
//   A/D are set by hardware when second-level A/D is enabled (SLADE).
import {
  PERM_R, PERM_W, PERM_X, PERM_U, KIND_INVALID, KIND_TABLE, KIND_LEAF,
  FAULT_RESERVED_BIT, FAULT_INPUT_RANGE,
} from "../abi";

export const VTDSL_R: u64 = 1 << 0;
export const VTDSL_W: u64 = 1 << 1;
export const VTDSL_X: u64 = 1 << 2;
export const VTDSL_PS: u64 = 1 << 7;
export const VTDSL_A: u64 = 1 << 8;
export const VTDSL_D: u64 = 1 << 9;
export const VTDSL_ADDR_MASK: u64 = 0x000FFFFFFFFFF000;
const VTDSL_RSVD_1G: u64 = 0x3FFFF000;
const VTDSL_RSVD_2M: u64 = 0x001FF000;

@final @unmanaged
export class VtdSlFormat {
  @inline levelShift(level: u32): u32 { return 12 + 9 * level; }
  @inline index(iova: u64, level: u32): u32 { return <u32>(iova >> (12 + 9 * level)) & 511; }
  @inline inputFault(iova: u64, inputBits: u32): u32 { return (iova >> inputBits) == 0 ? 0 : FAULT_INPUT_RANGE; }
  @inline rootAddr(root: u64): u64 { return root & VTDSL_ADDR_MASK; }

  @inline entryKind(pte: u64, level: u32): u32 {
    if ((pte & (VTDSL_R | VTDSL_W)) == 0) return KIND_INVALID;
    return level == 0 || (level <= 2 && (pte & VTDSL_PS) != 0) ? KIND_LEAF : KIND_TABLE;
  }

  // rsvdMask: address bits at or above the host address width; PS above level 2; low bits of large leaves.
  @inline check(pte: u64, level: u32, rsvdMask: u64): u32 {
    if ((pte & VTDSL_ADDR_MASK & rsvdMask) != 0) return FAULT_RESERVED_BIT;
    if ((pte & VTDSL_PS) == 0 || level == 0) return 0;
    if (level >= 3) return FAULT_RESERVED_BIT;
    return (pte & (level == 2 ? VTDSL_RSVD_1G : VTDSL_RSVD_2M)) != 0 ? FAULT_RESERVED_BIT : 0;
  }

  @inline tableAddr(pte: u64): u64 { return pte & VTDSL_ADDR_MASK; }
  @inline leafAddr(pte: u64, level: u32): u64 { return pte & VTDSL_ADDR_MASK & ~((<u64>1 << (12 + 9 * level)) - 1); }

  @inline narrowTable(perms: u32, pte: u64, flags: u32): u32 {
    let p = perms;
    if ((pte & VTDSL_R) == 0) p &= ~PERM_R;
    if ((pte & VTDSL_W) == 0) p &= ~PERM_W;
    if ((pte & VTDSL_X) == 0) p &= ~PERM_X;
    return p;
  }
  @inline narrowLeaf(perms: u32, pte: u64, flags: u32): u32 { return this.narrowTable(perms, pte, flags); }

  // No privilege levels in stage 2: U is always granted, so user and privileged requests see the same rights.
  @inline fullPerms(): u32 { return PERM_R | PERM_W | PERM_X | PERM_U; }
  @inline leafFault(pte: u64, flags: u32): u32 { return 0; }

  @inline accessed(pte: u64, flags: u32): u64 { return pte | VTDSL_A; }
  @inline tableAccessed(pte: u64, flags: u32): u64 { return pte | VTDSL_A; }
  @inline dirtied(pte: u64, flags: u32): u64 { return pte | VTDSL_A | VTDSL_D; }
  @inline isDirty(pte: u64, flags: u32): bool { return (pte & VTDSL_D) != 0; }
  @inline cleaned(pte: u64): u64 { return pte & ~VTDSL_D; }

  @inline makeTable(addr: u64): u64 { return addr | VTDSL_R | VTDSL_W; }

  @inline makeLeaf(addr: u64, level: u32, prot: u32, flags: u32): u64 {
    let pte = addr;
    if ((prot & PERM_R) != 0) pte |= VTDSL_R;
    if ((prot & PERM_W) != 0) pte |= VTDSL_W;
    if ((prot & PERM_X) != 0) pte |= VTDSL_X;
    if (level > 0) pte |= VTDSL_PS;
    return pte;
  }

  @inline leafLevels(): u32 { return 0b111; }
}
