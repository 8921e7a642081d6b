// The DMA API's record of what is mapped (dma-debug's view): each live
// mapping by the page of its DMA address. Through an IOMMU every mapping has
// IOVA pages of its own, so a page holds at most one; with dma-direct the DMA
// address is the physical one, and two buffers in one page (or one buffer
// mapped twice) are two mappings of the same page, which the kernel allows.
// So a page holds a short chain, and an unmap takes the mapping that matches
// it best, as dma-debug's hash lookup does.
import type { DmaDirection } from "./dmaapi.js";
import { LiveMappings } from "./live.js";

/** A live dma_map_page (or map_sg): how many pages it covers from its first DMA page, which way. */
export interface LiveMapping {
  readonly pages: bigint;
  readonly direction: DmaDirection;
  readonly sg: boolean;
  next: LiveMapping | undefined;
}

export class MappingRecords {
  private readonly byPage = new LiveMappings<LiveMapping>();
  private count = 0;
  private pageTotal = 0n;

  /** Live mappings. */
  get size(): number { return this.count; }
  /** The pages they cover, added up. */
  get pages(): bigint { return this.pageTotal; }

  add(page: number, pages: bigint, direction: DmaDirection, sg: boolean): void {
    this.byPage.set(page, { pages, direction, sg, next: this.byPage.get(page) });
    this.count++;
    this.pageTotal += pages;
  }

  /**
   * The mapping of this kind (page or scatter list) at `page` with these
   * pages and direction; failing that, the first of its kind (so the caller
   * can say what differs); undefined when there is none.
   */
  find(page: number, sg: boolean, pages: bigint, direction: DmaDirection): LiveMapping | undefined {
    let first: LiveMapping | undefined;
    for (let m = this.byPage.get(page); m !== undefined; m = m.next) {
      if (m.sg !== sg) continue;
      if (m.pages === pages && m.direction === direction) return m;
      first ??= m;
    }
    return first;
  }

  remove(page: number, mapping: LiveMapping): void {
    const head = this.byPage.get(page);
    if (head === mapping) {
      if (mapping.next === undefined) this.byPage.delete(page);
      else this.byPage.set(page, mapping.next);
    } else {
      let m = head;
      while (m !== undefined && m.next !== mapping) m = m.next;
      if (m === undefined) return;
      m.next = mapping.next;
    }
    this.count--;
    this.pageTotal -= mapping.pages;
  }
}
