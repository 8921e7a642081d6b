// dma-direct (kernel/dma/direct.{c,h}): a device with no IOMMU in front of
// it puts physical addresses on the bus, so a DMA address is the physical
// address (phys_to_dma is the identity here: no bus offset). Nothing is
// mapped and nothing is allocated; what remains is dma_capable: the range
// must end at or below the DMA mask. Where it does not, the kernel bounces
// through swiotlb when it has one, else dma_direct_map_page returns
// DMA_MAPPING_ERROR (with a WARN) and dma_direct_map_sg unmaps what it did
// and returns -EIO (what dma_map_sgtable passes on). The model has no swiotlb:
// mapPage is ENOMEM (DMA_MAPPING_ERROR, as for exhausted IOVA space), mapSg EIO.
// Segments are not merged: dma_direct_map_sg gives each its own address.
import { hex } from "../addr.js";
import { fail } from "../errors.js";
import type { DmaApiStats, DmaMapper, SgLayout } from "./dmaapi.js";
import { MappingRecords } from "./records.js";

export class DirectMapper implements DmaMapper {
  readonly direct = true;
  readonly domainId = 0;
  /** The device's own: with no IOMMU there is no group-wide cookie. */
  readonly records = new MappingRecords();
  private mask = 0n;

  setMask(mask: bigint): void { this.mask = mask; }

  mapPage(hpa: bigint, size: bigint): bigint {
    if (hpa + size - 1n > this.mask) fail("ENOMEM", `[${hex(hpa)}, +${hex(size)}) is above the DMA mask ${hex(this.mask)} and there is no swiotlb to bounce it (DMA_MAPPING_ERROR)`);
    return hpa & ~0xfffn;
  }

  mapSg(layout: readonly SgLayout[]): { iova: bigint; segments: { dma: bigint; length: number }[] } {
    for (const [i, s] of layout.entries()) {
      if (s.hpa + BigInt(s.length) - 1n > this.mask) fail("EIO", `map_sg: segment ${i} [${hex(s.hpa)}, +${hex(s.length)}) is above the DMA mask ${hex(this.mask)} and there is no swiotlb to bounce it`);
    }
    return { iova: layout[0].hpa - layout[0].offset, segments: layout.map((s) => ({ dma: s.hpa, length: s.length })) };
  }

  /** Nothing was mapped: the record was all there was. */
  unmap(): void {}

  stats(): Omit<DmaApiStats, "live"> {
    return { iovaBytes: 0n, treeAllocs: 0, rcacheHits: 0, rcacheMisses: 0, above32: false };
  }
}
