// The twin's x86-64 IA-32e entries (Intel SDM vol. 3A §4.5), 4 or 5 levels:
//   level 4 PML5E  3 PML4E  2 PDPTE (PS → 1 GiB)  1 PDE (PS → 2 MiB)  0 PTE
//   63 XD | 51..12 address | 10 EA (VT-d, with EAFE) | 7 PS | 6 D | 5 A | 2 U/S | 1 R/W | 0 P
import * as abi from "../../../src/engine/abi.js";
import { ALL_PERMS, KIND_INVALID, KIND_LEAF, KIND_TABLE, bit, pageMask, type Format } from "./codec.js";

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
  id: abi.FORMAT_X86_64,
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
