// The twin's Intel GPU global GTT entries (the package's model): one level,
// entry n at root + 8n for the 4 KiB page n; an index at or above `entries`
// is an input-range fault.
//   38..12 page address | 1 W | 0 P; every other bit ignored. No A/D, no
//   privilege levels, no execute control.
import * as abi from "../../../src/engine/abi.js";
import { ALL_PERMS, KIND_INVALID, KIND_LEAF, bit, type Format } from "./codec.js";

export const GGTT_P = bit(0);
export const GGTT_W = bit(1);
export const GGTT_ADDR_MASK = 0x0000007ffffff000n;

export const ggttFormat: Format = {
  id: abi.FORMAT_GGTT,
  levelShift: () => 12,
  index: (gma) => gma >> 12n,
  inputFault: (gma, inputBits) => ((gma >> BigInt(inputBits)) === 0n ? 0 : abi.FAULT_INPUT_RANGE),
  rootAddr: (root) => root & ~0xfffn,
  entryKind: (pte) => ((pte & GGTT_P) !== 0n ? KIND_LEAF : KIND_INVALID),
  check: () => 0,
  tableAddr: (pte) => pte & GGTT_ADDR_MASK,
  leafAddr: (pte) => pte & GGTT_ADDR_MASK,
  narrowTable: (perms) => perms,
  narrowLeaf: (perms, pte) => ((pte & GGTT_W) !== 0n ? perms : perms & ~abi.PERM_W),
  fullPerms: () => ALL_PERMS,
  leafFault: () => 0,
  // Nothing to set; a dirty scan counts every leaf.
  accessed: (pte) => pte,
  tableAccessed: (pte) => pte,
  dirtied: (pte) => pte,
  isDirty: () => true,
  cleaned: (pte) => pte,
  makeTable: () => 0n,
  makeLeaf: (addr, _level, prot) => ((prot & abi.PERM_W) !== 0 ? addr | GGTT_P | GGTT_W : addr | GGTT_P),
  leafLevels: () => 0b1,
};
