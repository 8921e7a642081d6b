// Access requests, permissions and fault reasons in the facade's words, and
// their engine encodings (abi.ts).
import { bool, options, show } from "./args.js";
import * as abi from "./engine/abi.js";
import { fail } from "./errors.js";

/** What a request asks for. `privileged` is VT-d's privileged-request bit (x86 CPL 0, Arm EL1). */
export type Access = "read" | "write" | "exec" | AccessFlags;
export interface AccessFlags { read?: boolean; write?: boolean; exec?: boolean; privileged?: boolean }

export interface Perms { read: boolean; write: boolean; exec: boolean; user: boolean }

export type FaultReason =
  | "not-present" | "permission" | "reserved-bit" | "non-canonical" | "table-outside-ram"
  | "table-cycle" | "output-outside-ram" | "no-context" | "access-flag" | "address-size" | "input-range";

const REASONS: Record<number, FaultReason> = {
  [abi.FAULT_NOT_PRESENT]: "not-present",
  [abi.FAULT_PERMISSION]: "permission",
  [abi.FAULT_RESERVED_BIT]: "reserved-bit",
  [abi.FAULT_NON_CANONICAL]: "non-canonical",
  [abi.FAULT_TABLE_OUTSIDE_RAM]: "table-outside-ram",
  [abi.FAULT_TABLE_CYCLE]: "table-cycle",
  [abi.FAULT_OUTPUT_OUTSIDE_RAM]: "output-outside-ram",
  [abi.FAULT_NO_CONTEXT]: "no-context",
  [abi.FAULT_ACCESS_FLAG]: "access-flag",
  [abi.FAULT_ADDRESS_SIZE]: "address-size",
  [abi.FAULT_INPUT_RANGE]: "input-range",
};

export function reasonName(status: number): FaultReason {
  const name = REASONS[status];
  if (!name) throw new Error(`engine returned unknown status ${status}`);
  return name;
}

const ACCESS_KEYS = ["read", "write", "exec", "privileged"] as const;

export function accessBits(access: Access): number {
  if (access === "read") return abi.ACCESS_READ;
  if (access === "write") return abi.ACCESS_WRITE;
  if (access === "exec") return abi.ACCESS_EXEC;
  if (typeof access !== "object" || access === null) fail("EINVAL", `access must be "read", "write", "exec" or flags, got ${show(access)}`);
  const a = options(access, "access", ACCESS_KEYS);
  let bits = 0;
  if (bool(a.read, "access.read", false)) bits |= abi.ACCESS_READ;
  if (bool(a.write, "access.write", false)) bits |= abi.ACCESS_WRITE;
  if (bool(a.exec, "access.exec", false)) bits |= abi.ACCESS_EXEC;
  if (bool(a.privileged, "access.privileged", false)) bits |= abi.ACCESS_PRIV;
  if ((bits & 7) === 0) fail("EINVAL", "access asks for neither read, write nor exec");
  return bits;
}

export function accessFlags(bits: number): Required<AccessFlags> {
  return {
    read: (bits & abi.ACCESS_READ) !== 0,
    write: (bits & abi.ACCESS_WRITE) !== 0,
    exec: (bits & abi.ACCESS_EXEC) !== 0,
    privileged: (bits & abi.ACCESS_PRIV) !== 0,
  };
}

/**
 * The permissions a result reports: one frozen object per combination, so a
 * translation allocates none. All sixteen are made at load (a table filled
 * on demand, with a freeze on its path, cost a translation ~5 ns).
 */
const PERM_BITS = abi.PERM_R | abi.PERM_W | abi.PERM_X | abi.PERM_U;
const PERMS: readonly Perms[] = Array.from({ length: PERM_BITS + 1 }, (_, bits) => Object.freeze({
  read: (bits & abi.PERM_R) !== 0,
  write: (bits & abi.PERM_W) !== 0,
  exec: (bits & abi.PERM_X) !== 0,
  user: (bits & abi.PERM_U) !== 0,
}));
export function permsOf(bits: number): Perms {
  return PERMS[bits & PERM_BITS];
}

/**
 * Leaf protection for the builder. read defaults to true, user to true, write
 * and exec to false. Formats that cannot express write-only (x86-64, Arm stage
 * 1: a valid entry is readable) map it readable; stage-2 formats keep it.
 */
export interface Prot { read?: boolean; write?: boolean; exec?: boolean; user?: boolean }

const PROT_KEYS = ["read", "write", "exec", "user"] as const;

export function protBits(prot: Prot): number {
  if (typeof prot !== "object" || prot === null) fail("EINVAL", `prot must be an object { read, write, exec, user }, got ${show(prot)}`);
  const p = options(prot, "prot", PROT_KEYS);
  const read = bool(p.read, "prot.read", true), write = bool(p.write, "prot.write", false);
  const exec = bool(p.exec, "prot.exec", false), user = bool(p.user, "prot.user", true);
  if (!read && !write) fail("EINVAL", "prot allows neither read nor write");
  let bits = read ? abi.PERM_R : 0;
  if (write) bits |= abi.PERM_W;
  if (exec) bits |= abi.PERM_X;
  if (user) bits |= abi.PERM_U;
  return bits;
}
