// dma-iommu: a device's DMA addresses are IOVAs of its group's default
// domain, from the domain's IOVA allocator (iova.c). Facts from
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
import { hex, type Address } from "../addr.js";
import { fail } from "../errors.js";
import * as abi from "../engine/abi.js";
import type { IovaStats } from "./iova.js";
import { protOf, type DmaApiStats, type DmaDirection, type DmaMapper, type SgLayout } from "./dmaapi.js";
import { MappingRecords } from "./records.js";

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
  /** Every (iova, last, hpa) triple, all or nothing (abi status). */
  mapList(entries: BigUint64Array, prot: number): number;
  /** Bytes unmapped. */
  unmap(iova: bigint, last: bigint): bigint;
  /** The IOTLB forgets [iova, last], every PASID. */
  flush(iova: bigint, last: bigint): void;
}

/**
 * dma-iommu's per-domain state (the iommu_dma_cookie): the default domain,
 * its IOVA allocator and the live mappings (by first IOVA page), shared by
 * every device of the group.
 */
export class DmaCookie {
  readonly records = new MappingRecords();
  constructor(readonly domain: DmaApiDomain, readonly iova: IovaAllocator, readonly apertureEnd: bigint) {}
}

/** dma_parms defaults: segments of at most 64 KiB, never crossing a 4 GiB boundary. */
const MAX_SEG_SIZE = 0x10000n;
const SEG_BOUNDARY = 1n << 32n;
const BELOW_4G_PFN = 0xfffffn;

/** One device's dma-iommu: the group's cookie, and this device's IOVA limit and 32-bit flag. */
export class IommuMapper implements DmaMapper {
  readonly direct = false;
  /** The highest pfn an allocation may use: the mask and the aperture, whichever is lower (set with the mask). */
  private limitPfn = 0n;
  private limit = 0n;
  /** dev->iommu->pci_32bit_workaround: try below 4 GiB first, until that fails once. */
  private pci32 = true;

  constructor(private readonly cookie: DmaCookie) {}

  get domainId(): number { return this.cookie.domain.id; }
  get records(): MappingRecords { return this.cookie.records; }

  setMask(mask: bigint): void {
    this.limit = mask < this.cookie.apertureEnd ? mask : this.cookie.apertureEnd;
    this.limitPfn = this.limit >> 12n;
  }

  mapPage(hpa: bigint, _size: bigint, bytes: bigint, direction: DmaDirection): bigint {
    const iova = this.allocIova(bytes);
    if (this.cookie.domain.map(iova, iova + bytes - 1n, hpa & ~0xfffn, protOf(direction)) === abi.ST_OK) return iova;
    this.cookie.iova.freeFast(iova >> 12n, bytes >> 12n);
    fail("ENOMEM", `the IOMMU page table could not map ${hex(bytes)} bytes at ${hex(iova)} (DMA_MAPPING_ERROR)`);
  }

  /**
   * One IOVA range for the whole list, every segment mapped in it by one
   * data-plane call (iommu_map_sg), all or nothing: on a failure the engine
   * has undone the segments it mapped, and the IOVA goes back.
   */
  mapSg(layout: readonly SgLayout[], total: bigint, direction: DmaDirection): { iova: bigint; segments: { dma: bigint; length: number }[] } {
    if (layout.length > abi.MAP_LIST_MAX) fail("ENOMEM", `map_sg: ${layout.length} segments; the model maps at most ${abi.MAP_LIST_MAX} in one list`);
    const iova = this.allocIova(total);
    const entries = new BigUint64Array(layout.length * 3);
    for (let k = 0; k < layout.length; k++) {
      const s = layout[k];
      entries[3 * k] = iova + s.at;
      entries[3 * k + 1] = iova + s.at + s.bytes - 1n;
      entries[3 * k + 2] = s.hpa - s.offset;
    }
    if (this.cookie.domain.mapList(entries, protOf(direction)) !== abi.ST_OK) {
      this.cookie.iova.freeFast(iova >> 12n, total >> 12n);
      fail("ENOMEM", `map_sg: the IOMMU page table could not map ${hex(total)} bytes`);
    }
    return { iova, segments: mergeSegments(iova, layout) };
  }

  /** Strict unmap: the pages go, the IOTLB forgets them, then the IOVA is free. */
  unmap(iova: bigint, pages: bigint): void {
    const last = iova + (pages << 12n) - 1n;
    this.cookie.domain.unmap(iova, last);
    this.cookie.domain.flush(iova, last);
    this.cookie.iova.freeFast(iova >> 12n, pages);
  }

  stats(): Omit<DmaApiStats, "live"> {
    const s = this.cookie.iova.stats();
    return { iovaBytes: this.cookie.records.pages << 12n, treeAllocs: s.treeAllocs, rcacheHits: s.rcacheHits, rcacheMisses: s.rcacheMisses, above32: !this.pci32 };
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
    if (pfn === undefined) fail("ENOMEM", `no ${hex(bytes)}-byte IOVA range is free below ${hex(this.limit)} (DMA_MAPPING_ERROR)`);
    return pfn << 12n;
  }
}

/** __finalise_sg's merging: a segment joins the previous when it starts on a page the previous ended on, up to 64 KiB, not across 4 GiB. */
function mergeSegments(iova: bigint, layout: readonly SgLayout[]): { dma: bigint; length: number }[] {
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
