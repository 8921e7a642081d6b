// A map by page number that takes set/delete churn: the DMA API's live
// mappings (by first IOVA page), a shadow's DMA cache (by guest frame). A
// map/unmap cycle sets and deletes a key; V8's Map degrades to O(n) per
// set+delete with n live keys (its table keeps running full of deleted
// slots and rehashes each time), so
// an unmapped record stays in the Map as dead and is reused by the next map
// of that page, and the Map is rebuilt from the live records only when the
// dead ones outnumber them: O(1) per call, amortized.
interface Slot<M> { live: boolean; m: M }

export class LiveMappings<M> {
  private slots = new Map<number, Slot<M>>();
  private dead = 0;
  private count = 0;

  get size(): number { return this.count; }

  get(pfn: number): M | undefined {
    const s = this.slots.get(pfn);
    return s !== undefined && s.live ? s.m : undefined;
  }

  has(pfn: number): boolean {
    const s = this.slots.get(pfn);
    return s !== undefined && s.live;
  }

  set(pfn: number, m: M): void {
    const s = this.slots.get(pfn);
    if (s === undefined) this.slots.set(pfn, { live: true, m });
    else {
      if (!s.live) this.dead--;
      else this.count--;
      s.live = true;
      s.m = m;
    }
    this.count++;
  }

  delete(pfn: number): void {
    const s = this.slots.get(pfn);
    if (s === undefined || !s.live) return;
    s.live = false;
    this.count--;
    if (++this.dead > this.count + 1024) this.compact();
  }

  *values(): IterableIterator<M> {
    for (const s of this.slots.values()) if (s.live) yield s.m;
  }

  /** [pfn, record] of the live ones, as a Map iterates (deleting while iterating is safe). */
  *[Symbol.iterator](): IterableIterator<[number, M]> {
    for (const [k, s] of this.slots) if (s.live) yield [k, s.m];
  }

  private compact(): void {
    const next = new Map<number, Slot<M>>();
    for (const [k, s] of this.slots) if (s.live) next.set(k, s);
    this.slots = next;
    this.dead = 0;
  }
}
