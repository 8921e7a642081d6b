// The DMA API a host driver uses for its device (dma-iommu over the group's
// default domain): dma_map_page / dma_unmap_page and their scatter-gather
// forms, with IOVAs from the domain's IOVA allocator (iova.c). Facts from
// drivers/iommu/dma-iommu.c (docs/mediated-devices.md A10):
// - iommu_dma_alloc_iova: the limit is the smaller of the device's DMA mask
//   and the domain's aperture; a PCI device first tries below 4 GiB, and after
//   its first failure there always asks the full limit; the allocation is the
//   allocator's fast path (rcache, then the tree size-aligned, then a flush of
//   the rcache and one retry).
// - the direction gives the permissions: to-device reads memory (read),
//   from-device writes it (write), bidirectional both.
// - iommu_dma_map_page maps the whole pages around [hpa, hpa + size) and
//   returns the IOVA plus hpa's offset in its page; a failure gives the IOVA
//   back and is DMA_MAPPING_ERROR (ENOMEM here).
// - __iommu_dma_unmap unmaps, syncs the IOTLB (strict mode) and only then
//   frees the IOVA, so no device reaches the pages once the call returns.
// The kernel WARNs on an unmap that matches nothing (dma-debug); here it is
// EINVAL with nothing changed, as is a size or direction that differs from
// the map's.
import { show, options, list as checkList, integer } from "../args.js";
import { hex, toU64, PAGE_SIZE, U64_MAX, type Address } from "../addr.js";
import { fail } from "../errors.js";
import * as abi from "../engine/abi.js";
import type { IovaStats } from "./iova.js";
import { LiveMappings } from "./live.js";

export type DmaDirection = "to-device" | "from-device" | "bidirectional";
const DIRECTIONS: readonly DmaDirection[] = ["to-device", "from-device", "bidirectional"];

/** What the DMA API needs of an IOVA allocator (iova.c; the twin brings its own). */
export interface IovaAllocator {
  allocFast(size: Address, limitPfn: Address, flushRcache: boolean): bigint | undefined;
  freeFast(pfn: Address, size: Address): void;
  reserve(lo: Address, hi: Address): void;
  stats(): IovaStats;
}

/** The default domain as the DMA API drives it: its page table and IOTLB, through the data plane (no argument parsing on the way). */
export interface DmaApiDomain {
  readonly id: number;
  /** abi status; nothing changed on an error. */
  map(iova: bigint, last: bigint, hpa: bigint, prot: number): number;
  /** Bytes unmapped. */
  unmap(iova: bigint, last: bigint): bigint;
  /** The IOTLB forgets [iova, last], every PASID. */
  flush(iova: bigint, last: bigint): void;
}

/** A live dma_map_page (or map_sg): how many pages it mapped from its first IOVA page, which way. */
interface LiveMapping { pages: bigint; direction: DmaDirection; sg: boolean }

/**
 * dma-iommu's per-domain state (the iommu_dma_cookie): the default domain,
 * its IOVA allocator and the live mappings (by first IOVA page), shared by
 * every device of the group.
 */
export class DmaCookie {
  readonly live = new LiveMappings<LiveMapping>();
  constructor(readonly domain: DmaApiDomain, readonly iova: IovaAllocator, readonly apertureEnd: bigint, readonly ramSize: bigint) {}
}

/** One segment of a scatter list: a physical range. */
export interface SgSegment { hpa: Address; length: number }

/** A mapped scatter list: one IOVA range, and the DMA segments the device is given (merged where the kernel merges). */
export interface SgMapping {
  readonly iova: bigint;
  readonly bytes: bigint;
  readonly segments: readonly { readonly dma: bigint; readonly length: number }[];
  readonly direction: DmaDirection;
}

export interface DmaApiStats {
  /** Live mappings of the group's default domain (map_page and map_sg). */
  live: number;
  /** IOVA space they hold (rounded as allocated). */
  iovaBytes: bigint;
  treeAllocs: number;
  rcacheHits: number;
  rcacheMisses: number;
  /** This device no longer tries below 4 GiB first (its 32-bit try failed once). */
  above32: boolean;
}

const MASK_MIN_BITS = 12;
/** dma_parms defaults: segments of at most 64 KiB, never crossing a 4 GiB boundary. */
const MAX_SEG_SIZE = 0x10000n;
const SEG_BOUNDARY = 1n << 32n;

const pageAlign = (n: bigint): bigint => (n + PAGE_SIZE - 1n) & ~(PAGE_SIZE - 1n);

const BELOW_4G_PFN = 0xfffffn;

export class DmaApi {
  private maskBits = 32;
  /** The highest pfn an allocation may use: the mask and the aperture, whichever is lower (set with the mask). */
  private limitPfn: bigint;
  /** dev->iommu->pci_32bit_workaround: try below 4 GiB first, until that fails once. */
  private pci32 = true;

  /** @internal `usable` throws when the device's driver no longer owns its DMA (EBUSY / ENODEV). */
  constructor(readonly bdf: string, private readonly cookie: DmaCookie, private readonly usable: () => void) {
    this.limitPfn = this.limit() >> 12n;
  }

