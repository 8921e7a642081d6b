// Page-table formats of the twin, as BigInt answers to the walker's and the
// builder's questions. Levels are numbered with the leaf as 0.
//
// x86-64 IA-32e (Intel SDM vol. 3A §4.5), 4 or 5 levels:
//   level 4 PML5E  3 PML4E  2 PDPTE (PS → 1 GiB)  1 PDE (PS → 2 MiB)  0 PTE
//   63 XD | 51..12 address | 10 EA (VT-d, with EAFE) | 7 PS | 6 D | 5 A | 2 U/S | 1 R/W | 0 P
// Arm VMSAv8-64 stage 1, 4 KiB granule (Arm ARM D8.3):
//   level 3 = L0  2 = L1 (block → 1 GiB)  1 = L2 (block → 2 MiB)  0 = L3 (page)
//   table: 62 APTable[1] | 61 APTable[0] | 60 UXNTable | 59 PXNTable | 47..12 next | 1:0 = 11
//   block/page: 54 UXN | 53 PXN | 51 DBM (with TCR.HD: AP[2] is the dirty state) | 10 AF | 9:8 SH | 7 AP[2] | 6 AP[1] | 47..12 out | 1:0 = 01 / 11 (L3)
// Arm VMSAv8-64 stage 2 (IPA → PA): the stage-1 shapes and level map; tables
//   carry no access controls; leaf 55 dirty (software bit) | 54:53 XN | 10 AF
//   | 7 S2AP write | 6 S2AP read.
// VT-d second level (VT-d spec §9.8), 3, 4 or 5 levels (39, 48, 57 bits):
//   level 4 SL-PML5E  3 SL-PML4E  2 SL-PDPE (PS → 1 GiB)  1 SL-PDE (PS → 2 MiB)  0 SL-PTE
//   51..12 address | 9 D | 8 A | 7 PS | 2 X | 1 W | 0 R; neither R nor W: not present.
import * as abi from "../../src/engine/abi.js";

export const KIND_INVALID = abi.KIND_INVALID;
export const KIND_TABLE = abi.KIND_TABLE;
export const KIND_LEAF = abi.KIND_LEAF;

