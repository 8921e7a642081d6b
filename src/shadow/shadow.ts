// A shadow device page table for a mediated GPU (the GVT-g case), as a
// vendor driver keeps one: the guest programs its GPU page table with guest
// physical addresses (GMA → GPA); the emulator traps each entry write and
// hands it here; the shadow the physical GPU walks maps GMA → bus address
// (an IOVA of the parent's IOMMU domain), so every GPU access is translated
// twice — by the GPU's MMU through the shadow, then by the system IOMMU.
// Format-neutral: the table's own rules are ggtt.ts's; guest frames become
// bus addresses through a ShadowMapper (an mdev's pins and DMA API here, a
// Xen backend's delegated mappings later).
import { toU64, type Address } from "../addr.js";
import { integer } from "../args.js";
import { fail } from "../errors.js";
import { DmaCache } from "./cache.js";
import { GgttShadow, type GpuContext } from "./ggtt.js";
import { GpuDmaPort, type GpuFaultStage, type PortCalls } from "./gpudma.js";
import type { ShadowMapper } from "./mapper.js";

export type ShadowLayout = { format: "ggtt"; entries: number };

/**
 * What happens to shadow entries when the VMM unmaps guest memory they use.
 * 'invalidate-shadow' (default): they are cleared before the frames are
 * unmapped, so the GPU faults at its own MMU. 'cache-only': only the frames
 * are unmapped and unpinned (kvmgt's behaviour): the entries keep the dead
 * bus addresses, and the GPU faults at the IOMMU — or, once the address is
 * handed out again, reaches whatever is mapped there.
 */
export type ShadowUnmapMode = "invalidate-shadow" | "cache-only";

export interface ShadowStats {
  /** Shadow entries present (scratch ones included). */
  shadowEntries: number;
  /** Guest frames pinned and DMA-mapped for the shadow (one each, however many entries use it). */
  pinnedPages: number;
  /** Entries aimed at the scratch page (their frame could not be mapped). */
  scratch: number;
  cacheHits: number;
  cacheMisses: number;
}

/**
 * The GPU's translation context: its table and IOTLB driven through the data
 * plane (no argument parsing on the way: every operand is the shadow's own),
 * its DMA port, and its end.
 */
export interface GpuDomain extends GpuContext {
  readonly dma: PortCalls;
  /** The GPU's table entry for gma (what the GPU walks: a bus address and flags). */
  entry(gma: bigint): bigint;
  /** gma through both stages, as the GPU's IOTLB would (a miss walks and fills). */
  translate(gma: bigint): { hpa?: bigint; fault?: { reason: string; stage: 1 | 2 } };
  destroy(): void;
}

/** Where one GMA leads: the bus address the shadow entry holds, then the HPA the IOMMU gives it; or where it faults. */
export type GpuTranslation =
  | { bus: bigint; hpa: bigint; fault?: undefined }
  | { fault: { reason: string; stage: GpuFaultStage }; bus?: bigint; hpa?: undefined };

/** @internal What the shadow is made of; the mdev's factory assembles it. */
export interface ShadowParts {
  layout: ShadowLayout;
  gpu: GpuDomain;
  mapper: ShadowMapper;
  /** The scratch page's bus address, and how to let it go. */
  scratch: { bus: bigint; release(): void };
  mode: ShadowUnmapMode;
  /** Called once, when the shadow is destroyed. */
  onDestroy(): void;
}

export class ShadowGtt {
  readonly layout: ShadowLayout;
  /** The GPU's own DMA by graphics memory address; faults say 'device-mmu' or 'iommu'. */
  readonly dma: GpuDmaPort;
  private readonly cache: DmaCache;
  private readonly table: GgttShadow;
  private destroyed = false;

  /** @internal */
  constructor(private readonly parts: ShadowParts) {
    this.layout = Object.freeze({ ...parts.layout });
    this.cache = new DmaCache(parts.mapper);
    this.table = new GgttShadow(parts.layout.entries, this.cache, parts.gpu, parts.scratch.bus);
    this.dma = new GpuDmaPort(parts.gpu.dma);
  }

  /**
   * The guest wrote `pte` (GPA and flags) to GGTT entry `index`, as an
   * emulator traps it. Present: the frame is pinned and DMA-mapped (or found
   * in the cache) and the shadow entry aims at its bus address; not present:
   * the shadow entry goes. EINVAL for an index outside the table.
   */
  guestWrite(index: number, pte: Address): void {
    this.live();
    const i = integer(index, "GGTT index", 0, this.layout.entries - 1);
    this.table.write(i, toU64(pte, "pte"));
  }

  /** The guest's own value of entry `index` (GPAs, never a bus address). */
  guestRead(index: number): bigint {
    this.live();
    return this.table.read(integer(index, "GGTT index", 0, this.layout.entries - 1));
  }

  /**
   * Both translations of a GMA: the shadow entry's bus address (the IOVA the
   * guest frame is mapped at), then the HPA the parent's IOMMU domain maps
   * it to; or the stage that faults ('device-mmu': no shadow entry).
   */
  translate(gma: Address): GpuTranslation {
    this.live();
    const at = toU64(gma, "gma");
    const t = this.parts.gpu.translate(at);
    const entry = at >> 12n < BigInt(this.layout.entries) ? this.parts.gpu.entry(at) : 0n;
    const bus = (entry & 1n) !== 0n ? (entry & ((1n << 39n) - 0x1000n)) | (at & 0xfffn) : undefined;
    if (t.fault) return { fault: { reason: t.fault.reason, stage: t.fault.stage === 1 ? "device-mmu" : "iommu" }, ...(bus === undefined ? {} : { bus }) };
    return { bus: bus!, hpa: t.hpa! };
  }

  stats(): ShadowStats {
    const t = this.table.stats(), c = this.cache.stats();
    return { shadowEntries: t.shadowEntries, pinnedPages: c.live, scratch: t.scratch, cacheHits: c.hits, cacheMisses: c.misses };
  }

  /**
   * @internal The VMM unmapped [iova, iova + size) of guest memory: every
   * shadow entry using it goes (or, 'cache-only', only the mappings), before
   * the unmap returns.
   */
  revoke(iova: bigint, size: bigint): void {
    if (this.destroyed) return;
    this.table.revoke(Number(iova >> 12n), Number((iova + size - 1n) >> 12n), this.parts.mode === "cache-only");
  }

  /** Unmaps and unpins every guest frame, lets the scratch page go and frees the GPU's table. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    // The GPU's table goes first: no entry reaches a frame once it is unmapped.
    this.parts.gpu.destroy();
    this.cache.clear();
    this.parts.scratch.release();
    this.parts.onDestroy();
  }

  private live(): void {
    if (this.destroyed) fail("ENODEV", "the shadow GTT was destroyed");
  }
}
