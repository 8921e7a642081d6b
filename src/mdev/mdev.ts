// A mediated device (an mdev, e.g. a vGPU): a virtual device its vendor
// driver makes on a parent device it keeps driving (i915 on the GPU). VFIO
// gives it an emulated IOMMU group of its own; a VMM opens that group and
// puts it in a container like any other, and the container then has no
// IOMMU domain for it. The vendor driver reaches guest memory through the
// container instead: it pins pages (vfio_pin_pages), copies through the
// VMM's page tables (vfio_dma_rw), and lets go when told (its dma_unmap op).
// This class is that vendor-side API (docs/mediated-devices.md A1–A7).
import type { GpuTable } from "../shadow/context.js";
import { toU64, type Address } from "../addr.js";
import { bool, bytes as checkBytes, func, integer, isInstance, oneOf, options, show } from "../args.js";
import { fail } from "../errors.js";
import type { Container } from "../vfio/container.js";
import { PIN_PAGES_MAX, pinRange } from "../vfio/external.js";
import { DmaApi } from "../dmaapi/dmaapi.js";
import type { DmaPort } from "../dma.js";
import { ShadowGtt, shadowLayout, type GpuDomain, type ShadowLayout, type ShadowUnmapMode } from "../shadow/shadow.js";
import type { DeviceFrame } from "../shadow/mapper.js";
import { MdevMapper } from "./mapper.js";

/** What an mdev asks of its host. */
export interface MdevHost {
  /** The container the group is in while the mdev's device is open (its group open, in a container with an IOMMU driver). */
  openContainer(group: number): Container | undefined;
  /** Whether the group is open (/dev/vfio/N held). */
  groupOpen(group: number): boolean;
  /** The mdev goes: its group's id is free again. */
  remove(mdev: Mdev): void;
  /**
   * The GPU's translation context over the domain `dma` maps in (ENODEV when
   * it has none): a GGTT of `entries` entries (host-physical), or a 4-level
   * x86-64 table whose root is the bus address `root` (read through that
   * domain, as every table under it).
   */
  gpuContext(dma: DmaApi, table: GpuTable): GpuDomain;
  /** A zeroed frame of host RAM: its HPA, a write into it, and its release. */
  frame(): HostFrame;
  /** The parent device's own DMA port. */
  parentPort(bdf: string): DmaPort;
}


export interface HostFrame { hpa: bigint; write(offset: number, bytes: Uint8Array): void; free(): void }

export interface ShadowOptions {
  /** The parent's DMA API: where the shadow maps guest frames (and a PPGTT's shadow tables) for the GPU. */
  dma: DmaApi;
  /** Default 'invalidate-shadow'. */
  onUnmap?: ShadowUnmapMode;
  /** PPGTT: the GPU takes 2 MiB leaves, so a guest 2 MiB leaf may be shadowed as one. Default true. */
  pages2M?: boolean;
}

export interface PinOptions {
  /** Default true. */
  read?: boolean;
  /** Default false. */
  write?: boolean;
}

export type DmaUnmapCallback = (iova: bigint, size: bigint) => void;

export class Mdev {
  private unmapOp: DmaUnmapCallback | undefined;
  private gone = false;
  private readonly shadows = new Set<ShadowGtt>();
  /** What type1 calls: the shadows let go of the range first, then the vendor's own callback. */
  private readonly notify = (iova: bigint, size: bigint): void => {
    for (const s of [...this.shadows]) s.revoke(iova, size);
    this.unmapOp?.(iova, size);
  };

  /** @internal */
  constructor(private readonly host: MdevHost, readonly uuid: string, readonly parent: string, readonly group: number) {}

  /**
   * The parent device's DMA as its vendor driver programs it: through the
   * parent's default IOMMU domain (addresses from its DMA API), or, for a
   * parent with no IOMMU (addDevice({ iommu: false })), straight to the HPAs
   * pinPages returned.
   */
  get parentDma(): DmaPort { return this.host.parentPort(this.parent); }

  /** @internal The vendor driver's dma_unmap op, as type1 calls it. */
  get dmaUnmap(): DmaUnmapCallback | undefined { return this.unmapOp || this.shadows.size > 0 ? this.notify : undefined; }

