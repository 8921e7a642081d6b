// The shadow's DMA cache (gvt's gvt_dma cache): one mapping per guest frame
// however many shadow entries use it, reference-counted, so a thousand
// entries over one page cost one pin and one map; the last reference unmaps.
// It also keeps which shadow slots use each frame, so a revoked frame's
// entries can be found and cleared. One cache holds one size: 4 KiB frames,
// or 2 MiB runs of 512 (a PPGTT's large leaves), each keyed by its first gfn.
// Frames are keyed as numbers (a gfn is below 2^52), which a Map hashes much
// faster than BigInts, in a map that takes the set/delete churn of frames
// mapped and let go over and over (LiveMappings).
import type { ShadowMapper } from "./mapper.js";
import { LiveMappings } from "../dmaapi/live.js";

interface Cached { gfn: bigint; bus: bigint; slots: Set<number> }

export interface CacheStats { hits: number; misses: number; live: number }

export class DmaCache {
  private readonly byGfn = new LiveMappings<Cached>();
  private hits = 0;
  private misses = 0;

  /** `pages`: the frames each entry spans (1, or 512 for 2 MiB runs). */
  constructor(private readonly mapper: ShadowMapper, private readonly pages = 1) {}

  /** The bus address of gfn for shadow slot `slot` (one reference more), or undefined when the mapper cannot map it. */
  get(gfn: bigint, slot: number): bigint | undefined {
    const key = Number(gfn);
    let c = this.byGfn.get(key);
    if (c) this.hits++;
    else {
      this.misses++;
      const bus = this.mapper.map(gfn, this.pages);
      if (bus === undefined) return undefined;
      c = { gfn, bus, slots: new Set() };
      this.byGfn.set(key, c);
    }
    c.slots.add(slot);
    return c.bus;
  }

  /** Slot no longer uses gfn; the last one out unmaps it. */
  put(gfn: bigint, slot: number): void {
    const key = Number(gfn);
    const c = this.byGfn.get(key);
    if (!c || !c.slots.delete(slot) || c.slots.size > 0) return;
    this.byGfn.delete(key);
    this.mapper.unmap(gfn, c.bus, this.pages);
  }

  /**
   * The cached entries overlapping frames [first, last] (startOnly: those
   * starting there, kvmgt's lookup), each with the slots using it.
   */
  within(first: bigint, last: bigint, startOnly = false): { gfn: bigint; slots: number[] }[] {
    const out: { gfn: bigint; slots: number[] }[] = [];
    const from = startOnly ? first : first - BigInt(this.pages - 1);
    for (const c of this.byGfn.values()) if (c.gfn >= from && c.gfn <= last) out.push({ gfn: c.gfn, slots: [...c.slots] });
    return out;
  }

  /** Unmaps gfn whatever uses it (a revocation); the slots are the caller's to clear. */
  drop(gfn: bigint): void {
    const key = Number(gfn);
    const c = this.byGfn.get(key);
    if (!c) return;
    this.byGfn.delete(key);
    this.mapper.unmap(gfn, c.bus, this.pages);
  }

  /** live: frames mapped (an entry of 512 counts 512). */
  stats(): CacheStats { return { hits: this.hits, misses: this.misses, live: this.byGfn.size * this.pages }; }

  /** Everything goes (the shadow is destroyed). */
  clear(): void {
    for (const c of [...this.byGfn.values()]) this.drop(c.gfn);
  }
}
