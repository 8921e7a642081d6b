// Page-table formats and their configuration: variants are data (levels,
// input and output address width, page sizes, flags), not new formats.
import * as abi from "./engine/abi.js";
import { fail } from "./errors.js";
import { toU64 } from "./addr.js";
import { bool, integer, list, options, show } from "./args.js";
import { PAGE_4K } from "./fmt/descriptor.js";
import { FORMATS, formatNamed, variantOf, variantsFor } from "./fmt/index.js";

/** A format the engine has: the names in src/fmt/index.ts's list. */
export type FormatName = (typeof FORMATS)[number]["name"];

export { PAGE_4K, PAGE_2M, PAGE_1G } from "./fmt/descriptor.js";

export interface PageTableOptions {
  /**
   * Default "x86-64" (IA-32e, VT-d first level). "arm64" is VMSAv8-64 with the
   * 4 KiB granule, stage 1 (TTBR0 region) or stage 2; "vtd-sl" is VT-d second
   * level; "ggtt" is an Intel GPU global GTT (one level of `entries` 4 KiB
   * pages, 39-bit output).
   */
  format?: FormatName;
  /** x86-64: 4 (48-bit input) or 5 (57-bit). vtd-sl: 3, 4 or 5 (39/48/57-bit). Default 4. Arm derives it from inputBits; ggtt has 1. */
  levels?: 1 | 3 | 4 | 5;
  /** arm64: input-address size, 64 - T0SZ (25..48). vtd-sl: 39, 48 or 57. Default 48. ggtt: 12 + log2(entries), another way to give its size. */
  inputBits?: number;
  /**
   * ggtt: the number of entries, a power of two from 512 to 2^20 (a 2 MiB to
   * 4 GiB graphics memory space); required unless inputBits is given. The
   * table is a contiguous array of entries × 8 bytes at the root.
   */
  entries?: number;
  /** arm64: translation stage, 1 (default) or 2. vtd-sl is a second stage (2 or left out); x86-64 takes none. */
  stage?: 1 | 2;
  /** Physical-address width (x86 MAXPHYADDR / VT-d HAW, Arm IPS). Default 52 (x86), 48 (arm64); ggtt: 39 only. */
  physAddrWidth?: number;
  /** Leaf sizes the builder may use. Default 4 KiB, 2 MiB and 1 GiB (ggtt: 4 KiB only). */
  pageSizes?: readonly (bigint | number)[];
  /** x86: XD (bit 63) forbids fetch; without NX it is a reserved bit. Default true. */
  nx?: boolean;
  /** An existing root table (4 KiB aligned, in RAM, all its rootFrames); default: new zeroed frames owned by the table. */
  root?: bigint | number;
}

/** Request-side switches of a domain (VT-d first level: SRE, WPE, A/D update, EAFE; Arm: TCR.HA, TCR.HD). */
export interface DomainFlags {
  /** Supervisor (privileged) requests allowed. Default true. */
  sre?: boolean;
  /** Write protect: privileged writes need write permission. Default true. */
  wpe?: boolean;
  /** Set accessed/dirty bits as the hardware walks (Arm: TCR.HA). Default true for x86-64, false for arm64 (AF = 0 faults). */
  accessedDirty?: boolean;
  /** x86-64 (VT-d first level): EAFE, set the extended-accessed bit (10) along with A. Needs accessedDirty. Default false. */
  eafe?: boolean;
  /**
   * arm64 stage 1: TCR.HD, hardware dirty state. A leaf with DBM (bit 51) and
   * AP[2] read-only is writable-clean: a write clears AP[2] instead of
   * faulting. Needs accessedDirty (TCR.HA). Default false.
   */
  hd?: boolean;
}

export interface ResolvedFormat {
  name: FormatName;
  id: number;
  levels: number;
  inputBits: number;
  physAddrWidth: number;
  pageSizeMask: bigint;
  nx: boolean;
  /** The inclusive input ranges a mapping may lie in (one of them, wholly). */
  inputRanges: [bigint, bigint][];
  defaultAccessedDirty: boolean;
  /** The frames the root table spans, contiguous: 1, but entries / 512 for a ggtt. */
  rootFrames: number;
}

const TABLE_KEYS = ["format", "levels", "inputBits", "stage", "physAddrWidth", "pageSizes", "nx", "root", ...new Set(FORMATS.flatMap((f) => f.optionKeys ?? []))];
const FLAG_KEYS = ["sre", "wpe", "accessedDirty", "eafe", "hd"] as const;
/** What a domain takes besides a table's options: an existing table, or the stage 2 it nests over. */
export const DOMAIN_KEYS = ["pageTable", "stage2"] as const;

/**
 * A page table's or domain's options, checked for shape before anything is
 * made: known keys only (plus `extra`, e.g. a domain's pageTable / stage2),
 * numbers that are integers, booleans that are booleans, page sizes and the
 * root as addresses. The values' ranges are resolveFormat's and contextFlags'.
 */
