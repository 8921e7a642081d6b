// Arm VMSAv8-64 stage 1, 4 KiB granule (Arm ARM D8.3), one region (TTBR0).
//
// level (ours, leaf = 0): 3 = Arm L0   2 = L1 (block → 1 GiB)   1 = L2 (block → 2 MiB)   0 = L3 (page)
// index: va[47:39] va[38:30] va[29:21] va[20:12]; the input size (64 - T0SZ)
// sets how many levels are walked, and va above it must be zero.
//
// Table:  63 NSTable | 62:61 APTable | 60 UXNTable | 59 PXNTable | 47:12 next table | 1:0 = 11
// Block/page: 54 UXN | 53 PXN | 52 Contig | 51 DBM | 11 nG | 10 AF | 9:8 SH | 7:6 AP[2:1] | 5 NS | 4:2 AttrIndx
//             | 47:12 output (blocks: low bits RES0) | 1:0 = 01 block (L1, L2) or 11 page (L3)
// AP[1] (bit 6) grants EL0 access, AP[2] (bit 7) makes it read-only.
// APTable[0] (bit 61) removes EL0 access below, APTable[1] (bit 62) removes write.
// Output or table addresses at or above the IPS width are address-size faults.
// Hardware management (FEAT_HAFDBS): TCR.HA (our CTX_AD) sets AF instead of
// faulting; TCR.HD (CTX_HD) with a leaf's DBM makes AP[2] the dirty state:
// read-only + DBM is writable-clean, and a write clears AP[2].
import {
  PERM_R, PERM_W, PERM_X, PERM_U, KIND_INVALID, KIND_TABLE, KIND_LEAF, CTX_AD, CTX_HD,
  FAULT_ADDRESS_SIZE, FAULT_ACCESS_FLAG, FAULT_INPUT_RANGE,
} from "../abi";

export const LPAE_VALID: u64 = 1 << 0;
export const LPAE_TYPE_TABLE: u64 = 1 << 1;
export const LPAE_AP1_EL0: u64 = 1 << 6;
export const LPAE_AP2_RDONLY: u64 = 1 << 7;
export const LPAE_SH_INNER: u64 = 3 << 8;
export const LPAE_AF: u64 = 1 << 10;
export const LPAE_DBM: u64 = <u64>1 << 51;
export const LPAE_PXN: u64 = <u64>1 << 53;
export const LPAE_UXN: u64 = <u64>1 << 54;
export const LPAE_PXN_TABLE: u64 = <u64>1 << 59;
export const LPAE_UXN_TABLE: u64 = <u64>1 << 60;
export const LPAE_APTABLE_NO_EL0: u64 = <u64>1 << 61;
export const LPAE_APTABLE_RDONLY: u64 = <u64>1 << 62;
export const LPAE_ADDR_MASK: u64 = 0x0000FFFFFFFFF000;

@final @unmanaged
export class Arm64S1Format {
  @inline levelShift(level: u32): u32 { return 12 + 9 * level; }

  @inline index(iova: u64, level: u32): u32 { return <u32>(iova >> (12 + 9 * level)) & 511; }

  @inline inputFault(iova: u64, inputBits: u32): u32 { return (iova >> inputBits) == 0 ? 0 : FAULT_INPUT_RANGE; }

  @inline rootAddr(root: u64): u64 { return root & LPAE_ADDR_MASK; }

  // Blocks only at L1/L2 with the 4 KiB granule; 01 at L3 is the reserved encoding.
  @inline entryKind(pte: u64, level: u32): u32 {
    if ((pte & LPAE_VALID) == 0) return KIND_INVALID;
    const isTableBit = (pte & LPAE_TYPE_TABLE) != 0;
    if (level == 0) return isTableBit ? KIND_LEAF : KIND_INVALID;
    if (isTableBit) return KIND_TABLE;
    return level <= 2 ? KIND_LEAF : KIND_INVALID;
  }

