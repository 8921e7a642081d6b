// A shadow GGTT (GVT-g's GGTT write emulation, gtt.c): the guest writes
// entries of its GGTT that hold guest physical addresses; the emulator traps
// each write and gives it here. The shadow entry the GPU really walks holds
// the bus address (IOVA) the guest frame is mapped at, from the DMA cache;
// the guest's own value is kept and read back unchanged.
//
// Entry format (the package's model, the ggtt page-table format): bit 0
// present, bit 1 writable, bits 12..38 the page.
import { PAGE_SIZE } from "../addr.js";
import type { DmaCache } from "./cache.js";

const PRESENT = 1n;
const WRITABLE = 2n;
const ADDR_MASK = ((1n << 39n) - 1n) & ~0xfffn;
/** A slot with no shadow entry (the GPU faults there), or one aimed at the scratch page. */
const NONE = -1;
const SCRATCH = -2;

/** The GPU's translation context for the shadow (its table of bus addresses, its invalidation). */
export interface GpuContext {
  map(gma: bigint, bus: bigint, write: boolean): void;
  unmap(gma: bigint): void;
  invalidate(gma: bigint, pages: bigint): void;
}

export interface GgttStats { shadowEntries: number; scratch: number }

export class GgttShadow {
  /** What the guest wrote, per entry. */
  private readonly guest: BigUint64Array;
  /** The guest frame each shadow entry maps (NONE, SCRATCH, or the gfn). */
  private readonly shadowed: Float64Array;
  private present = 0;
  private onScratch = 0;

  constructor(readonly entries: number, private readonly cache: DmaCache, private readonly gpu: GpuContext, private readonly scratchBus: bigint) {
    this.guest = new BigUint64Array(entries);
    this.shadowed = new Float64Array(entries).fill(NONE);
  }

  /**
   * The guest wrote `pte` to entry i. The new frame is mapped (or found in
   * the cache) first, the shadow entry written and the GPU's cached
   * translation of that page invalidated, and only then is the old frame's
   * reference released (gtt.c's order). A frame that cannot be mapped gets
   * the scratch page.
   */
  write(i: number, pte: bigint): void {
    const old = this.shadowed[i];
    let next = NONE;
    let bus = 0n;
    if ((pte & PRESENT) !== 0n) {
      const gfn = (pte & ADDR_MASK) >> 12n;
      const found = this.cache.get(gfn, i);
      if (found === undefined) { next = SCRATCH; bus = this.scratchBus; } else { next = Number(gfn); bus = found; }
    }
    const gma = BigInt(i) * PAGE_SIZE;
    if (old !== NONE) this.gpu.unmap(gma);
    if (next !== NONE) this.gpu.map(gma, bus, (pte & WRITABLE) !== 0n);
    this.gpu.invalidate(gma, 1n);
    this.guest[i] = pte;
    this.set(i, next);
    if (old >= 0 && old !== next) this.cache.put(BigInt(old), i);
  }

  read(i: number): bigint { return this.guest[i]; }

  /**
   * Guest frames [first, last] must go now (the VMM unmapped them): the
   * shadow entries using them are cleared and invalidated before each frame
   * is unmapped, so the GPU faults at its own MMU there; the guest's values
   * stay. `cacheOnly` drops the frames and leaves the shadow entries aimed at
   * the dead bus addresses, as kvmgt does.
   */
  revoke(first: bigint, last: bigint, cacheOnly: boolean): void {
    for (const { gfn, slots } of this.cache.within(first, last)) {
      if (!cacheOnly) {
        for (const i of slots) {
          const gma = BigInt(i) * PAGE_SIZE;
          this.gpu.unmap(gma);
          this.gpu.invalidate(gma, 1n);
          this.set(i, NONE);
        }
      }
      this.cache.drop(gfn);
    }
  }

  stats(): GgttStats { return { shadowEntries: this.present, scratch: this.onScratch }; }

  private set(i: number, next: number): void {
    const old = this.shadowed[i];
    if (old !== NONE) this.present--;
    if (old === SCRATCH) this.onScratch--;
    if (next !== NONE) this.present++;
    if (next === SCRATCH) this.onScratch++;
    this.shadowed[i] = next;
  }
}
