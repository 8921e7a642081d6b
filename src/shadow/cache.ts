// The shadow's DMA cache (gvt's gvt_dma cache): one mapping per guest frame
// however many shadow entries use it, reference-counted, so a thousand
// entries over one page cost one pin and one map; the last reference unmaps.
// It also keeps which shadow slots use each frame, so a revoked frame's
// entries can be found and cleared.
import type { ShadowMapper } from "./mapper.js";
import { LiveMappings } from "../dmaapi/live.js";

interface Cached { gfn: number; bus: bigint; slots: Set<number> }

// Frames are keyed as numbers (a gfn is below 2^52), which a Map hashes much
// faster than BigInts, in a map that takes the set/delete churn of frames
// mapped and let go over and over (LiveMappings).

export interface CacheStats { hits: number; misses: number; live: number }

export class DmaCache {
  private readonly byGfn = new LiveMappings<Cached>();
  private hits = 0;
  private misses = 0;

  constructor(private readonly mapper: ShadowMapper) {}

  /** The bus address of gfn for shadow slot `slot` (one reference more), or undefined when the mapper cannot map it. */
  get(gfn: number, slot: number): bigint | undefined {
    let c = this.byGfn.get(gfn);
    if (c) this.hits++;
    else {
      this.misses++;
      const bus = this.mapper.map(BigInt(gfn));
      if (bus === undefined) return undefined;
      c = { gfn, bus, slots: new Set() };
      this.byGfn.set(gfn, c);
    }
    c.slots.add(slot);
    return c.bus;
  }

  /** Slot no longer uses gfn; the last one out unmaps it. */
  put(gfn: number, slot: number): void {
    const c = this.byGfn.get(gfn);
    if (!c || !c.slots.delete(slot) || c.slots.size > 0) return;
    this.byGfn.delete(gfn);
    this.mapper.unmap(BigInt(gfn), c.bus);
  }

  /** The cached frames in [first, last], each with the slots using it. */
  within(first: number, last: number): { gfn: number; slots: number[] }[] {
    const out: { gfn: number; slots: number[] }[] = [];
    for (const c of this.byGfn.values()) if (c.gfn >= first && c.gfn <= last) out.push({ gfn: c.gfn, slots: [...c.slots] });
    return out;
  }

  /** Unmaps gfn whatever uses it (a revocation); the slots are the caller's to clear. */
  drop(gfn: number): void {
    const c = this.byGfn.get(gfn);
    if (!c) return;
    this.byGfn.delete(gfn);
    this.mapper.unmap(BigInt(gfn), c.bus);
  }

  stats(): CacheStats { return { hits: this.hits, misses: this.misses, live: this.byGfn.size }; }

  /** Everything goes (the shadow is destroyed). */
  clear(): void {
    for (const c of [...this.byGfn.values()]) this.drop(c.gfn);
  }
}
