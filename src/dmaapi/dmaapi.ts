// The DMA API a host driver uses for its device: dma_map_page /
// dma_unmap_page and their scatter-gather forms. What every implementation
// shares is here: the argument checks (direction, sizes, RAM), the DMA mask,
// and the record of live mappings that an unmap must match. Where the DMA
// addresses come from and what a map does is the mapper's: dma-iommu over the
// group's default domain (./iommu.ts), or dma-direct for a device with no
// IOMMU in front (./direct.ts).
//
// The kernel WARNs on an unmap that matches nothing (dma-debug); here it is
// EINVAL with nothing changed, as is a size or direction that differs from
// the map's.
import { show, options, knownPlainKeys, list as checkList, integer } from "../args.js";
import { hex, toU64, PAGE_SIZE, U64_MAX, type Address } from "../addr.js";
import { fail } from "../errors.js";
import * as abi from "../engine/abi.js";
import type { MappingRecords } from "./records.js";

export type DmaDirection = "to-device" | "from-device" | "bidirectional";
const DIRECTIONS: readonly DmaDirection[] = ["to-device", "from-device", "bidirectional"];

/** One segment of a scatter list: a physical range. */
export interface SgSegment { hpa: Address; length: number }

/** A mapped scatter list: one IOVA range, and the DMA segments the device is given (merged where the kernel merges). */
export interface SgMapping {
  /** The first DMA page (dma-direct has no IOVA range: the first segment's page). */
  readonly iova: bigint;
  /** The whole pages the segments take, each its own, added up. */
  readonly bytes: bigint;
  readonly segments: readonly { readonly dma: bigint; readonly length: number }[];
  readonly direction: DmaDirection;
}

export interface DmaApiStats {
  /** Live mappings of the group's default domain (map_page and map_sg); dma-direct: of this device. */
  live: number;
  /** IOVA space they hold (rounded as allocated); dma-direct holds none. */
  iovaBytes: bigint;
  treeAllocs: number;
  rcacheHits: number;
  rcacheMisses: number;
  /** This device no longer tries below 4 GiB first (its 32-bit try failed once). */
  above32: boolean;
}

/** A scatter-list segment laid out in whole pages: its offset in its first page, where its pages start from the first DMA page (`at`), how many bytes of pages. */
export interface SgLayout { hpa: bigint; length: number; offset: bigint; at: bigint; bytes: bigint }

/**
 * Where a device's DMA addresses come from and what a mapping does
 * (dma-iommu's or dma-direct's): the DMA API's checks run first, then these.
 * A method that throws has changed nothing.
 */
export interface DmaMapper {
  /** No IOMMU in front of the device: DMA addresses are physical addresses. */
  readonly direct: boolean;
  /** The default domain's id (0: none, dma-direct). */
  readonly domainId: number;
  /** The live mappings an unmap must match (the group's, through an IOMMU). */
  readonly records: MappingRecords;
  /** dma_set_mask took effect. */
  setMask(mask: bigint): void;
  /** dma_map_page of [hpa, hpa + size), `bytes` of whole pages from hpa's page: the DMA address of that page. */
  mapPage(hpa: bigint, size: bigint, bytes: bigint, direction: DmaDirection): bigint;
  /** dma_map_sg: the first DMA page and the segments the device is given. */
  mapSg(layout: readonly SgLayout[], total: bigint, direction: DmaDirection): { iova: bigint; segments: { dma: bigint; length: number }[] };
  /** Lets go of a mapping of `pages` pages from DMA address `base` (its record is already gone). */
  unmap(base: bigint, pages: bigint): void;
  stats(): Omit<DmaApiStats, "live">;
}

const MASK_MIN_BITS = 12;
/** The PCI default until a driver calls dma_set_mask. */
export const DEFAULT_MASK_BITS = 32;

/** A DMA mask width (dma_set_mask): an integer up to 64 bits (EINVAL); below 12 no page is reachable (EIO). */
export function maskBits(bits: unknown, what: string): number {
  if (typeof bits !== "number" || !Number.isInteger(bits) || bits > 64) fail("EINVAL", `${what} must be an integer up to 64, got ${show(bits)}`);
  if (bits < MASK_MIN_BITS) fail("EIO", `a DMA mask of ${bits} bits cannot reach a page`);
  return bits;
}