  private limit(): bigint { return this.mask < this.cookie.apertureEnd ? this.mask : this.cookie.apertureEnd; }

  /** The DMA mask, as an address bound: 2^bits - 1. */
  get mask(): bigint { return (1n << BigInt(this.maskBits)) - 1n; }
  /** The group's default domain (shared by the group's devices). */
  get domainId(): number { return this.cookie.domain.id; }

  /** dma_set_mask: the highest address the device can put on the bus, in bits (12..64). EIO below 12 (nothing changed). */
  setMask(bits: number): void {
    this.usable();
    if (typeof bits !== "number" || !Number.isInteger(bits) || bits > 64) fail("EINVAL", `DMA mask bits must be an integer up to 64, got ${show(bits)}`);
    if (bits < MASK_MIN_BITS) fail("EIO", `a DMA mask of ${bits} bits cannot reach a page`);
    this.maskBits = bits;
    this.limitPfn = this.limit() >> 12n;
  }

  /**
   * dma_map_page: maps the pages around [hpa, hpa + size) with the
   * direction's permissions and returns the DMA address (the IOVA plus hpa's
   * offset in its page). ENOMEM when no IOVA space is left (DMA_MAPPING_ERROR).
   */
  mapPage(hpa: Address, size: Address, direction: DmaDirection): bigint {
    this.usable();
    const dir = checkDirection(direction);
    const phys = toU64(hpa, "hpa"), len = toU64(size, "size");
    this.checkRam(phys, len);
    const offset = phys & (PAGE_SIZE - 1n);
    const bytes = pageAlign(offset + len);
    const iova = this.allocIova(bytes);
    this.mapOrFree(iova, phys - offset, bytes, dir);
    this.cookie.live.set(Number(iova >> 12n), { pages: bytes >> 12n, direction: dir, sg: false });
    return iova + offset;
  }

  /** dma_unmap_page: the mapping `mapPage` returned `dma` for, with the same size and direction. The IOTLB is invalidated before the IOVA is free again. */
  unmapPage(dma: Address, size: Address, direction: DmaDirection): void {
    this.usable();
    const dir = checkDirection(direction);
    const addr = toU64(dma, "dma address"), len = toU64(size, "size");
    const offset = addr & (PAGE_SIZE - 1n);
    const iova = addr - offset;
    const live = this.cookie.live.get(Number(iova >> 12n));
    if (live === undefined || live.sg) fail("EINVAL", `unmap: no page mapping at DMA address ${hex(addr)}`);
    if (len === 0n || len > U64_MAX - offset || pageAlign(offset + len) / PAGE_SIZE !== live.pages) fail("EINVAL", `unmap: ${hex(len)} bytes at ${hex(addr)} is not the size that was mapped there`);
    if (live.direction !== dir) fail("EINVAL", `unmap: ${hex(addr)} was mapped ${live.direction}, not ${dir}`);
    this.unmapAndFree(iova, live.pages);
  }

  /**
   * dma_map_sg: one IOVA range for the whole list, each segment at its own
   * offset within whole pages, in order; segments the device may see as one
   * (a segment ending on a page boundary followed by one starting on a page,
   * up to 64 KiB, not crossing 4 GiB) are merged. All or nothing.
   */
  mapSg(segments: readonly SgSegment[], direction: DmaDirection): SgMapping {
    this.usable();
    const dir = checkDirection(direction);
    const list = checkList(segments, "scatter list").map((given, i) => {
      const s = options(given, `segment ${i}`, ["hpa", "length"] as const) as SgSegment;
      const length = integer(s.length, `segment ${i} length`, 1, 0xffffffff);
      const hpa = toU64(s.hpa, `segment ${i} hpa`);
      this.checkRam(hpa, BigInt(length));
      return { hpa, length };
    });
    if (list.length === 0) fail("EINVAL", "map_sg: the scatter list is empty");
    // Each segment takes the whole pages around it, one after the other.
    const layout = list.map((s) => ({ ...s, offset: s.hpa & (PAGE_SIZE - 1n), at: 0n, bytes: 0n }));
    let total = 0n;
    for (const s of layout) {
      s.at = total;
      s.bytes = pageAlign(s.offset + BigInt(s.length));
      total += s.bytes;
    }
    const iova = this.allocIova(total);
    const domain = this.cookie.domain;
    for (let k = 0; k < layout.length; k++) {
      const s = layout[k];
      if (domain.map(iova + s.at, iova + s.at + s.bytes - 1n, s.hpa - s.offset, protOf(dir)) === abi.ST_OK) continue;
      // All or nothing: what was mapped goes, the IOVA goes back.
      for (const done of layout.slice(0, k)) domain.unmap(iova + done.at, iova + done.at + done.bytes - 1n);
      domain.flush(iova, iova + total - 1n);
      this.cookie.iova.freeFast(iova >> 12n, total >> 12n);
      fail("ENOMEM", `map_sg: the IOMMU page table could not map ${hex(total)} bytes`);
    }
    this.cookie.live.set(Number(iova >> 12n), { pages: total >> 12n, direction: dir, sg: true });
    return { iova, bytes: total, segments: mergeSegments(iova, layout), direction: dir };
  }