  /**
   * Registers the vendor driver's dma_unmap op: called (iova, size) for each
   * mapping the VMM unmaps while pages of it are pinned, before the unmap
   * returns; the driver unpins inside it (re-entrant calls work). One per
   * mdev (EEXIST); returns a function that removes it.
   */
  onDmaUnmap(cb: DmaUnmapCallback): () => void {
    this.live();
    const op = func<DmaUnmapCallback>(cb, "onDmaUnmap callback");
    if (this.unmapOp) fail("EEXIST", `mdev ${this.uuid} already has a dma_unmap callback`);
    this.unmapOp = op;
    return () => { if (this.unmapOp === op) this.unmapOp = undefined; };
  }

  /**
   * vfio_pin_pages: pins npage pages from iova (page aligned) and returns
   * their HPAs. EINVAL for npage 0, a device not open or no dma_unmap
   * callback; E2BIG above 512 pages; EOVERFLOW past 2^64; then page by page
   * EINVAL (no mapping), EPERM (the mapping lacks a requested permission),
   * ENODEV (its process exited), EFAULT (not mapped in the process), ENOMEM
   * (memlock, when the container has no IOMMU domain). All or nothing;
   * pins are counted per IOVA page and shared by the container's mdevs.
   */
  pinPages(iova: Address, npage: number, opts?: PinOptions): BigUint64Array {
    const n = pageCount(npage, "pin");
    const o = options(opts, "pin options", ["read", "write"] as const);
    return this.pin(iova, n, { read: bool(o.read, "pin read", true), write: bool(o.write, "pin write", false) });
  }

  /**
   * @internal pinPages after its options are read (the shadow's own calls
   * come here); `copy` false: the HPAs in a shared array, good until the next pin.
   */
  pin(iova: Address, npage: number, prot: { read: boolean; write: boolean }, copy = true): BigUint64Array {
    const c = this.openContainer("pin");
    if (!this.dmaUnmap) fail("EINVAL", `pin: mdev ${this.uuid} has no dma_unmap callback (onDmaUnmap)`);
    return c.external.pin(pinRange(iova, npage, "pin"), npage, prot, copy);
  }

  /**
   * vfio_unpin_pages: one pin less on each page of [iova, +npage pages). A
   * page with no pin is skipped; a page in no mapping ends the call (a
   * kernel WARN in host.warnings). Returns the pages processed. The
   * kernel's checks (device open, a dma_unmap callback, npage 1..512, no
   * wrap) refuse with nothing changed.
   */
  unpinPages(iova: Address, npage: number): number {
    const n = pageCount(npage, "unpin");
    const c = this.openContainer("unpin");
    if (!this.dmaUnmap) fail("EINVAL", `unpin: mdev ${this.uuid} has no dma_unmap callback (onDmaUnmap)`);
    if (n > PIN_PAGES_MAX) fail("EINVAL", `unpin: ${n} pages is more than ${PIN_PAGES_MAX}`);
    return c.external.unpin(pinRange(iova, n, "unpin"), n);
  }

  /**
   * vfio_dma_rw: reads `length` bytes (write: false) or writes `bytes`
   * (write: true) of container memory by IOVA, through the VMM's page
   * tables, pinning nothing; it may cross mappings. EINVAL where no mapping
   * is, EPERM where the mapping does not allow it (any access needs read),
   * EFAULT where the process has no page. A refused call moves nothing.
   */
  dmaRw(iova: Address, length: number, opts: { write: false }): Uint8Array;
  dmaRw(iova: Address, bytes: Uint8Array, opts: { write: true }): number;
  dmaRw(iova: Address, data: number | Uint8Array, opts: { write: boolean }): Uint8Array | number {
    if (opts === undefined) fail("EINVAL", "dma_rw: say { write: true } or { write: false }");
    const write = bool(options(opts, "dma_rw options", ["write"] as const).write, "dma_rw write", false);
    const first = toU64(iova, "iova");
    const buf = write ? checkBytes(data, "dma_rw bytes") : new Uint8Array(integer(data, "dma_rw length", 0, 2 ** 31));
    if (buf.length === 0) fail("EINVAL", "dma_rw: nothing to copy");
    const c = this.openContainer("dma_rw");
    if (first + BigInt(buf.length) - 1n > (1n << 64n) - 1n) fail("EOVERFLOW", "dma_rw: the range wraps past 2^64");
    c.external.rw(first, buf, write);
    return write ? buf.length : buf;
  }

