// The twin's VT-d second-level entries (VT-d spec §9.8), 3, 4 or 5 levels (39, 48, 57 bits):
//   level 4 SL-PML5E  3 SL-PML4E  2 SL-PDPE (PS → 1 GiB)  1 SL-PDE (PS → 2 MiB)  0 SL-PTE
//   51..12 address | 9 D | 8 A | 7 PS | 2 X | 1 W | 0 R; neither R nor W: not present.
import * as abi from "../../../src/engine/abi.js";
import { ALL_PERMS, KIND_INVALID, KIND_LEAF, KIND_TABLE, bit, pageMask, type Format } from "./codec.js";

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
  id: abi.FORMAT_VTD_SL,
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