const pageAlign = (n: bigint): bigint => (n + PAGE_SIZE - 1n) & ~(PAGE_SIZE - 1n);

export class DmaApi {
  private maskBits: number;

  /** @internal `usable` throws when the device's driver no longer owns its DMA (EBUSY / ENODEV). */
  constructor(readonly bdf: string, private readonly mapper: DmaMapper, private readonly ramSize: bigint, bits: number, private readonly usable: () => void) {
    this.maskBits = bits;
    mapper.setMask(this.mask);
  }

  /** No IOMMU in front of the device (dma-direct): a DMA address is the physical address. */
  get direct(): boolean { return this.mapper.direct; }
  /** The DMA mask, as an address bound: 2^bits - 1. */
  get mask(): bigint { return (1n << BigInt(this.maskBits)) - 1n; }
  /** The group's default domain (shared by the group's devices); 0 for dma-direct, which has none. */
  get domainId(): number { return this.mapper.domainId; }

  /** dma_set_mask: the highest address the device can put on the bus, in bits (12..64). EIO below 12 (nothing changed). */
  setMask(bits: number): void {
    this.usable();
    this.maskBits = maskBits(bits, "DMA mask bits");
    this.mapper.setMask(this.mask);
  }

  /**
   * dma_map_page: maps the pages around [hpa, hpa + size) with the
   * direction's permissions and returns the DMA address: through an IOMMU
   * the IOVA plus hpa's offset in its page, with dma-direct hpa itself.
   * ENOMEM (DMA_MAPPING_ERROR) when no IOVA space is left, or, with
   * dma-direct, when the range is above the DMA mask.
   */
  mapPage(hpa: Address, size: Address, direction: DmaDirection): bigint {
    this.usable();
    const dir = checkDirection(direction);
    const phys = toU64(hpa, "hpa"), len = toU64(size, "size");
    this.checkRam(phys, len);
    const offset = phys & (PAGE_SIZE - 1n);
    const bytes = pageAlign(offset + len);
    const base = this.mapper.mapPage(phys, len, bytes, dir);
    this.mapper.records.add(Number(base >> 12n), bytes >> 12n, dir, false);
    return base + offset;
  }

  /** dma_unmap_page: the mapping `mapPage` returned `dma` for, with the same size and direction. Through an IOMMU the IOTLB is invalidated before the IOVA is free again. */
  unmapPage(dma: Address, size: Address, direction: DmaDirection): void {
    this.usable();
    const dir = checkDirection(direction);
    const addr = toU64(dma, "dma address"), len = toU64(size, "size");
    const offset = addr & (PAGE_SIZE - 1n);
    const base = addr - offset;
    const page = Number(base >> 12n);
    const pages = len === 0n || len > U64_MAX - offset ? -1n : pageAlign(offset + len) / PAGE_SIZE;
    const live = this.mapper.records.find(page, false, pages, dir);
    if (live === undefined) fail("EINVAL", `unmap: no page mapping at DMA address ${hex(addr)}`);
    if (live.pages !== pages) fail("EINVAL", `unmap: ${hex(len)} bytes at ${hex(addr)} is not the size that was mapped there`);
    if (live.direction !== dir) fail("EINVAL", `unmap: ${hex(addr)} was mapped ${live.direction}, not ${dir}`);
    this.mapper.records.remove(page, live);
    this.mapper.unmap(base, live.pages);
  }

  /**
   * dma_map_sg. Through an IOMMU: one IOVA range for the whole list, each
   * segment at its own offset within whole pages, in order; segments the
   * device may see as one (a segment ending on a page boundary followed by
   * one starting on a page, up to 64 KiB, not crossing 4 GiB) are merged.
   * dma-direct: each segment at its own physical address, none merged (EIO
   * when one is above the DMA mask). All or nothing.
   */
  mapSg(segments: readonly SgSegment[], direction: DmaDirection): SgMapping {
    this.usable();
    const dir = checkDirection(direction);
    const list = checkList(segments, "scatter list");
    if (list.length === 0) fail("EINVAL", "map_sg: the scatter list is empty");
    // Each segment takes the whole pages around it, one after the other.
    const layout: SgLayout[] = [];
    let total = 0n;
    for (let i = 0; i < list.length; i++) {
      const { hpa, length } = segmentAt(list[i], i);
      this.checkRam(hpa, BigInt(length));
      const offset = hpa & (PAGE_SIZE - 1n);
      const bytes = pageAlign(offset + BigInt(length));
      layout.push({ hpa, length, offset, at: total, bytes });
      total += bytes;
    }
    const { iova, segments: given } = this.mapper.mapSg(layout, total, dir);
    this.mapper.records.add(Number(iova >> 12n), total >> 12n, dir, true);
    return { iova, bytes: total, segments: given, direction: dir };
  }

