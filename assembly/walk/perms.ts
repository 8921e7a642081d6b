// Whether effective permissions allow an access. Formats reduce their entry
// bits to PERM_R/W/X/U; the request's privilege rules come from the
// context's flags. For a given request and context the rule is a mask of
// permission bits that must all be present, computed once per call, so an
// IOTLB hit is checked with one AND and compare, whatever the format.
//
// A read needs R (always granted by formats without a read bit: x86-64, Arm
// stage 1; stage-2 formats can map write-only). A privileged request needs
// SRE; with WPE (CR0.WP) a privileged write needs W. An unprivileged request
// needs U, and W to write. Fetch needs X. An IOTLB hit for a write also
// needs PERM_DIRTY (else the walk must set a dirty bit).
import { CTX_SRE, CTX_WPE, ACCESS_READ, ACCESS_WRITE, ACCESS_EXEC, ACCESS_PRIV, PERM_R, PERM_W, PERM_X, PERM_U, PERM_DIRTY } from "../abi";

// No entry ever has this bit: a request that can never be allowed.
export const PERM_NEVER: u32 = 1 << 31;

@inline export function accessNeed(access: u32, flags: u32): u32 {
  let need: u32 = (access & ACCESS_READ) != 0 ? PERM_R : 0;
  const write = (access & ACCESS_WRITE) != 0;
  if ((access & ACCESS_PRIV) != 0) {
    if ((flags & CTX_SRE) == 0) need |= PERM_NEVER;
    if (write && (flags & CTX_WPE) != 0) need |= PERM_W;
  } else {
    if ((access & 7) != 0) need |= PERM_U;
    if (write) need |= PERM_W;
  }
  if ((access & ACCESS_EXEC) != 0) need |= PERM_X;
  return need;
}

// What an IOTLB hit must carry: the permissions, and for a write the dirty
// bit. A walk grants PERM_DIRTY whenever a write has nothing left to set, so
// this costs no extra walks; asking it whatever the context's flags say keeps
// a nested context right, whose stage 2 may track dirty pages while its
// stage 1 sets no dirty bits at all.
@inline export function hitNeed(access: u32, flags: u32): u32 {
  let need = accessNeed(access, flags);
  if ((access & ACCESS_WRITE) != 0) need |= PERM_DIRTY;
  return need;
}

@inline export function permsAllow(perms: u32, need: u32): bool { return (perms & need) == need; }
