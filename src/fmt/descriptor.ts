// What a page-table format tells the facade: its name, the engine format ids
// it resolves to (and what each may be in a two-stage domain), and how its
// options become a table shape. One descriptor per format (src/fmt/<name>.ts),
// listed once in src/fmt/index.ts; src/format.ts and the domain checks ask
// the registry, never a format by name.
import type { PageTableOptions } from "../format.js";

export const PAGE_4K = 0x1000n;
export const PAGE_2M = 0x200000n;
export const PAGE_1G = 0x40000000n;
/** The leaf sizes of the 4 KiB-granule radix formats. */
export const RADIX_PAGE_SIZES: readonly bigint[] = [PAGE_4K, PAGE_2M, PAGE_1G];

/** A request switch (DomainFlags key) that only some formats have. */
export type FormatSwitch = "eafe" | "hd";

/** One engine format id of a format name (Arm's stage 1 and stage 2 are two). */
export interface FormatVariant {
  readonly id: number;
  /** For messages: "arm64 stage 2". */
  readonly label: string;
  /**
   * Its place in a two-stage domain: "stage1", the stage 1 of a nested domain
   * (tables at GPAs, read through stage 2); "phys-stage1", a stage 1 whose
   * tables are host-physical, only its output going through stage 2 (a GPU's
   * GGTT); "stage2", what a two-stage domain runs over; undefined:
   * single-stage only.
   */
  readonly nesting?: "stage1" | "phys-stage1" | "stage2";
  readonly switches?: readonly FormatSwitch[];
}

/** A table's shape as its format resolves the options (the rest of ResolvedFormat is common). */
export interface FormatShape {
  id: number;
  levels: number;
  inputBits: number;
  /** The inclusive input ranges a mapping may lie in (one of them, wholly). */
  inputRanges: [bigint, bigint][];
  /** The output width when none is given, and the range of widths the format takes. */
  defaultWidth: number;
  minWidth: number;
  maxWidth: number;
  /** The leaf sizes the builder may be given. */
  pageSizes: readonly bigint[];
  /** Whether XD (bit 63) forbids fetch rather than being reserved (only x86-64 can be without). */
  nx: boolean;
  defaultAccessedDirty: boolean;
  /** The frames the root table spans, contiguous (default 1; a flat array such as ggtt's takes more). */
  rootFrames?: number;
}

export interface FormatDescriptor<N extends string = string> {
  readonly name: N;
  readonly variants: readonly FormatVariant[];
  /** Option keys only this format reads (besides the common ones of PageTableOptions). */
  readonly optionKeys?: readonly string[];
  /** The options' shape; EINVAL for an option the format does not take or a value it cannot be. */
  resolve(options: PageTableOptions): FormatShape;
}

/** The one input range of a table whose input addresses start at zero. */
export const fromZero = (inputBits: number): [bigint, bigint][] => [[0n, (1n << BigInt(inputBits)) - 1n]];
