// Whether effective permissions allow an access, from the request's bits and
// the context's switches. A read needs R; a privileged request needs SRE, and
// W to write under WPE; an unprivileged one needs U, and W to write; a fetch needs X.
import * as abi from "../../src/engine/abi.js";

export function permsAllow(perms: number, access: number, flags: number): boolean {
  const write = (access & abi.ACCESS_WRITE) !== 0;
  if ((access & abi.ACCESS_READ) !== 0 && (perms & abi.PERM_R) === 0) return false;
  if ((access & abi.ACCESS_PRIV) !== 0) {
    if ((flags & abi.CTX_SRE) === 0) return false;
    if (write && (flags & abi.CTX_WPE) !== 0 && (perms & abi.PERM_W) === 0) return false;
  } else {
    if ((access & 7) !== 0 && (perms & abi.PERM_U) === 0) return false;
    if (write && (perms & abi.PERM_W) === 0) return false;
  }
  return (access & abi.ACCESS_EXEC) === 0 || (perms & abi.PERM_X) !== 0;
}

/**
 * An IOTLB hit for a write also needs PERM_DIRTY: else a walk has a dirty bit
 * to set (in either stage of a nested entry; walks without A/D grant it).
 */
export function hitAllows(perms: number, access: number, flags: number): boolean {
  if ((access & abi.ACCESS_WRITE) !== 0 && (perms & abi.PERM_DIRTY) === 0) return false;
  return permsAllow(perms, access, flags);
}