export interface Format {
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

const bit = (n: number): bigint => 1n << BigInt(n);
const pageMask = (level: number): bigint => bit(12 + 9 * level) - 1n;
const ALL_PERMS = abi.PERM_R | abi.PERM_W | abi.PERM_X | abi.PERM_U;

export const X86_PTE_P = bit(0);
export const X86_PTE_RW = bit(1);
export const X86_PTE_US = bit(2);
export const X86_PTE_A = bit(5);
export const X86_PTE_D = bit(6);
export const X86_PTE_PS = bit(7);
export const X86_PTE_XD = bit(63);
export const X86_PTE_EA = bit(10);
export const X86_ADDR_MASK = 0x000ffffffffff000n;
const X86_RSVD_1G = 0x3fffe000n;
const X86_RSVD_2M = 0x001fe000n;

function x86Narrow(perms: number, pte: bigint, flags: number): number {
  let p = perms;
  if ((pte & X86_PTE_RW) === 0n) p &= ~abi.PERM_W;
  if ((pte & X86_PTE_US) === 0n) p &= ~abi.PERM_U;
  if ((flags & abi.CTX_NX) !== 0 && (pte & X86_PTE_XD) !== 0n) p &= ~abi.PERM_X;
  return p;
}

/** A, and EA too when the PASID entry has EAFE. */
function x86Accessed(pte: bigint, flags: number): bigint {
  return (flags & abi.CTX_EAFE) !== 0 ? pte | X86_PTE_A | X86_PTE_EA : pte | X86_PTE_A;
}

export const x86Format: Format = {
  levelShift: (level) => 12 + 9 * level,
  index: (iova, level) => (iova >> BigInt(12 + 9 * level)) & 511n,
  inputFault(iova, inputBits) {
    const upper = BigInt.asIntN(64, iova) >> BigInt(inputBits - 1);
    return upper === 0n || upper === -1n ? 0 : abi.FAULT_NON_CANONICAL;
  },
  rootAddr: (root) => root & X86_ADDR_MASK,
  entryKind(pte, level) {
    if ((pte & X86_PTE_P) === 0n) return KIND_INVALID;
    return level === 0 || (level <= 2 && (pte & X86_PTE_PS) !== 0n) ? KIND_LEAF : KIND_TABLE;
  },
  check(pte, level, rsvdMask) {
    if ((pte & rsvdMask) !== 0n) return abi.FAULT_RESERVED_BIT;
    if ((pte & X86_PTE_PS) === 0n || level === 0) return 0;
    if (level >= 3) return abi.FAULT_RESERVED_BIT;
    return (pte & (level === 2 ? X86_RSVD_1G : X86_RSVD_2M)) !== 0n ? abi.FAULT_RESERVED_BIT : 0;
  },
  tableAddr: (pte) => pte & X86_ADDR_MASK,
  leafAddr: (pte, level) => pte & X86_ADDR_MASK & ~pageMask(level),
  narrowTable: x86Narrow,
  narrowLeaf: x86Narrow,
  fullPerms: () => ALL_PERMS,
  leafFault: () => 0,
  accessed: (pte, flags) => x86Accessed(pte, flags),
  tableAccessed: (pte, flags) => x86Accessed(pte, flags),
  dirtied: (pte, flags) => x86Accessed(pte, flags) | X86_PTE_D,
  isDirty: (pte) => (pte & X86_PTE_D) !== 0n,
  cleaned: (pte) => pte & ~X86_PTE_D,
  makeTable: (addr) => addr | X86_PTE_P | X86_PTE_RW | X86_PTE_US,
  makeLeaf(addr, level, prot, flags) {
    let pte = addr | X86_PTE_P;
    if ((prot & abi.PERM_W) !== 0) pte |= X86_PTE_RW;
    if ((prot & abi.PERM_U) !== 0) pte |= X86_PTE_US;
    if ((prot & abi.PERM_X) === 0 && (flags & abi.CTX_NX) !== 0) pte |= X86_PTE_XD;
    if (level > 0) pte |= X86_PTE_PS;
    return pte;
  },
  leafLevels: () => 0b111,
};

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

export const VTDSL_R = bit(0);
export const VTDSL_W = bit(1);
export const VTDSL_X = bit(2);
export const VTDSL_PS = bit(7);
export const VTDSL_A = bit(8);
export const VTDSL_D = bit(9);
export const VTDSL_ADDR_MASK = 0x000ffffffffff000n;
const VTDSL_RSVD_1G = 0x3ffff000n;
const VTDSL_RSVD_2M = 0x001ff000n;

function vtdNarrow(perms: number, pte: bigint): number {
  let p = perms;
  if ((pte & VTDSL_R) === 0n) p &= ~abi.PERM_R;
  if ((pte & VTDSL_W) === 0n) p &= ~abi.PERM_W;
  if ((pte & VTDSL_X) === 0n) p &= ~abi.PERM_X;
  return p;
}

export const vtdSlFormat: Format = {
  levelShift: (level) => 12 + 9 * level,
  index: (iova, level) => (iova >> BigInt(12 + 9 * level)) & 511n,
  inputFault: (iova, inputBits) => ((iova >> BigInt(inputBits)) === 0n ? 0 : abi.FAULT_INPUT_RANGE),
  rootAddr: (root) => root & VTDSL_ADDR_MASK,
  entryKind(pte, level) {
    if ((pte & (VTDSL_R | VTDSL_W)) === 0n) return KIND_INVALID;
    return level === 0 || (level <= 2 && (pte & VTDSL_PS) !== 0n) ? KIND_LEAF : KIND_TABLE;
  },
  check(pte, level, rsvdMask) {
    if ((pte & VTDSL_ADDR_MASK & rsvdMask) !== 0n) return abi.FAULT_RESERVED_BIT;
    if ((pte & VTDSL_PS) === 0n || level === 0) return 0;
    if (level >= 3) return abi.FAULT_RESERVED_BIT;
    return (pte & (level === 2 ? VTDSL_RSVD_1G : VTDSL_RSVD_2M)) !== 0n ? abi.FAULT_RESERVED_BIT : 0;
  },
  tableAddr: (pte) => pte & VTDSL_ADDR_MASK,
  leafAddr: (pte, level) => pte & VTDSL_ADDR_MASK & ~pageMask(level),
  narrowTable: vtdNarrow,
  narrowLeaf: vtdNarrow,
  // No privilege levels in stage 2: U is always granted.
  fullPerms: () => ALL_PERMS,
  leafFault: () => 0,
  accessed: (pte) => pte | VTDSL_A,
  tableAccessed: (pte) => pte | VTDSL_A,
  dirtied: (pte) => pte | VTDSL_A | VTDSL_D,
  isDirty: (pte) => (pte & VTDSL_D) !== 0n,
  cleaned: (pte) => pte & ~VTDSL_D,
  makeTable: (addr) => addr | VTDSL_R | VTDSL_W,
  makeLeaf(addr, level, prot) {
    let pte = addr;
    if ((prot & abi.PERM_R) !== 0) pte |= VTDSL_R;
    if ((prot & abi.PERM_W) !== 0) pte |= VTDSL_W;
    if ((prot & abi.PERM_X) !== 0) pte |= VTDSL_X;
    if (level > 0) pte |= VTDSL_PS;
    return pte;
  },
  leafLevels: () => 0b111,
};

export function formatById(id: number): Format | undefined {
  if (id === abi.FORMAT_X86_64) return x86Format;
  if (id === abi.FORMAT_ARM64_S1) return arm64Format;
  if (id === abi.FORMAT_VTD_SL) return vtdSlFormat;
  if (id === abi.FORMAT_ARM64_S2) return arm64S2Format;
  return undefined;
}
