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
 * A nested domain's stage-1 format and root: a stage-1 format (x86-64 or Arm
 * stage 1: src/fmt's nesting roles) over a live, single-stage stage-2 domain
 * (vtd-sl or Arm stage 2), the root a 4 KiB-aligned GPA. EINVAL (or ENODEV
 * for a destroyed stage 2) otherwise.
 */
export function nestedDomainArgs(options: PageTableOptions & { root: Address }, stage2: Stage2Candidate): { format: ResolvedFormat; root: bigint } {
  const format = resolveFormat(options);
  const stage1s = nestingIds("stage1"), stage2s = nestingIds("stage2");
  if (!stage1s.ids.includes(format.id)) fail("EINVAL", `a nested domain's stage 1 is ${stage1s.names}`);
  if (stage2.stage2) fail("EINVAL", "stage 2 of a nested domain cannot itself be nested");
  if (!stage2s.ids.includes(stage2.format.id)) fail("EINVAL", `a nested domain's stage 2 is ${stage2s.names}`);
  stage2.liveId();
  const root = toU64(options.root, "root");
  requireAligned(root, PAGE_SIZE, "root");
  return { format, root };
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