  // rsvdMask: address bits at or above the output width.
  @inline check(pte: u64, level: u32, rsvdMask: u64): u32 {
    return (pte & LPAE_ADDR_MASK & rsvdMask) != 0 ? FAULT_ADDRESS_SIZE : 0;
  }

  @inline tableAddr(pte: u64): u64 { return pte & LPAE_ADDR_MASK; }

  @inline leafAddr(pte: u64, level: u32): u64 {
    return pte & LPAE_ADDR_MASK & ~((<u64>1 << (12 + 9 * level)) - 1);
  }

  // Hierarchical permissions (HPD = 0).
  @inline narrowTable(perms: u32, pte: u64, flags: u32): u32 {
    let p = perms;
    if ((pte & LPAE_APTABLE_NO_EL0) != 0) p &= ~PERM_U;
    if ((pte & LPAE_APTABLE_RDONLY) != 0) p &= ~PERM_W;
    if ((pte & (LPAE_UXN_TABLE | LPAE_PXN_TABLE)) != 0) p &= ~PERM_X;
    return p;
  }

  @inline narrowLeaf(perms: u32, pte: u64, flags: u32): u32 {
    let p = perms;
    if ((pte & LPAE_AP1_EL0) == 0) p &= ~PERM_U;
    if ((pte & LPAE_AP2_RDONLY) != 0 && !this.dirtyManaged(pte, flags)) p &= ~PERM_W;
    if ((pte & (LPAE_UXN | LPAE_PXN)) != 0) p &= ~PERM_X;
    return p;
  }

  @inline fullPerms(): u32 { return PERM_R | PERM_W | PERM_X | PERM_U; }

  // AF = 0 faults unless the hardware manages it (TCR.HA, our CTX_AD).
  @inline leafFault(pte: u64, flags: u32): u32 {
    return (pte & LPAE_AF) == 0 && (flags & CTX_AD) == 0 ? FAULT_ACCESS_FLAG : 0;
  }

  // A leaf whose AP[2] is its dirty state rather than a write ban.
  @inline dirtyManaged(pte: u64, flags: u32): bool { return (pte & LPAE_DBM) != 0 && (flags & CTX_HD) != 0; }

  // With HA the walker sets AF in leaves (table descriptors have none: bit 10
  // is ignored there). With HD a written DBM leaf loses AP[2]; a leaf without
  // DBM has no dirty state to set, so it counts as dirty.
  @inline accessed(pte: u64, flags: u32): u64 { return pte | LPAE_AF; }
  @inline tableAccessed(pte: u64, flags: u32): u64 { return pte; }
  @inline dirtied(pte: u64, flags: u32): u64 {
    return this.dirtyManaged(pte, flags) ? (pte | LPAE_AF) & ~LPAE_AP2_RDONLY : pte | LPAE_AF;
  }
  @inline isDirty(pte: u64, flags: u32): bool { return !this.dirtyManaged(pte, flags) || (pte & LPAE_AP2_RDONLY) == 0; }
  @inline cleaned(pte: u64): u64 { return pte; }

  @inline makeTable(addr: u64): u64 { return addr | LPAE_VALID | LPAE_TYPE_TABLE; }

  @inline makeLeaf(addr: u64, level: u32, prot: u32, flags: u32): u64 {
    let pte = addr | LPAE_VALID | LPAE_AF | LPAE_SH_INNER;
    if (level == 0) pte |= LPAE_TYPE_TABLE;
    if ((prot & PERM_U) != 0) pte |= LPAE_AP1_EL0;
    if ((prot & PERM_W) == 0) pte |= LPAE_AP2_RDONLY;
    if ((prot & PERM_X) == 0) pte |= LPAE_UXN | LPAE_PXN;
    return pte;
  }

  @inline leafLevels(): u32 { return 0b111; }
}

