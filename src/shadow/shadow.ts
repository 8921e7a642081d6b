// A shadow device page table for a mediated GPU (the GVT-g case), as a
// vendor driver keeps one: the guest programs its GPU page table with guest
// physical addresses (GMA → GPA); the emulator traps each entry write and
// hands it here; the shadow the physical GPU walks maps GMA → bus address
// (an IOVA of the parent's IOMMU domain), so every GPU access is translated
// twice — by the GPU's MMU through the shadow, then by the system IOMMU.
// Format-neutral: the table's own rules are ggtt.ts's (the global GTT, one
// level, written by index) or ppgtt.ts's (a per-process 4-level table in
// guest memory); guest frames become bus addresses through a ShadowMapper
// (an mdev's pins and DMA API here, a Xen backend's delegated mappings later).
import { hex, toU64, requireAligned, PAGE_SIZE, type Address } from "../addr.js";
import { integer, options, show } from "../args.js";
import { fail } from "../errors.js";
import { DmaCache } from "./cache.js";
import { GgttShadow, type GpuContext } from "./ggtt.js";
import { GpuDmaPort, type GpuFaultStage, type PortCalls } from "./gpudma.js";
import type { DeviceFrame, GuestTables, ShadowMapper } from "./mapper.js";
import { PpgttShadow } from "./ppgtt.js";

/** The guest's GPU page table: the global GTT of `entries` entries, or a 4-level per-process GTT (x86-64 entries) in guest memory. */
export type ShadowLayout = { format: "ggtt"; entries: number } | { format: "x86-64"; levels: 4 };

/** A layout as given, checked (EINVAL): a GGTT of a power-of-two 512..2^20 entries, or a 4-level x86-64 PPGTT. */
export function shadowLayout(layout: unknown): ShadowLayout {
  const l = options(layout, "shadow layout", ["format", "entries", "levels"] as const);
  if (l.format === "ggtt") {
    if (l.levels !== undefined) fail("EINVAL", "shadowGtt: a GGTT layout has entries, not levels");
    const entries = integer(l.entries, "shadow entries", 512, 2 ** 20);
    if ((entries & (entries - 1)) !== 0) fail("EINVAL", `shadowGtt: entries must be a power of two, got ${entries}`);
    return { format: "ggtt", entries };
  }
  if (l.format === "x86-64") {
    if (l.entries !== undefined) fail("EINVAL", "shadowGtt: an x86-64 layout has levels, not entries");
    if (l.levels !== 4) fail("EINVAL", `shadowGtt: an x86-64 PPGTT has 4 levels, got ${show(l.levels)}`);
    return { format: "x86-64", levels: 4 };
  }
  return fail("EINVAL", `shadowGtt: the layout's format is 'ggtt' or 'x86-64', got ${show(l.format)}`);
}

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
  /** Shadow entries present (scratch ones included; a PPGTT's at every level, split 2 MiB leaves' 512 included). */
  shadowEntries: number;
  /** Guest frames pinned and DMA-mapped for the shadow's leaves (one each, however many entries use it; a 2 MiB leaf's 512). */
  pinnedPages: number;
  /** Entries aimed at the scratch page (their frame could not be mapped). */
  scratch: number;
  cacheHits: number;
  cacheMisses: number;
  /** Frames the shadow's tables take: the GGTT's (entries / 512), or the PPGTT's shadow tables (the top one included). */
  tablePages: number;
  /** PPGTT: guest 2 MiB leaves shadowed as 512 4 KiB entries (0 for the GGTT). */
  splits2M: number;
  /** PPGTT: guest table pages tracked (write-protected, each pinned once; 0 for the GGTT). */
  guestTables: number;
}

/**
 * The GPU's translation context: its table (the GGTT's, host-physical; a
 * PPGTT's lives in the shadow's own frames) and IOTLB driven through the data
 * plane (no argument parsing on the way: every operand is the shadow's own),
 * its DMA port, and its end.
 */
export interface GpuDomain extends GpuContext {
  readonly dma: PortCalls;
  /** Every cached translation of the context goes. */
  invalidateAll(): void;
  /** The GGTT's entry for gma (what the GPU walks: a bus address and flags). */
  entry(gma: bigint): bigint;
  /** gma through both stages, as the GPU's IOTLB would (a miss walks and fills). */
  translate(gma: bigint): { hpa?: bigint; fault?: { reason: string; stage: 1 | 2 } };
  destroy(): void;
}

