// Reserved regions as the kernel keeps them per IOMMU group
// (iommu_get_group_resv_regions, drivers/iommu/iommu.c), their sysfs text,
// and the inclusive-range arithmetic VFIO type1 uses to carve the valid
// IOVA list out of the aperture.
import { options, show } from "../args.js";
import { fail } from "../errors.js";
import { hex, lastOf, toU64, type Address } from "../addr.js";

/** Inclusive range of bus addresses, as VFIO reports them (struct vfio_iova_range). */
export interface IovaRange {
  start: bigint;
  /** Inclusive. */
  end: bigint;
}

/** A range given by inclusive end or by size (exactly one of them). */
export interface RangeSpec {
  start: Address;
  end?: Address;
  size?: Address;
}

/**
 * In the kernel's enum iommu_resv_type order; the order decides which of two
 * regions with the same start is listed first.
 */
export type ReservedType = "direct" | "direct-relaxable" | "reserved" | "msi" | "sw-msi";
export const RESERVED_TYPES: readonly ReservedType[] = ["direct", "direct-relaxable", "reserved", "msi", "sw-msi"];

export interface ReservedRegion {
  start: bigint;
  /** Inclusive. */
  end: bigint;
  type: ReservedType;
}

export interface ReservedRegionSpec extends RangeSpec {
  type: ReservedType;
}

const typeRank = (type: ReservedType): number => RESERVED_TYPES.indexOf(type);

/** Checks a start with end or size; wrapping past 2^64 is EOVERFLOW, an end below the start EINVAL. */
export function toIovaRange(given: RangeSpec, what: string, extra: readonly string[] = []): IovaRange {
  if (given === undefined) fail("EINVAL", `${what} must be an object with start and end or size`);
  const spec = options(given, what, ["start", "end", "size", ...extra]) as unknown as RangeSpec;
  const start = toU64(spec.start, `${what} start`);
  const hasEnd = spec.end !== undefined;
  const hasSize = spec.size !== undefined;
  if (hasEnd === hasSize) fail("EINVAL", `${what}: give exactly one of end and size`);
  if (hasSize) return { start, end: lastOf(start, toU64(spec.size!, `${what} size`), what) };
  const end = toU64(spec.end!, `${what} end`);
  if (start > end) fail("EINVAL", `${what}: start ${hex(start)} is above end ${hex(end)}`);
  return { start, end };
}

export function toReservedRegion(spec: ReservedRegionSpec, what: string): ReservedRegion {
  const { start, end } = toIovaRange(spec, what, ["type"]);
  // Read once more only after the shape was checked: a plain object with known keys.
  const type = (spec as { type: unknown }).type;
  if (!(RESERVED_TYPES as readonly unknown[]).includes(type)) fail("EINVAL", `${what}: unknown reserved region type ${show(type)}`);
  return { start, end, type: type as ReservedType };
}

/**
 * The group list the kernel builds by inserting every region in turn: sorted
 * by start (equal starts: lower type first), then regions of the same type
 * that overlap or touch merged into one. Regions of different types are
 * never merged and may overlap. Order of the input does not matter.
 *
 * The kernel tests `next.start > top_end + 1` in u64, so a region ending at
 * 2^64 - 1 never absorbs a later one of its type; bigints do not wrap, so
 * here it does — the mathematically merged list.
 */
export function mergeRegions(regions: readonly ReservedRegion[]): ReservedRegion[] {
  const sorted = regions
    .map((r) => ({ start: r.start, end: r.end, type: r.type }))
    .sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : typeRank(a.type) - typeRank(b.type)));
  const merged: ReservedRegion[] = [];
  // Only the last kept region of each type can absorb the next one of that type.
  const lastOfType = new Map<ReservedType, ReservedRegion>();
  for (const region of sorted) {
    const top = lastOfType.get(region.type);
    if (top !== undefined && region.start <= top.end + 1n) {
      if (region.end > top.end) top.end = region.end;
      continue;
    }
    merged.push(region);
    lastOfType.set(region.type, region);
  }
  return merged;
}

/** The name sysfs prints: a sw-msi window is shown as plain "msi" (iommu_group_resv_type_string). */
export function sysfsTypeName(type: ReservedType): string {
  return type === "sw-msi" ? "msi" : type;
}

const u64Field = (v: bigint): string => "0x" + v.toString(16).padStart(16, "0");

/** /sys/kernel/iommu_groups/N/reserved_regions: `0x%016llx 0x%016llx %s\n` per region, inclusive end. */
export function sysfsText(regions: readonly ReservedRegion[]): string {
  return regions.map((r) => `${u64Field(r.start)} ${u64Field(r.end)} ${sysfsTypeName(r.type)}\n`).join("");
}

/**
 * Whether VFIO may hand the region out as IOVA anyway. vfio_iommu_type1.c
 * skips only IOMMU_RESV_DIRECT_RELAXABLE, both when excluding regions from
 * the valid IOVA list (vfio_iommu_resv_exclude) and when checking them
 * against existing mappings (vfio_iommu_resv_conflict); direct, reserved,
 * msi and sw-msi are all carved out.
 */
export function isRelaxable(type: ReservedType): boolean {
  return type === "direct-relaxable";
}

export function overlaps(a: IovaRange, b: IovaRange): boolean {
  return a.start <= b.end && b.start <= a.end;
}

/** The common part of two ranges, or null when they are disjoint. */
export function intersect(a: IovaRange, b: IovaRange): IovaRange | null {
  if (!overlaps(a, b)) return null;
  return { start: a.start > b.start ? a.start : b.start, end: a.end < b.end ? a.end : b.end };
}

/** The same set of addresses as the fewest sorted ranges: overlapping or touching ranges joined. */
export function unionRanges(ranges: readonly IovaRange[]): IovaRange[] {
  const sorted = ranges.map((r) => ({ start: r.start, end: r.end })).sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const out: IovaRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && r.start <= last.end + 1n) {
      if (r.end > last.end) last.end = r.end;
    } else {
      out.push(r);
    }
  }
  return out;
}

/** Every address of `ranges` that is in no hole, as sorted, disjoint, maximal ranges. */
export function subtractRanges(ranges: readonly IovaRange[], holes: readonly IovaRange[]): IovaRange[] {
  const cuts = unionRanges(holes);
  const out: IovaRange[] = [];
  for (const range of unionRanges(ranges)) {
    let start = range.start;
    let whole = true;
    for (const hole of cuts) {
      if (hole.end < start) continue;
      if (hole.start > range.end) break;
      if (hole.start > start) out.push({ start, end: hole.start - 1n });
      if (hole.end >= range.end) { whole = false; break; }
      start = hole.end + 1n;
    }
    if (whole) out.push({ start, end: range.end });
  }
  return out;
}
