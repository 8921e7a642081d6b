// The operands of a domain's own calls, checked once for the facade and the
// twin alike: what a nested domain may be built from, and what range an
// invalidation names.
import { toU64, lastOf, requireAligned, hex, PAGE_SIZE, type Address } from "./addr.js";
import { fail } from "./errors.js";
import { bool, options, typedArray } from "./args.js";
import { nestingIds, resolveFormat, type PageTableOptions, type ResolvedFormat } from "./format.js";
import { checkPasid } from "./dma.js";

/** The stage-2 domain a nested domain is asked to run over (the facade's Domain or the twin's). */
export interface Stage2Candidate {
  readonly stage2: unknown;
  readonly format: ResolvedFormat;
  liveId(): number;
}

/**
 * A two-stage domain's stage 1, over a live, single-stage stage-2 domain
 * (vtd-sl or Arm stage 2: src/fmt's nesting roles). A stage-1 format whose
 * tables live in guest memory (x86-64, Arm stage 1) needs its root, a 4 KiB
 * aligned GPA; one whose tables are host-physical (ggtt) gets a table of its
 * own from the options, as a single-stage domain does (root: undefined).
 * EINVAL (or ENODEV for a destroyed stage 2) otherwise.
 */
export function nestedDomainArgs(options: PageTableOptions & { root?: Address }, stage2: Stage2Candidate): { format: ResolvedFormat; root: bigint | undefined } {
  const format = resolveFormat(options);
  const stage1s = nestingIds("stage1"), physS1s = nestingIds("phys-stage1"), stage2s = nestingIds("stage2");
  const physTables = physS1s.ids.includes(format.id);
  if (!physTables && !stage1s.ids.includes(format.id)) fail("EINVAL", `a nested domain's stage 1 is ${stage1s.names}, or ${physS1s.names} (tables in host memory)`);
  if (stage2.stage2) fail("EINVAL", "stage 2 of a nested domain cannot itself be nested");
  if (!stage2s.ids.includes(stage2.format.id)) fail("EINVAL", `a nested domain's stage 2 is ${stage2s.names}`);
  stage2.liveId();
  if (physTables) return { format, root: undefined };
  // A stage 1 in guest memory has no default root: toU64 refuses undefined (EINVAL).
  const root = toU64(options.root as Address, "root");
  requireAligned(root, PAGE_SIZE, "root");
  return { format, root };
}

/** What a domain translates with (the facade's Domain and the twin's build theirs from it). */
export interface DomainParts<T, D> {
  /** The page table it owns or was given; none for a stage 1 in guest memory. */
  table: T | undefined;
  ownsTable: boolean;
  format: ResolvedFormat;
  /** The root table: an HPA, or a GPA for a stage 1 in guest memory. */
  root: bigint;
  stage2: D | undefined;
  /** A stage 1 over stage 2 whose tables are host-physical (CTX_S1_PHYS_TABLES). */
  physTables: boolean;
}

/**
 * A domain's parts from its (shape-checked) options: over a given page
 * table, a two-stage domain (nestedDomainArgs), or over a table made from
 * the options. Nothing is made until every check has passed.
 */
export function domainParts<T extends { format: ResolvedFormat; root: bigint }, D extends Stage2Candidate>(
  options: PageTableOptions & { pageTable?: T; stage2?: D; root?: Address }, makeTable: (o: PageTableOptions) => T): DomainParts<T, D> {
  const { stage2, pageTable: given, ...tableOptions } = options;
  if (stage2) {
    const { format, root } = nestedDomainArgs(options, stage2);
    if (root !== undefined) return { table: undefined, ownsTable: false, format, root, stage2, physTables: false };
    const table = makeTable(tableOptions);
    return { table, ownsTable: true, format: table.format, root: table.root, stage2, physTables: true };
  }
  const table = given ?? makeTable(tableOptions);
  return { table, ownsTable: given === undefined, format: table.format, root: table.root, stage2: undefined, physTables: false };
}

export interface InvalidateOptions {
  /** Only this PASID's entries (default: every PASID of the domain). */
  pasid?: number;
  /** Start of a page range (4 KiB aligned); without it the whole domain (or PASID) is invalidated. */
  iova?: Address;
  /** Number of 4 KiB pages in the range (default 1). */
  npages?: Address;
  /** Only leaf entries changed. The IOTLB caches only leaf translations, so this narrows nothing. */
  leaf?: boolean;
}

/** What an invalidation covers: a PASID or all of them, and a page range or everything. */
export interface InvalidateScope { pasid: number | undefined; range: { first: bigint; last: bigint } | undefined }

export function invalidateScope(given: InvalidateOptions): InvalidateScope {
  const opts = options(given, "invalidate options", ["pasid", "iova", "npages", "leaf"] as const) as InvalidateOptions;
  bool(opts.leaf, "invalidate leaf", false);
  const pasid = opts.pasid === undefined ? undefined : checkPasid(opts.pasid);
  if (opts.iova === undefined) {
    if (opts.npages !== undefined) fail("EINVAL", "invalidate: npages without iova");
    return { pasid, range: undefined };
  }
  const first = toU64(opts.iova, "iova");
  requireAligned(first, PAGE_SIZE, "invalidate iova");
  const npages = toU64(opts.npages ?? 1, "npages");
  if (npages === 0n) fail("EINVAL", "invalidate: npages is zero");
  const size = npages * PAGE_SIZE;
  if (size > 1n << 64n) fail("EOVERFLOW", `invalidate: ${npages} pages is more than the address space`);
  return { pasid, range: { first, last: lastOf(first, size, `invalidate ${hex(first)}`) } };
}

/** A translation's options: the PASID its request carries (0: none). */
export function translatePasid(opts: unknown): number {
  if (opts === undefined) return 0;
  return checkPasid(options(opts, "translate options", ["pasid"] as const).pasid as number | undefined);
}

/** translateBatch's arrays, all checked before anything is translated. Returns how many addresses. */
export function batchArrays(iovas: unknown, out: unknown, status: unknown): number {
  const n = typedArray(iovas, "translateBatch iovas", BigUint64Array).length;
  if (typedArray(out, "translateBatch out", BigUint64Array).length < n || typedArray(status, "translateBatch status", Uint8Array).length < n) {
    fail("EINVAL", `translateBatch: out and status need ${n} entries`);
  }
  return n;
}