  /**
   * A shadow of the guest's GPU page table, kept as GVT-g keeps one: the
   * guest's entries map GMA → GPA; the shadow the GPU walks maps GMA → the
   * IOVA each guest frame is pinned and DMA-mapped at through `dma` (the
   * parent's DMA API), and the GPU's DMA through it is translated again by
   * the parent's IOMMU domain. When the VMM unmaps guest memory, the shadow's
   * entries over it go before the unmap returns.
   *
   * Layouts: { format: 'ggtt', entries } (a power of two, 512..2^20), the
   * global GTT, written by index; { format: 'x86-64', levels: 4 }, a
   * per-process GTT in guest memory (setRoot, trapWrite), whose shadow
   * tables are frames DMA-mapped through `dma` too, so the GPU reads them
   * through the IOMMU. EINVAL for another layout, an unknown option, or a
   * DMA API of another device; ENODEV when that API has no domain.
   */
  shadowGtt(layout: ShadowLayout, opts: ShadowOptions): ShadowGtt {
    this.live();
    const checked = shadowLayout(layout);
    if (opts === undefined) fail("EINVAL", "shadowGtt: give { dma } (the parent's DMA API)");
    const o = options(opts, "shadow options", ["dma", "onUnmap", "pages2M"] as const);
    if (!isInstance(o.dma, DmaApi)) fail("EINVAL", `shadowGtt: dma must be a DmaApi (host.dmaApi(parent)), got ${show(o.dma)}`);
    const dma = o.dma;
    if (dma.bdf !== this.parent) fail("EINVAL", `shadowGtt: dma is ${dma.bdf}'s DMA API, not the parent ${this.parent}'s`);
    const mode = o.onUnmap === undefined ? "invalidate-shadow" : oneOf(o.onUnmap, "shadow onUnmap", ["invalidate-shadow", "cache-only"] as const);
    const pages2M = bool(o.pages2M, "shadow pages2M", true);
    if (checked.format === "ggtt" && o.pages2M !== undefined) fail("EINVAL", "shadowGtt: pages2M is a PPGTT option (a GGTT has 4 KiB entries only)");
    const frame = (): DeviceFrame => deviceFrame(this.host.frame(), dma);
    // Made in order, undone in reverse on a refusal.
    const undo: (() => void)[] = [];
    try {
      const root = checked.format === "ggtt" ? undefined : frame();
      if (root) undo.push(() => root.release());
      const gpu = this.host.gpuContext(dma, checked.format === "ggtt" ? checked : { format: "x86-64", root: root!.bus });
      undo.push(() => gpu.destroy());
      const scratch = frame();
      const mapper = new MdevMapper(this, dma);
      const shadow: ShadowGtt = new ShadowGtt({
        layout: checked, gpu, mapper, guest: mapper, frame, scratch, root, mode, pages2M,
        onDestroy: () => { this.shadows.delete(shadow); },
      });
      this.shadows.add(shadow);
      return shadow;
    } catch (e) {
      for (const u of undo.reverse()) u();
      throw e;
    }
  }

  /** mdev remove (the sysfs "remove" file): EBUSY while its group is open; its shadows are destroyed. */
  remove(): void {
    if (this.gone) return;
    if (this.host.groupOpen(this.group)) fail("EBUSY", `mdev ${this.uuid}: its group ${this.group} is open`);
    for (const s of [...this.shadows]) s.destroy();
    this.gone = true;
    this.unmapOp = undefined;
    this.host.remove(this);
  }

  get removed(): boolean { return this.gone; }

  private live(): void {
    if (this.gone) fail("ENODEV", `mdev ${this.uuid} was removed`);
  }

  /** The container, once the device is open there; EINVAL before (the kernel's WARN on a device not open). */
  private openContainer(what: string): Container {
    this.live();
    const c = this.host.openContainer(this.group);
    if (!c) fail("EINVAL", `${what}: mdev ${this.uuid} is not open (its group ${this.group} is in no container with an IOMMU driver)`);
    return c;
  }
}

/** A host frame mapped both ways for the parent (DMA_BIDIRECTIONAL); a refused map frees it. */
function deviceFrame(frame: HostFrame, dma: DmaApi): DeviceFrame {
  let bus: bigint;
  try {
    bus = dma.mapPage(frame.hpa, 0x1000n, "bidirectional");
  } catch (e) {
    frame.free();
    throw e;
  }
  return {
    bus,
    write: (offset, bytes) => frame.write(offset, bytes),
    release: () => { dma.unmapPage(bus, 0x1000n, "bidirectional"); frame.free(); },
  };
}

/** npage as the kernel takes it: an integer, not 0 (negative is EINVAL too, v6.18). */
function pageCount(npage: number, what: string): number {
  if (typeof npage !== "number" || !Number.isSafeInteger(npage) || npage <= 0) fail("EINVAL", `${what}: npage must be a positive integer, got ${show(npage)}`);
  return npage;
}
