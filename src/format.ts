// Page-table formats and their configuration: variants are data (levels,
// address width, page sizes, flags), not new formats.
import * as abi from "./engine/abi.js";
import { fail } from "./errors.js";

export type FormatName = "x86-64";

export const PAGE_4K = 0x1000n;
export const PAGE_2M = 0x200000n;
export const PAGE_1G = 0x40000000n;

export interface PageTableOptions {
  format?: FormatName;
  /** 4 (48-bit input) or 5 (57-bit input). Default 4. */
  levels?: 4 | 5;
  /** Physical-address width: entry address bits above it are reserved. Default 52. */
  physAddrWidth?: number;
  /** Leaf sizes the builder may use. Default 4 KiB, 2 MiB and 1 GiB. */
  pageSizes?: (bigint | number)[];
  /** XD (bit 63) forbids fetch; without NX it is a reserved bit. Default true. */
  nx?: boolean;
  /** An existing root table (4 KiB aligned, in RAM); default: a new zeroed frame owned by the table. */
  root?: bigint | number;
}

/** Request-side switches of a domain (VT-d first level: SRE, WPE, EAFE-like A/D update). */
export interface DomainFlags {
  /** Supervisor (privileged) requests allowed. Default true. */
  sre?: boolean;
  /** Write protect: privileged writes need R/W. Default true. */
  wpe?: boolean;
  /** Set accessed/dirty bits as the hardware walks. Default true. */
  accessedDirty?: boolean;
}

export interface ResolvedFormat {
  name: FormatName;
  id: number;
  levels: number;
  physAddrWidth: number;
  pageSizeMask: bigint;
  nx: boolean;
  /** Number of input-address bits (48 or 57). */
  inputBits: number;
}

const FORMATS: Record<FormatName, { id: number; levels: number[]; pageSizes: bigint[] }> = {
  "x86-64": { id: abi.FORMAT_X86_64, levels: [4, 5], pageSizes: [PAGE_4K, PAGE_2M, PAGE_1G] },
};

export function resolveFormat(options: PageTableOptions): ResolvedFormat {
  const name = options.format ?? "x86-64";
  const spec = FORMATS[name];
  if (!spec) fail("EOPNOTSUPP", `page-table format ${String(name)} is not supported (supported: ${Object.keys(FORMATS).join(", ")})`);
  const levels = options.levels ?? 4;
  if (!spec.levels.includes(levels)) fail("EINVAL", `${name} has ${spec.levels.join(" or ")} levels, not ${levels}`);
  const physAddrWidth = options.physAddrWidth ?? 52;
  if (!Number.isInteger(physAddrWidth) || physAddrWidth < 32 || physAddrWidth > 52) fail("EINVAL", `physAddrWidth must be 32..52, got ${physAddrWidth}`);
  let pageSizeMask = 0n;
  for (const size of options.pageSizes ?? spec.pageSizes) {
    const s = BigInt(size);
    if (!spec.pageSizes.includes(s)) fail("EINVAL", `${name} has no ${s}-byte pages`);
    pageSizeMask |= s;
  }
  if ((pageSizeMask & PAGE_4K) === 0n) fail("EINVAL", "page sizes must include 4 KiB");
  return { name, id: spec.id, levels, physAddrWidth, pageSizeMask, nx: options.nx ?? true, inputBits: 12 + 9 * levels };
}

export function contextFlags(format: ResolvedFormat, flags: DomainFlags): number {
  let bits = 0;
  if (flags.sre ?? true) bits |= abi.CTX_SRE;
  if (flags.wpe ?? true) bits |= abi.CTX_WPE;
  if (flags.accessedDirty ?? true) bits |= abi.CTX_AD;
  if (format.nx) bits |= abi.CTX_NX;
  return bits;
}