/**
 * Where one GMA leads: the HPA the GPU reaches, and for a GGTT the bus
 * address its shadow entry holds (the IOVA the IOMMU translates); or the
 * stage that faults ('device-mmu': no shadow entry).
 */
export type GpuTranslation =
  | { bus?: bigint; hpa: bigint; fault?: undefined }
  | { fault: { reason: string; stage: GpuFaultStage }; bus?: bigint; hpa?: undefined };

/** @internal What the shadow is made of; the mdev's factory assembles it. */
export interface ShadowParts {
  layout: ShadowLayout;
  gpu: GpuDomain;
  mapper: ShadowMapper;
  /** The guest's own tables (a PPGTT's). */
  guest: GuestTables;
  /** A zeroed frame mapped for the GPU: a PPGTT's shadow tables. */
  frame(): DeviceFrame;
  /** The scratch page. */
  scratch: DeviceFrame;
  /** PPGTT: the top shadow table's frame, the root the GPU context was made with. */
  root: DeviceFrame | undefined;
  mode: ShadowUnmapMode;
  /** PPGTT: the GPU takes 2 MiB leaves. */
  pages2M: boolean;
  /** Called once, when the shadow is destroyed. */
  onDestroy(): void;
}

export class ShadowGtt {
  readonly layout: ShadowLayout;
  /** The GPU's own DMA by graphics memory address; faults say 'device-mmu' or 'iommu'. */
  readonly dma: GpuDmaPort;
  /** Guest frames mapped one by one, and (PPGTT) 2 MiB runs. */
  private readonly small: DmaCache;
  private readonly large: DmaCache;
  private readonly ggtt: GgttShadow | undefined;
  private readonly ppgtt: PpgttShadow | undefined;
  private destroyed = false;

  /** @internal */
  constructor(private readonly parts: ShadowParts) {
    this.layout = Object.freeze({ ...parts.layout });
    this.small = new DmaCache(parts.mapper);
    this.large = new DmaCache(parts.mapper, 512);
    const gpu = parts.gpu;
    const layout = parts.layout;
    if (layout.format === "ggtt") {
      this.ggtt = new GgttShadow(layout.entries, this.small, gpu, parts.scratch.bus);
    } else {
      this.ppgtt = new PpgttShadow({
        small: this.small, large: this.large, guest: parts.guest, frame: parts.frame, root: parts.root!,
        scratchBus: parts.scratch.bus, pages2M: parts.pages2M,
        invalidate: (gma, pages) => (gma === undefined ? gpu.invalidateAll() : gpu.invalidate(gma, pages!)),
      });
    }
    this.dma = new GpuDmaPort(gpu.dma, this.ppgtt !== undefined);
  }

  /**
   * The guest wrote `pte` (GPA and flags), as an emulator traps it. GGTT:
   * entry `index` (EINVAL outside the table); present: the frame is pinned
   * and DMA-mapped (or found in the cache) and the shadow entry aims at its
   * bus address; not present: the shadow entry goes. PPGTT: the 8 bytes at
   * `{ gpa }` of a tracked guest table, as trapWrite, EINVAL for a gpa in no
   * tracked table.
   */
  guestWrite(where: number | { gpa: Address }, pte: Address): void {
    this.live();
    if (this.ggtt) {
      const i = integer(where, "GGTT index", 0, this.ggtt.entries - 1);
      this.ggtt.write(i, toU64(pte, "pte"));
      return;
    }
    const gpa = this.entryGpa(where, "guestWrite");
    if (!this.ppgtt!.trapWrite(gpa, toU64(pte, "pte"))) this.untracked(gpa, "guestWrite");
  }

  /** The guest's own value (GPAs, never a bus address): GGTT entry `index`; PPGTT the 8 bytes at `{ gpa }` of a tracked guest table (EINVAL otherwise). */
  guestRead(where: number | { gpa: Address }): bigint {
    this.live();
    if (this.ggtt) return this.ggtt.read(integer(where, "GGTT index", 0, this.ggtt.entries - 1));
    const gpa = this.entryGpa(where, "guestRead");
    return this.ppgtt!.read(gpa) ?? this.untracked(gpa, "guestRead");
  }