export function tableOptions(value: unknown, what: string, extra: readonly string[] = []): PageTableOptions & DomainFlags & Record<string, unknown> {
  const o = options(value, what, [...TABLE_KEYS, ...FLAG_KEYS, ...extra]) as Record<string, unknown>;
  if (o.format !== undefined && typeof o.format !== "string") fail("EINVAL", `${what}: format must be a string such as "x86-64", got ${show(o.format)}`);
  for (const key of ["levels", "inputBits", "stage", "physAddrWidth"]) if (o[key] !== undefined) integer(o[key], `${what}: ${key}`, 0, 64);
  if (o.pageSizes !== undefined) o.pageSizes = list(o.pageSizes, `${what}: pageSizes`).map((size, i) => toU64(size as bigint, `${what}: pageSizes[${i}]`));
  if (o.root !== undefined) o.root = toU64(o.root as bigint, `${what}: root`);
  for (const key of ["nx", ...FLAG_KEYS]) if (o[key] !== undefined) bool(o[key], `${what}: ${key}`, false);
  return o as PageTableOptions & DomainFlags & Record<string, unknown>;
}

export function resolveFormat(options: PageTableOptions): ResolvedFormat {
  const name = options.format ?? "x86-64";
  const descriptor = formatNamed(name);
  if (!descriptor) fail("EOPNOTSUPP", `page-table format ${show(name)} is not supported (supported: ${FORMATS.map((f) => f.name).join(", ")})`);
  for (const key of FORMATS.flatMap((f) => f.optionKeys ?? [])) {
    if ((options as Record<string, unknown>)[key] !== undefined && !descriptor.optionKeys?.includes(key)) fail("EINVAL", `${name} has no ${key} option`);
  }
  const shape = descriptor.resolve(options);
  const physAddrWidth = options.physAddrWidth ?? shape.defaultWidth;
  const { minWidth, maxWidth } = shape;
  if (!Number.isInteger(physAddrWidth) || physAddrWidth < minWidth || physAddrWidth > maxWidth) fail("EINVAL", `physAddrWidth must be ${minWidth}..${maxWidth}, got ${show(physAddrWidth)}`);
  let pageSizeMask = 0n;
  for (const size of options.pageSizes ?? shape.pageSizes) {
    const s = toU64(size, "page size");
    if (!shape.pageSizes.includes(s)) fail("EINVAL", `${name} has no ${s}-byte pages`);
    pageSizeMask |= s;
  }
  if ((pageSizeMask & PAGE_4K) === 0n) fail("EINVAL", "page sizes must include 4 KiB");
  return {
    name: descriptor.name, id: shape.id, levels: shape.levels, inputBits: shape.inputBits, physAddrWidth, pageSizeMask,
    inputRanges: shape.inputRanges, nx: shape.nx, defaultAccessedDirty: shape.defaultAccessedDirty, rootFrames: shape.rootFrames ?? 1,
  };
}

/** The engine's CTX_* bits for a format and its switches; EINVAL for a switch the format lacks. */
export function contextFlags(format: ResolvedFormat, flags: DomainFlags): number {
  let bits = 0;
  if (flags.sre ?? true) bits |= abi.CTX_SRE;
  if (flags.wpe ?? true) bits |= abi.CTX_WPE;
  const ad = flags.accessedDirty ?? format.defaultAccessedDirty;
  if (ad) bits |= abi.CTX_AD;
  const switches = variantOf(format.id).switches ?? [];
  if (flags.eafe) {
    if (!switches.includes("eafe")) fail("EINVAL", `eafe is a VT-d first-level switch (${labelsWith("eafe")}), not ${format.name}'s`);
    if (!ad) fail("EINVAL", "eafe needs accessedDirty: EA is set along with A");
    bits |= abi.CTX_EAFE;
  }
  if (flags.hd) {
    if (!switches.includes("hd")) fail("EINVAL", `hd (TCR.HD) is a switch of ${labelsWith("hd")}, not ${format.name}'s`);
    if (!ad) fail("EINVAL", "hd (TCR.HD) needs accessedDirty (TCR.HA)");
    bits |= abi.CTX_HD;
  }
  if (format.nx) bits |= abi.CTX_NX;
  return bits;
}

const labelsWith = (key: "eafe" | "hd"): string => [...FORMATS.flatMap((f) => f.variants)].filter((v) => v.switches?.includes(key)).map((v) => v.label).join(", ");

/** The engine format ids that may be a nested domain's stage 1, or what it runs over, with their names for messages. */
export function nestingIds(nesting: "stage1" | "phys-stage1" | "stage2"): { ids: number[]; names: string } {
  const vs = variantsFor(nesting);
  return { ids: vs.map((v) => v.id), names: vs.map((v) => v.label).join(" or ") };
}

/** Writes a context for a page table or domain into the engine; flags from contextFlags. */
export function setContext(wasm: { contextSet(id: number, format: number, levels: number, inputBits: number, flags: number, paWidth: number, root: bigint, pgsizes: bigint): void },
  id: number, f: ResolvedFormat, flags: number, root: bigint): void {
  wasm.contextSet(id, f.id, f.levels, f.inputBits, flags, f.physAddrWidth, root, f.pageSizeMask);
}