// Arm VMSAv8-64 stage 2, 4 KiB granule (Arm ARM D8.3): IPA → PA, the host's
// stage 2 under an SMMUv3. Same descriptor shapes and level map as stage 1;
// the leaf's attributes differ:
//   54:53 XN[1:0] (any set: no execute) | 10 AF | 7:6 S2AP (bit 6 read, bit 7 write)
// Table descriptors carry no access controls at stage 2. There are no
// privilege levels. Concatenated top-level tables are not modelled (the walk
// starts at the level the input size needs, as for stage 1).
// Dirty state: real SMMUs use DBM with S2AP[1]; this model keeps a dirty flag
// in software bit 55 (ignored by hardware), set by the walker on a write when
// hardware dirty tracking is on for the domain.
export const S2_AP_READ: u64 = 1 << 6;
export const S2_AP_WRITE: u64 = 1 << 7;
export const S2_XN: u64 = <u64>3 << 53;
export const S2_DIRTY: u64 = <u64>1 << 55;

@final @unmanaged
export class Arm64S2Format {
  @inline levelShift(level: u32): u32 { return 12 + 9 * level; }
  @inline index(iova: u64, level: u32): u32 { return <u32>(iova >> (12 + 9 * level)) & 511; }
  @inline inputFault(iova: u64, inputBits: u32): u32 { return (iova >> inputBits) == 0 ? 0 : FAULT_INPUT_RANGE; }
  @inline rootAddr(root: u64): u64 { return root & LPAE_ADDR_MASK; }
  @inline entryKind(pte: u64, level: u32): u32 { return changetype<Arm64S1Format>(0).entryKind(pte, level); }
  @inline check(pte: u64, level: u32, rsvdMask: u64): u32 { return changetype<Arm64S1Format>(0).check(pte, level, rsvdMask); }
  @inline tableAddr(pte: u64): u64 { return pte & LPAE_ADDR_MASK; }
  @inline leafAddr(pte: u64, level: u32): u64 { return pte & LPAE_ADDR_MASK & ~((<u64>1 << (12 + 9 * level)) - 1); }

  @inline narrowTable(perms: u32, pte: u64, flags: u32): u32 { return perms; }
  @inline narrowLeaf(perms: u32, pte: u64, flags: u32): u32 {
    let p = perms;
    if ((pte & S2_AP_READ) == 0) p &= ~PERM_R;
    if ((pte & S2_AP_WRITE) == 0) p &= ~PERM_W;
    if ((pte & S2_XN) != 0) p &= ~PERM_X;
    return p;
  }
  @inline fullPerms(): u32 { return PERM_R | PERM_W | PERM_X | PERM_U; }
  // AF as at stage 1 (VTCR.HA is our CTX_AD here).
  @inline leafFault(pte: u64, flags: u32): u32 { return changetype<Arm64S1Format>(0).leafFault(pte, flags); }

  @inline accessed(pte: u64, flags: u32): u64 { return pte | LPAE_AF; }
  @inline tableAccessed(pte: u64, flags: u32): u64 { return pte; }
  @inline dirtied(pte: u64, flags: u32): u64 { return pte | LPAE_AF | S2_DIRTY; }
  @inline isDirty(pte: u64, flags: u32): bool { return (pte & S2_DIRTY) != 0; }
  @inline cleaned(pte: u64): u64 { return pte & ~S2_DIRTY; }

  @inline makeTable(addr: u64): u64 { return addr | LPAE_VALID | LPAE_TYPE_TABLE; }
  @inline makeLeaf(addr: u64, level: u32, prot: u32, flags: u32): u64 {
    let pte = addr | LPAE_VALID | LPAE_AF | LPAE_SH_INNER;
    if (level == 0) pte |= LPAE_TYPE_TABLE;
    if ((prot & PERM_R) != 0) pte |= S2_AP_READ;
    if ((prot & PERM_W) != 0) pte |= S2_AP_WRITE;
    if ((prot & PERM_X) == 0) pte |= S2_XN;
    return pte;
  }
  @inline leafLevels(): u32 { return 0b111; }
}
