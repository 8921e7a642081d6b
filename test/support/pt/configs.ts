// Every page-table configuration the engine accepts, found by asking it:
// the format names are the format registry's (src/fmt/index.ts), and
// for each name a grid of options (levels, inputBits, stage) and of leaf
// sizes and output widths is offered to createPageTable; what it accepts is
// what the self-tests run on. A format, level count, input size or page
// size added later is picked up without touching the tests.
import { FORMATS } from "../../../src/fmt/index.js";
import { IommuError, type Host, type PageTableOptions, type ResolvedFormat } from "../../../src/index.js";
import { sizeName } from "./leaves.js";

/** The names of the formats in the registry (src/fmt/index.ts), which FormatName is made of. */
export function formatNames(): string[] {
  const names = FORMATS.map((f) => f.name);
  if (names.length === 0) throw new Error("the format registry (src/fmt/index.ts) names no format");
  return names;
}

export interface TableConfig {
  /** e.g. "arm64 stage 2, 4 levels, 48-bit input". */
  label: string;
  /** Options that make this configuration (no pageSizes, no physAddrWidth). */
  options: PageTableOptions;
  name: string;
  /** The engine's format id (tells Arm stage 1 from stage 2). */
  formatId: number;
  levels: number;
  inputBits: number;
  inputRanges: [bigint, bigint][];
  /** Output width when none is given. */
  defaultPhysAddrWidth: number;
  /** Every output width accepted. */
  physAddrWidths: number[];
  /** Every size accepted in pageSizes, ascending. */
  pageSizes: bigint[];
  /** Every accepted pageSizes set (each ascending), smallest set first. */
  pageSizeSets: bigint[][];
}

const LEVELS = [undefined, 1, 2, 3, 4, 5, 6, 7];
const INPUT_BITS = [undefined, ...Array.from({ length: 64 - 12 + 1 }, (_, i) => 12 + i)];
const STAGES = [undefined, 1, 2, 3];
const CANDIDATE_SIZES = Array.from({ length: 48 - 12 + 1 }, (_, i) => 1n << BigInt(12 + i));

function tryCreate(host: Host, options: PageTableOptions): { format: ResolvedFormat } | undefined {
  try {
    const pt = host.createPageTable(options);
    const format = pt.format;
    pt.destroy();
    return { format };
  } catch (e) {
    if (e instanceof IommuError) return undefined;
    throw e;
  }
}

function subsets<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let mask = 1; mask < 1 << items.length; mask++) out.push(items.filter((_, i) => mask & (1 << i)));
  return out;
}

/** Every configuration createPageTable accepts on `host`, one per (format, format id, levels, input size). */
export function discoverConfigs(host: Host): TableConfig[] {
  const found = new Map<string, { options: PageTableOptions; format: ResolvedFormat }>();
  for (const name of formatNames()) {
    for (const levels of LEVELS) for (const inputBits of INPUT_BITS) for (const stage of STAGES) {
      const options = { format: name, ...(levels !== undefined && { levels }), ...(inputBits !== undefined && { inputBits }), ...(stage !== undefined && { stage }) } as PageTableOptions;
      const made = tryCreate(host, options);
      if (!made) continue;
      const f = made.format;
      const key = `${f.name}/${f.id}/${f.levels}/${f.inputBits}`;
      // The first options that make it are the fewest (the grid tries "not given" first).
      if (!found.has(key)) found.set(key, { options, format: f });
    }
  }
  const configs: TableConfig[] = [];
  for (const { options, format: f } of found.values()) {
    const alone = CANDIDATE_SIZES.filter((s) => tryCreate(host, { ...options, pageSizes: [s] }));
    if (alone.length === 0) throw new Error(`${f.name}: no single page size is accepted`);
    const smallest = alone[0];
    const sizes = CANDIDATE_SIZES.filter((s) => s === smallest || tryCreate(host, { ...options, pageSizes: [smallest, s] }));
    const sets = subsets(sizes).filter((set) => tryCreate(host, { ...options, pageSizes: set }))
      .sort((x, y) => x.length - y.length);
    const widths = Array.from({ length: 64 }, (_, i) => i + 1).filter((w) => tryCreate(host, { ...options, physAddrWidth: w }));
    // Name the stage only for a format where the stage option makes a difference.
    const staged = [...found.values()].some((x) => x.format.name === f.name && x.options.stage !== undefined);
    const stage = staged ? `stage ${options.stage ?? 1}, ` : "";
    configs.push({
      label: `${f.name} ${stage}${f.levels} levels, ${f.inputBits}-bit input`,
      options, name: f.name, formatId: f.id, levels: f.levels, inputBits: f.inputBits,
      inputRanges: f.inputRanges, defaultPhysAddrWidth: f.physAddrWidth,
      physAddrWidths: widths, pageSizes: sizes, pageSizeSets: sets,
    });
  }
  return configs.sort((a, b) => a.name.localeCompare(b.name) || a.formatId - b.formatId || a.levels - b.levels || a.inputBits - b.inputBits);
}

/**
 * One configuration per (format, format id, levels): the widest input size
 * (the kernel's kunit_fmt_cfgs list one configuration per level count too).
 */
export function widestPerLevels(configs: readonly TableConfig[]): TableConfig[] {
  const best = new Map<string, TableConfig>();
  for (const c of configs) {
    const key = `${c.name}/${c.formatId}/${c.levels}`;
    const prev = best.get(key);
    if (!prev || c.inputBits > prev.inputBits) best.set(key, c);
  }
  return [...best.values()];
}

/**
 * The sizes of a set that can be leaves in this configuration: a size is a
 * leaf at the level whose entries span it, and only levels the table has
 * can hold one (a 1 GiB size offered to a 2-level, 30-bit table is never
 * used). 4 KiB granule: level k entries span 2^(12 + 9k).
 */
export function leafSizes(config: TableConfig, set: readonly bigint[]): bigint[] {
  return set.filter((s) => {
    const lg = s.toString(2).length - 1;
    return (lg - 12) % 9 === 0 && (lg - 12) / 9 < config.levels && lg <= config.inputBits;
  });
}

export function setName(set: readonly bigint[]): string {
  return set.map(sizeName).join(" + ");
}
