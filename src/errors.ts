// Control-plane errors carry the errno name Linux would return, plus data
// (which entry, how many were processed) where the kernel reports it.

export type Errno =
  | "EINVAL" | "EEXIST" | "ENOSPC" | "ENOMEM" | "EPERM" | "EBUSY" | "ENOENT" | "EFAULT"
  | "EOVERFLOW" | "EADDRINUSE" | "EMSGSIZE" | "EOPNOTSUPP" | "ENODEV" | "EACCES" | "EIO";

export class IommuError extends Error {
  readonly code: Errno;
  /** For batched calls: how many entries were handled before the failing one. */
  declare readonly processed?: number;

  constructor(code: Errno, message: string, details: { processed?: number } = {}) {
    super(`${code}: ${message}`);
    this.name = "IommuError";
    this.code = code;
    if (details.processed !== undefined) (this as { processed?: number }).processed = details.processed;
  }
}

export function fail(code: Errno, message: string): never {
  throw new IommuError(code, message);
}