  /** dma_unmap_sg of what mapSg returned. */
  unmapSg(mapping: SgMapping): void {
    this.usable();
    const m = options(mapping, "sg mapping", ["iova", "bytes", "segments", "direction"] as const) as SgMapping;
    const iova = toU64(m.iova, "sg mapping iova");
    const live = this.cookie.live.get(Number(iova >> 12n));
    if (iova % PAGE_SIZE !== 0n || live === undefined || !live.sg) fail("EINVAL", `unmap_sg: no scatter-gather mapping at ${hex(iova)}`);
    if (checkDirection(m.direction) !== live.direction) fail("EINVAL", `unmap_sg: ${hex(iova)} was mapped ${live.direction}, not ${m.direction}`);
    this.unmapAndFree(iova, live.pages);
  }

  stats(): DmaApiStats {
    const s = this.cookie.iova.stats();
    let pages = 0n;
    for (const m of this.cookie.live.values()) pages += m.pages;
    return { live: this.cookie.live.size, iovaBytes: pages * PAGE_SIZE, treeAllocs: s.treeAllocs, rcacheHits: s.rcacheHits, rcacheMisses: s.rcacheMisses, above32: !this.pci32 };
  }

  /** A streaming mapping is of RAM (a struct page): [hpa, hpa + size) must lie in it. */
  private checkRam(hpa: bigint, size: bigint): void {
    if (size === 0n) fail("EINVAL", "a DMA mapping of zero bytes");
    if (hpa + size > this.cookie.ramSize) fail("EINVAL", `[${hex(hpa)}, +${hex(size)}) is not RAM`);
  }

  /** iommu_dma_alloc_iova: below 4 GiB first while that works for this device, then the whole limit. */
  private allocIova(bytes: bigint): bigint {
    const pages = bytes >> 12n;
    let pfn: bigint | undefined;
    if (this.pci32 && this.limitPfn > BELOW_4G_PFN) {
      pfn = this.cookie.iova.allocFast(pages, BELOW_4G_PFN, false);
      if (pfn === undefined) this.pci32 = false;
    }
    pfn ??= this.cookie.iova.allocFast(pages, this.limitPfn, true);
    if (pfn === undefined) fail("ENOMEM", `no ${hex(bytes)}-byte IOVA range is free below ${hex(this.limit())} (DMA_MAPPING_ERROR)`);
    return pfn << 12n;
  }

  private mapOrFree(iova: bigint, hpa: bigint, bytes: bigint, dir: DmaDirection): void {
    if (this.cookie.domain.map(iova, iova + bytes - 1n, hpa, protOf(dir)) === abi.ST_OK) return;
    this.cookie.iova.freeFast(iova >> 12n, bytes >> 12n);
    fail("ENOMEM", `the IOMMU page table could not map ${hex(bytes)} bytes at ${hex(iova)} (DMA_MAPPING_ERROR)`);
  }

  /** Strict unmap: the pages go, the IOTLB forgets them, then the IOVA is free. */
  private unmapAndFree(iova: bigint, pages: bigint): void {
    const last = iova + (pages << 12n) - 1n;
    this.cookie.domain.unmap(iova, last);
    this.cookie.domain.flush(iova, last);
    this.cookie.iova.freeFast(iova >> 12n, pages);
    this.cookie.live.delete(Number(iova >> 12n));
  }
}

function checkDirection(direction: DmaDirection): DmaDirection {
  if (!DIRECTIONS.includes(direction)) fail("EINVAL", `DMA direction must be 'to-device', 'from-device' or 'bidirectional', got ${show(direction)}`);
  return direction;
}

/** to-device: the device reads memory; from-device: it writes memory (prot bits, user set as the page-table API sets it). */
function protOf(direction: DmaDirection): number {
  return (direction !== "from-device" ? abi.PERM_R : 0) | (direction !== "to-device" ? abi.PERM_W : 0) | abi.PERM_U;
}

/** __finalise_sg's merging: a segment joins the previous when it starts on a page the previous ended on, up to 64 KiB, not across 4 GiB. */
function mergeSegments(iova: bigint, layout: readonly { offset: bigint; at: bigint; length: number; bytes: bigint }[]): { dma: bigint; length: number }[] {
  const out: { dma: bigint; length: number }[] = [];
  for (const s of layout) {
    const dma = iova + s.at + s.offset;
    const prev = out[out.length - 1];
    const joins = prev !== undefined && s.offset === 0n && prev.dma + BigInt(prev.length) === dma
      && BigInt(prev.length + s.length) <= MAX_SEG_SIZE && prev.dma / SEG_BOUNDARY === (dma + BigInt(s.length) - 1n) / SEG_BOUNDARY;
    if (joins) prev.length += s.length;
    else out.push({ dma, length: s.length });
  }
  return out;
}