  /**
   * PPGTT: the guest's PML4 is at `gpa` (4 KiB aligned; EINVAL otherwise,
   * and for a GGTT). Every guest table reachable from it is tracked, read
   * through guest memory and shadowed; the previous root's shadow is
   * released. Returns the root bus address (IOVA) the GPU context walks
   * from, the same at every call. A root that cannot be read throws that
   * errno; ENOMEM when no frame is left for a shadow table; nothing changes
   * on a refusal.
   */
  setRoot(gpa: Address): bigint {
    this.live();
    const root = toU64(gpa, "root gpa");
    const ppgtt = this.ppgtt ?? fail("EINVAL", "setRoot: a GGTT has no root (it is written by index)");
    requireAligned(root, PAGE_SIZE, "root gpa");
    return ppgtt.setRoot(root);
  }

  /**
   * PPGTT: an emulator trapped the guest's 8-byte write of `value` at `gpa`
   * (8-byte aligned, EINVAL otherwise) in a write-protected guest table.
   * The value is written to guest memory and the shadow updated: the new
   * translation is added first, then the old one removed; a PDE or PDPE
   * change (un)shadows its subtree. false, with nothing written, when gpa is
   * in no tracked table page. EINVAL for a GGTT.
   */
  trapWrite(gpa: Address, value: Address): boolean {
    this.live();
    const at = toU64(gpa, "gpa");
    const v = toU64(value, "value");
    const ppgtt = this.ppgtt ?? fail("EINVAL", "trapWrite: a GGTT is written by index (guestWrite)");
    requireAligned(at, 8n, "gpa");
    return ppgtt.trapWrite(at, v);
  }

  /**
   * Both translations of a GMA: the HPA the GPU reaches (through the shadow,
   * then the parent's IOMMU domain), with, for a GGTT, the bus address (the
   * IOVA) its shadow entry holds; or the stage that faults.
   */
  translate(gma: Address): GpuTranslation {
    this.live();
    const at = toU64(gma, "gma");
    const t = this.parts.gpu.translate(at);
    let bus: bigint | undefined;
    if (this.ggtt && at >> 12n < BigInt(this.ggtt.entries)) {
      const entry = this.parts.gpu.entry(at);
      if ((entry & 1n) !== 0n) bus = (entry & ((1n << 39n) - 0x1000n)) | (at & 0xfffn);
    }
    if (t.fault) return { fault: { reason: t.fault.reason, stage: t.fault.stage === 1 ? "device-mmu" : "iommu" }, ...(bus === undefined ? {} : { bus }) };
    return bus === undefined ? { hpa: t.hpa! } : { bus, hpa: t.hpa! };
  }

  stats(): ShadowStats {
    const small = this.small.stats(), large = this.large.stats();
    const t = this.ggtt
      ? { ...this.ggtt.stats(), tablePages: this.ggtt.entries / 512, splits2M: 0, guestTables: 0 }
      : this.ppgtt!.stats();
    return {
      shadowEntries: t.shadowEntries, pinnedPages: small.live + large.live, scratch: t.scratch,
      cacheHits: small.hits + large.hits, cacheMisses: small.misses + large.misses,
      tablePages: t.tablePages, splits2M: t.splits2M, guestTables: t.guestTables,
    };
  }

  /**
   * @internal The VMM unmapped [iova, iova + size) of guest memory: every
   * shadow entry using it goes (or, 'cache-only', only the mappings), before
   * the unmap returns.
   */
  revoke(iova: bigint, size: bigint): void {
    if (this.destroyed) return;
    const first = iova >> 12n, last = (iova + size - 1n) >> 12n, cacheOnly = this.parts.mode === "cache-only";
    if (this.ggtt) this.ggtt.revoke(first, last, cacheOnly);
    else this.ppgtt!.revoke(first, last, cacheOnly);
  }

  /** Unmaps and unpins every guest frame, untracks every guest table, frees the shadow's tables and the scratch page. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    // The GPU's context goes first: no entry reaches a frame once it is unmapped.
    this.parts.gpu.destroy();
    this.ppgtt?.destroy();
    this.small.clear();
    this.large.clear();
    this.parts.root?.release();
    this.parts.scratch.release();
    this.parts.onDestroy();
  }

  private entryGpa(where: unknown, what: string): bigint {
    if (typeof where !== "object" || where === null) fail("EINVAL", `${what}: a PPGTT entry is named { gpa }, got ${show(where)}`);
    const gpa = toU64(options(where, `${what} entry`, ["gpa"] as const).gpa as Address, "gpa");
    requireAligned(gpa, 8n, "gpa");
    return gpa;
  }

  private untracked(gpa: bigint, what: string): never {
    fail("EINVAL", `${what}: ${hex(gpa)} is in no guest table the shadow tracks`);
  }

  private live(): void {
    if (this.destroyed) fail("ENODEV", "the shadow GTT was destroyed");
  }
}
