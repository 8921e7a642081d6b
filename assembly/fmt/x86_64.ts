// x86-64 IA-32e paging, 4 and 5 levels (Intel SDM vol. 3A §4.5) — also the
// VT-d first-level format (VT-d spec §3.6) and the process page tables.
//
// level: 4 PML5E   3 PML4E   2 PDPTE (PS → 1 GiB)   1 PDE (PS → 2 MiB)   0 PTE (4 KiB)
// index: va[56:48] va[47:39] va[38:30]              va[29:21]            va[20:12]
//
//  63  62..52  51..M  M-1..12          11..9  8  7   6  5  4   3   2   1   0
// [XD][ignored][rsvd][address        ][ign ][G][PS][D][A][PCD][PWT][US][RW][P]
//   M = the physical-address width. In a large leaf, bit 12 is PAT and bits
//   29:13 (1 GiB) or 20:13 (2 MiB) are reserved; PS is reserved at levels 3-4.
//   Input addresses are canonical: sign-extended from bit 47 (or 56).
import {
  CTX_NX, CTX_EAFE, PERM_R, PERM_W, PERM_X, PERM_U, KIND_INVALID, KIND_TABLE, KIND_LEAF,
  FAULT_RESERVED_BIT, FAULT_NON_CANONICAL,
} from "../abi";

export const X86_PTE_P: u64 = 1 << 0;
export const X86_PTE_RW: u64 = 1 << 1;
export const X86_PTE_US: u64 = 1 << 2;
export const X86_PTE_A: u64 = 1 << 5;
export const X86_PTE_D: u64 = 1 << 6;
export const X86_PTE_PS: u64 = 1 << 7;
// VT-d first level: extended-accessed, set with A when the PASID entry has EAFE (else ignored).
export const X86_PTE_EA: u64 = 1 << 10;
export const X86_PTE_XD: u64 = 1 << 63;
export const X86_ADDR_MASK: u64 = 0x000FFFFFFFFFF000;
// Low address bits of large leaves that must be zero (bit 12 is PAT).
const X86_RSVD_1G: u64 = 0x3FFFE000;
const X86_RSVD_2M: u64 = 0x001FE000;

@final @unmanaged
export class X86Format {
  @inline levelShift(level: u32): u32 { return 12 + 9 * level; }

  @inline index(iova: u64, level: u32): u32 { return <u32>(iova >> (12 + 9 * level)) & 511; }

  @inline inputFault(iova: u64, inputBits: u32): u32 {
    const upper = <i64>iova >> (inputBits - 1);
    return upper == 0 || upper == -1 ? 0 : FAULT_NON_CANONICAL;
  }

  @inline rootAddr(root: u64): u64 { return root & X86_ADDR_MASK; }

  // PS at levels 3-4 makes no leaf; check() reports it as reserved.
  @inline entryKind(pte: u64, level: u32): u32 {
    if ((pte & X86_PTE_P) == 0) return KIND_INVALID;
    return level == 0 || (level <= 2 && (pte & X86_PTE_PS) != 0) ? KIND_LEAF : KIND_TABLE;
  }

  // rsvdMask: the bits above the physical-address width (and XD without NX).
  @inline check(pte: u64, level: u32, rsvdMask: u64): u32 {
    if ((pte & rsvdMask) != 0) return FAULT_RESERVED_BIT;
    if ((pte & X86_PTE_PS) == 0 || level == 0) return 0;
    if (level >= 3) return FAULT_RESERVED_BIT;
    return (pte & (level == 2 ? X86_RSVD_1G : X86_RSVD_2M)) != 0 ? FAULT_RESERVED_BIT : 0;
  }

  @inline tableAddr(pte: u64): u64 { return pte & X86_ADDR_MASK; }

  @inline leafAddr(pte: u64, level: u32): u64 {
    return pte & X86_ADDR_MASK & ~((<u64>1 << (12 + 9 * level)) - 1);
  }

  // U/S and R/W must allow the access at every level; XD anywhere forbids fetch.
  @inline narrowTable(perms: u32, pte: u64, flags: u32): u32 {
    let p = perms;
    if ((pte & X86_PTE_RW) == 0) p &= ~PERM_W;
    if ((pte & X86_PTE_US) == 0) p &= ~PERM_U;
    if ((flags & CTX_NX) != 0 && (pte & X86_PTE_XD) != 0) p &= ~PERM_X;
    return p;
  }
  @inline narrowLeaf(perms: u32, pte: u64, flags: u32): u32 { return this.narrowTable(perms, pte, flags); }

  @inline fullPerms(): u32 { return PERM_R | PERM_W | PERM_X | PERM_U; }

  // Nothing about a valid x86 leaf faults before the permission check.
  @inline leafFault(pte: u64, flags: u32): u32 { return 0; }

  // Hardware-managed accessed/dirty bits (VT-d first level sets A on each
  // entry it uses and D on a written leaf; with EAFE, EA along with A).
  @inline accessed(pte: u64, flags: u32): u64 { return pte | X86_PTE_A | ((flags & CTX_EAFE) != 0 ? X86_PTE_EA : 0); }
  @inline tableAccessed(pte: u64, flags: u32): u64 { return this.accessed(pte, flags); }
  @inline dirtied(pte: u64, flags: u32): u64 { return this.accessed(pte, flags) | X86_PTE_D; }
  @inline isDirty(pte: u64, flags: u32): bool { return (pte & X86_PTE_D) != 0; }
  @inline cleaned(pte: u64): u64 { return pte & ~X86_PTE_D; }

  // Builder encodings: tables allow everything so the leaf decides.
  @inline makeTable(addr: u64): u64 { return addr | X86_PTE_P | X86_PTE_RW | X86_PTE_US; }

  @inline makeLeaf(addr: u64, level: u32, prot: u32, flags: u32): u64 {
    let pte = addr | X86_PTE_P;
    if ((prot & PERM_W) != 0) pte |= X86_PTE_RW;
    if ((prot & PERM_U) != 0) pte |= X86_PTE_US;
    if ((prot & PERM_X) == 0 && (flags & CTX_NX) != 0) pte |= X86_PTE_XD;
    if (level > 0) pte |= X86_PTE_PS;
    return pte;
  }

  // Levels at which a leaf may stand, as a mask of levels (4K, 2M, 1G).
  @inline leafLevels(): u32 { return 0b111; }
}
