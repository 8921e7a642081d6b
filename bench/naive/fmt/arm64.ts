// The twin's Arm VMSAv8-64 entries, 4 KiB granule (Arm ARM D8.3).
// Stage 1:
//   level 3 = L0  2 = L1 (block → 1 GiB)  1 = L2 (block → 2 MiB)  0 = L3 (page)
//   table: 62 APTable[1] | 61 APTable[0] | 60 UXNTable | 59 PXNTable | 47..12 next | 1:0 = 11
//   block/page: 54 UXN | 53 PXN | 51 DBM (with TCR.HD: AP[2] is the dirty state) | 10 AF | 9:8 SH | 7 AP[2] | 6 AP[1] | 47..12 out | 1:0 = 01 / 11 (L3)
// Stage 2 (IPA → PA): the stage-1 shapes and level map; tables carry no
//   access controls; leaf 55 dirty (software bit) | 54:53 XN | 10 AF
//   | 7 S2AP write | 6 S2AP read.
import * as abi from "../../../src/engine/abi.js";
import { ALL_PERMS, KIND_INVALID, KIND_LEAF, KIND_TABLE, bit, pageMask, type Format } from "./codec.js";

export const LPAE_VALID = bit(0);
export const LPAE_TYPE_TABLE = bit(1);
export const LPAE_AP1_EL0 = bit(6);
export const LPAE_AP2_RDONLY = bit(7);
export const LPAE_SH_INNER = 3n << 8n;
export const LPAE_AF = bit(10);
export const LPAE_DBM = bit(51);
export const LPAE_PXN = bit(53);
export const LPAE_UXN = bit(54);
export const LPAE_PXN_TABLE = bit(59);
export const LPAE_UXN_TABLE = bit(60);
export const LPAE_APTABLE_NO_EL0 = bit(61);
export const LPAE_APTABLE_RDONLY = bit(62);
export const LPAE_ADDR_MASK = 0x0000fffffffff000n;

/** TCR.HD and the leaf's DBM: AP[2] says clean (1) or dirty (0) rather than read-only. */
function hdManaged(pte: bigint, flags: number): boolean {
  return (flags & abi.CTX_HD) !== 0 && (pte & LPAE_DBM) !== 0n;
}

export const arm64Format: Format = {
  id: abi.FORMAT_ARM64_S1,
  levelShift: (level) => 12 + 9 * level,
  index: (iova, level) => (iova >> BigInt(12 + 9 * level)) & 511n,
  inputFault: (iova, inputBits) => ((iova >> BigInt(inputBits)) === 0n ? 0 : abi.FAULT_INPUT_RANGE),
  rootAddr: (root) => root & LPAE_ADDR_MASK,
  // Blocks only at L1/L2 with the 4 KiB granule; 01 at L3 is reserved.
  entryKind(pte, level) {
    if ((pte & LPAE_VALID) === 0n) return KIND_INVALID;
    const tableBit = (pte & LPAE_TYPE_TABLE) !== 0n;
    if (level === 0) return tableBit ? KIND_LEAF : KIND_INVALID;
    if (tableBit) return KIND_TABLE;
    return level <= 2 ? KIND_LEAF : KIND_INVALID;
  },
  check: (pte, _level, rsvdMask) => ((pte & LPAE_ADDR_MASK & rsvdMask) !== 0n ? abi.FAULT_ADDRESS_SIZE : 0),
  tableAddr: (pte) => pte & LPAE_ADDR_MASK,
  leafAddr: (pte, level) => pte & LPAE_ADDR_MASK & ~pageMask(level),
  narrowTable(perms, pte) {
    let p = perms;
    if ((pte & LPAE_APTABLE_NO_EL0) !== 0n) p &= ~abi.PERM_U;
    if ((pte & LPAE_APTABLE_RDONLY) !== 0n) p &= ~abi.PERM_W;
    if ((pte & (LPAE_UXN_TABLE | LPAE_PXN_TABLE)) !== 0n) p &= ~abi.PERM_X;
    return p;
  },
  narrowLeaf(perms, pte, flags) {
    let p = perms;
    if ((pte & LPAE_AP1_EL0) === 0n) p &= ~abi.PERM_U;
    // Read-only unless AP[2] is only the dirty state (writable-clean).
    if ((pte & LPAE_AP2_RDONLY) !== 0n && !hdManaged(pte, flags)) p &= ~abi.PERM_W;
    if ((pte & (LPAE_UXN | LPAE_PXN)) !== 0n) p &= ~abi.PERM_X;
    return p;
  },
  fullPerms: () => ALL_PERMS,
  // AF = 0 faults unless the hardware manages it (TCR.HA, the context's A/D flag).
  leafFault: (pte, flags) => ((pte & LPAE_AF) === 0n && (flags & abi.CTX_AD) === 0 ? abi.FAULT_ACCESS_FLAG : 0),
  accessed: (pte) => pte | LPAE_AF,
  tableAccessed: (pte) => pte,
  // With HD a written DBM leaf becomes writable-dirty; other leaves have no dirty state to set.
  dirtied: (pte, flags) => (hdManaged(pte, flags) ? (pte | LPAE_AF) & ~LPAE_AP2_RDONLY : pte | LPAE_AF),
  isDirty: (pte, flags) => !hdManaged(pte, flags) || (pte & LPAE_AP2_RDONLY) === 0n,
  cleaned: (pte) => pte,
  makeTable: (addr) => addr | LPAE_VALID | LPAE_TYPE_TABLE,
  makeLeaf(addr, level, prot) {
    let pte = addr | LPAE_VALID | LPAE_AF | LPAE_SH_INNER;
    if (level === 0) pte |= LPAE_TYPE_TABLE;
    if ((prot & abi.PERM_U) !== 0) pte |= LPAE_AP1_EL0;
    if ((prot & abi.PERM_W) === 0) pte |= LPAE_AP2_RDONLY;
    if ((prot & abi.PERM_X) === 0) pte |= LPAE_UXN | LPAE_PXN;
    return pte;
  },
  leafLevels: () => 0b111,
};

export const S2_AP_READ = bit(6);
export const S2_AP_WRITE = bit(7);
export const S2_XN = 3n << 53n;
export const S2_DIRTY = bit(55);

export const arm64S2Format: Format = {
  ...arm64Format,
  id: abi.FORMAT_ARM64_S2,
  narrowTable: (perms) => perms,
  accessed: (pte) => pte | LPAE_AF,
  narrowLeaf(perms, pte) {
    let p = perms;
    if ((pte & S2_AP_READ) === 0n) p &= ~abi.PERM_R;
    if ((pte & S2_AP_WRITE) === 0n) p &= ~abi.PERM_W;
    if ((pte & S2_XN) !== 0n) p &= ~abi.PERM_X;
    return p;
  },
  // Dirty state lives in a software bit the walker sets on a write under hardware A/D.
  dirtied: (pte) => pte | LPAE_AF | S2_DIRTY,
  isDirty: (pte) => (pte & S2_DIRTY) !== 0n,
  cleaned: (pte) => pte & ~S2_DIRTY,
  makeLeaf(addr, level, prot) {
    let pte = addr | LPAE_VALID | LPAE_AF | LPAE_SH_INNER;
    if (level === 0) pte |= LPAE_TYPE_TABLE;
    if ((prot & abi.PERM_R) !== 0) pte |= S2_AP_READ;
    if ((prot & abi.PERM_W) !== 0) pte |= S2_AP_WRITE;
    if ((prot & abi.PERM_X) === 0) pte |= S2_XN;
    return pte;
  },
};
