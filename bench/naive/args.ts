// Argument checks and encodings of the facade, restated for the twin: the
// same inputs are refused with the same errno, and access requests,
// permissions and fault reasons map to the same engine codes (abi.ts).
import * as abi from "../../src/engine/abi.js";
import { IommuError, type Errno } from "../../src/errors.js";
import type { Access, AccessFlags, Address, FaultReason, Perms, Prot } from "../../src/index.js";

export const U64_MAX = (1n << 64n) - 1n;
export const PAGE_SIZE = 4096n;

export function fail(code: Errno, message: string): never {
  throw new IommuError(code, message);
}

export const hex = (v: bigint | number): string => "0x" + v.toString(16);

export function toU64(value: Address, what: string): bigint {
  if (typeof value === "bigint") {
    if (value < 0n || value > U64_MAX) fail("EINVAL", `${what} ${value} is not a 64-bit unsigned value`);
    return value;
  }
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    fail("EINVAL", `${what} must be a bigint or a non-negative safe integer, got ${String(value)}`);
  }
  return BigInt(value);
}

/** A byte count below 2^32. */
export function toLength(value: Address, what: string): number {
  const n = toU64(value, what);
  if (n > 0xffffffffn) fail("EINVAL", `${what} ${n} is too large for one transfer`);
  return Number(n);
}

/** Inclusive last address of [start, start + size); size 0 is EINVAL, wrap past 2^64 EOVERFLOW. */
export function lastOf(start: bigint, size: bigint, what: string): bigint {
  if (size === 0n) fail("EINVAL", `${what}: size is zero`);
  const last = start + size - 1n;
  if (last > U64_MAX) fail("EOVERFLOW", `${what}: ${hex(start)} + ${hex(size)} wraps past 2^64`);
  return last;
}

export function requireAligned(value: bigint, align: bigint, what: string): void {
  if (value % align !== 0n) fail("EINVAL", `${what} ${hex(value)} is not aligned to ${hex(align)}`);
}

export function checkPasid(pasid: number | undefined): number {
  if (pasid === undefined) return 0;
  if (!Number.isInteger(pasid) || pasid < 0 || pasid > 0xfffff) fail("EINVAL", `pasid must be an integer in 0..0xfffff, got ${String(pasid)}`);
  return pasid;
}

export function accessBits(access: Access): number {
  if (access === "read") return abi.ACCESS_READ;
  if (access === "write") return abi.ACCESS_WRITE;
  if (access === "exec") return abi.ACCESS_EXEC;
  if (typeof access !== "object" || access === null) fail("EINVAL", `access must be "read", "write", "exec" or flags, got ${String(access)}`);
  let bits = 0;
  if (access.read) bits |= abi.ACCESS_READ;
  if (access.write) bits |= abi.ACCESS_WRITE;
  if (access.exec) bits |= abi.ACCESS_EXEC;
  if (access.privileged) bits |= abi.ACCESS_PRIV;
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

export function permsOf(bits: number): Perms {
  return {
    read: (bits & abi.PERM_R) !== 0,
    write: (bits & abi.PERM_W) !== 0,
    exec: (bits & abi.PERM_X) !== 0,
    user: (bits & abi.PERM_U) !== 0,
  };
}

/** read defaults to true, user to true, write and exec to false; neither read nor write is EINVAL. */
export function protBits(prot: Prot): number {
  if (typeof prot !== "object" || prot === null) fail("EINVAL", "prot must be an object { read, write, exec, user }");
  const read = prot.read ?? true;
  if (!read && !prot.write) fail("EINVAL", "prot allows neither read nor write");
  let bits = abi.PERM_R;
  if (prot.write) bits |= abi.PERM_W;
  if (prot.exec) bits |= abi.PERM_X;
  if (prot.user ?? true) bits |= abi.PERM_U;
  return bits;
}

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
  if (!name) throw new Error(`naive twin produced unknown status ${status}`);
  return name;
}
