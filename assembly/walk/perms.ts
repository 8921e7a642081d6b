// Whether effective permissions allow an access. Formats reduce their entry
// bits to PERM_R/W/X/U; the request's privilege rules come from the
// context's flags, so the IOTLB can check a hit without knowing the format.
//
// A privileged request needs SRE; with WPE (CR0.WP) a privileged write needs
// W. An unprivileged request needs U, and W to write. Fetch needs X.
import { CTX_SRE, CTX_WPE, ACCESS_WRITE, ACCESS_EXEC, ACCESS_PRIV, PERM_W, PERM_X, PERM_U } from "../abi";

@inline export function permsAllow(perms: u32, access: u32, flags: u32): bool {
  if ((access & ACCESS_PRIV) != 0) {
    if ((flags & CTX_SRE) == 0) return false;
    if ((access & ACCESS_WRITE) != 0 && (flags & CTX_WPE) != 0 && (perms & PERM_W) == 0) return false;
  } else {
    if ((access & 7) != 0 && (perms & PERM_U) == 0) return false;
    if ((access & ACCESS_WRITE) != 0 && (perms & PERM_W) == 0) return false;
  }
  return (access & ACCESS_EXEC) == 0 || (perms & PERM_X) != 0;
}
