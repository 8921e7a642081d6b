// Control-plane errors carry the errno name Linux would return, plus data
// (which entry, how many were processed) where the kernel reports it.

export type Errno =
  | "EINVAL" | "EEXIST" | "ENOSPC" | "ENOMEM" | "EPERM" | "EBUSY" | "ENOENT" | "EFAULT"
  | "EOVERFLOW" | "EADDRINUSE" | "EMSGSIZE" | "EOPNOTSUPP" | "ENODEV" | "EACCES" | "EIO" | "E2BIG";

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

/**
 * What the kernel would do with a BUG_ON: the calling task dies holding the
 * container's lock, and every later call on that container would block for
 * ever. Not an IommuError (no errno reaches user space): the container is
 * wedged, and every later call on it throws this again.
 */
export class KernelBug extends Error {
  /** The kernel function whose BUG_ON this stands for. */
  readonly where: string;

  constructor(where: string, message: string) {
    super(`kernel BUG in ${where}: ${message}`);
    this.name = "KernelBug";
    this.where = where;
  }
}

/** A WARN the kernel prints and carries on after (the model keeps them in host.warnings). */
export interface KernelWarning {
  /** The kernel function that warns. */
  readonly where: string;
  readonly reason: string;
}