  /** dma_unmap_sg of what mapSg returned. */
  unmapSg(mapping: SgMapping): void {
    this.usable();
    const m = options(mapping, "sg mapping", ["iova", "bytes", "segments", "direction"] as const) as SgMapping;
    const iova = toU64(m.iova, "sg mapping iova"), bytes = toU64(m.bytes, "sg mapping bytes");
    const dir = checkDirection(m.direction);
    const page = Number(iova >> 12n);
    const live = iova % PAGE_SIZE === 0n ? this.mapper.records.find(page, true, bytes / PAGE_SIZE, dir) : undefined;
    if (live === undefined) fail("EINVAL", `unmap_sg: no scatter-gather mapping at ${hex(iova)}`);
    if (live.pages * PAGE_SIZE !== bytes) fail("EINVAL", `unmap_sg: ${hex(bytes)} bytes at ${hex(iova)} is not the size that was mapped there`);
    if (live.direction !== dir) fail("EINVAL", `unmap_sg: ${hex(iova)} was mapped ${live.direction}, not ${dir}`);
    this.mapper.records.remove(page, live);
    this.mapper.unmap(iova, live.pages);
  }

  stats(): DmaApiStats {
    return { live: this.mapper.records.size, ...this.mapper.stats() };
  }

  /** A streaming mapping is of RAM (a struct page): [hpa, hpa + size) must lie in it. */
  private checkRam(hpa: bigint, size: bigint): void {
    if (size === 0n) fail("EINVAL", "a DMA mapping of zero bytes");
    if (hpa + size > this.ramSize) fail("EINVAL", `[${hex(hpa)}, +${hex(size)}) is not RAM`);
  }
}

const SEGMENT_KEYS = ["hpa", "length"] as const;

/**
 * Segment i of a scatter list. A driver passes a list with every call, so
 * the usual shape (a plain object, a bigint hpa, an integer length) is taken
 * without building the messages a refusal would need; anything else goes
 * through the argument helpers, which convert it or say what is wrong.
 */
function segmentAt(given: unknown, i: number): { hpa: bigint; length: number } {
  if (!knownPlainKeys(given, SEGMENT_KEYS)) {
    const s = options(given, `segment ${i}`, SEGMENT_KEYS) as SgSegment;
    return { hpa: toU64(s.hpa, `segment ${i} hpa`), length: integer(s.length, `segment ${i} length`, 1, 0xffffffff) };
  }
  let hpa: unknown, length: unknown;
  try {
    ({ hpa, length } = given);
  } catch {
    fail("EINVAL", `segment ${i} cannot be read`);
  }
  if (typeof length !== "number" || !Number.isInteger(length) || length < 1 || length > 0xffffffff) length = integer(length, `segment ${i} length`, 1, 0xffffffff);
  if (typeof hpa !== "bigint" || hpa < 0n || hpa > U64_MAX) hpa = toU64(hpa as Address, `segment ${i} hpa`);
  return { hpa: hpa as bigint, length: length as number };
}

function checkDirection(direction: DmaDirection): DmaDirection {
  if (!DIRECTIONS.includes(direction)) fail("EINVAL", `DMA direction must be 'to-device', 'from-device' or 'bidirectional', got ${show(direction)}`);
  return direction;
}

/** to-device: the device reads memory; from-device: it writes memory (prot bits, user set as the page-table API sets it). */
export function protOf(direction: DmaDirection): number {
  return (direction !== "from-device" ? abi.PERM_R : 0) | (direction !== "to-device" ? abi.PERM_W : 0) | abi.PERM_U;
}
