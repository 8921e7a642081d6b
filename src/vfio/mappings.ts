// The container's DMA mappings (type1's vfio_dma tree): one entry per
// successful MAP_DMA, never merged with neighbours, kept sorted by IOVA so
// overlap, containment and "free hole" questions are a binary search.
import type { Process } from "./process.js";

export interface DmaMapping {
  iova: bigint;
  /** Inclusive. */
  last: bigint;
  vaddr: bigint;
  process: Process;
  read: boolean;
  write: boolean;
}

export class MappingList {
  private readonly list: DmaMapping[] = [];

  get size(): number { return this.list.length; }
  all(): readonly DmaMapping[] { return this.list; }

  /** Index of the first mapping whose last byte is at or after addr. */
  private firstEndingAtOrAfter(addr: bigint): number {
    let lo = 0, hi = this.list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.list[mid].last < addr) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The mapping holding byte addr, if any. */
  containing(addr: bigint): DmaMapping | undefined {
    const m = this.list[this.firstEndingAtOrAfter(addr)];
    return m && m.iova <= addr ? m : undefined;
  }

  /** Whether any mapping shares a byte with [first, last]. */
  overlaps(first: bigint, last: bigint): boolean {
    const m = this.list[this.firstEndingAtOrAfter(first)];
    return m !== undefined && m.iova <= last;
  }

  /** Every mapping lying wholly inside [first, last], lowest first. */
  inside(first: bigint, last: bigint): DmaMapping[] {
    const out: DmaMapping[] = [];
    for (let i = this.firstEndingAtOrAfter(first); i < this.list.length && this.list[i].iova <= last; i++) {
      const m = this.list[i];
      if (m.iova >= first && m.last <= last) out.push(m);
    }
    return out;
  }

  insert(m: DmaMapping): void {
    this.list.splice(this.firstEndingAtOrAfter(m.iova), 0, m);
  }

  remove(m: DmaMapping): void {
    const i = this.list.indexOf(m, this.firstEndingAtOrAfter(m.iova));
    if (i >= 0) this.list.splice(i, 1);
  }
}
