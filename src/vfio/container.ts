// A VFIO container with the type1 (v2) IOMMU driver: one set of DMA mappings
// shared by every group attached to it, in one IOMMU domain whose page table
// is the arch's stage-2 format. The checks follow drivers/vfio and their
// order decides the errno when several fail (docs/vfio-type1.md, v6.18).
//
// This file is the lifecycle (groups, SET_IOMMU, release, close, GET_INFO)
// and the facade; each job is its own part over one shared core (core.ts):
// attach rules (attach.ts), MAP/UNMAP (type1.ts), dirty tracking (dirty.ts),
// PASID bindings and guest tables (nesting.ts), guest memory (gpa.ts).
import { show } from "../args.js";
import { fail } from "../errors.js";
import type { Address } from "../addr.js";
import type { Process } from "./process.js";
import { MappingList, type DmaMapping } from "./mappings.js";
import type { IovaRange } from "./reserved.js";
import type { ContainerPasids } from "./pasid.js";
import { MAX_DIRTY_BITMAP_BYTES, iommuGroups, live, minPageSize, requireDriver, type ContainerCore, type ContainerDomain, type ContainerHost, type IommuType } from "./core.js";
import { ExternalPins } from "./external.js";
import { hex } from "../addr.js";
import { afterAttach, attachChecks, configureDomain, withoutDoorbell } from "./attach.js";
import { Type1Mappings, type MapDmaRequest, type UnmapDmaRequest, type UnmapDirtyRequest, type UnmapDirtyResult } from "./type1.js";
import { DirtyTracking, type DirtyBitmapRequest } from "./dirty.js";
import { Nesting, type BindPgtblOptions, type InvalidateEntry, type Stage1Device } from "./nesting.js";
import { guestMemory, type GuestMemory } from "./gpa.js";

export type { IommuType, ContainerDomain, ContainerHost, EmulatedDevice } from "./core.js";
export type { MapDmaRequest, UnmapDmaRequest, UnmapDirtyRequest, UnmapDirtyResult } from "./type1.js";
export type { DirtyBitmapRequest } from "./dirty.js";
export type { BindPgtblOptions, InvalidateEntry } from "./nesting.js";
export type { GuestMemory } from "./gpa.js";

export interface ContainerInfo {
  /** Bitmap of the IOMMU page sizes (AND over the attached domains). */
  pgsizes: bigint;
  /** The valid IOVA list, inclusive ranges. */
  iovaRanges: IovaRange[];
  /** MAP_DMA entries left before ENOSPC. */
  dmaAvail: number;
  /** The MIGRATION capability: dirty-page granule and the largest bitmap one call may ask for. */
  migration: { pgsize: bigint; maxDirtyBitmapSize: bigint };
}

export class Container {
  private readonly core: ContainerCore;
  private readonly handles = new Map<number, { forget(): void }>();
  private readonly type1: Type1Mappings;
  private readonly tracking: DirtyTracking;
  private readonly nesting: Nesting;
  /** @internal Vendor drivers' pins (mdevs): vfio_pin_pages, vfio_unpin_pages, vfio_dma_rw. */
  readonly external: ExternalPins;
  readonly dirty: {
    start: () => void;
    stop: () => void;
    bitmap: (request: DirtyBitmapRequest) => Uint8Array;
    readonly tracking: boolean;
  };
  /** VFIO_IOMMU_PASID_REQUEST: PASIDs from the host-wide space, within this container's quota. */
  readonly pasid: ContainerPasids;

  /**
   * Guest memory at GPAs, through the container's mappings (stage 2): how a
   * guest (or a test acting as one) writes its stage-1 tables. EFAULT where
   * nothing is mapped; EINVAL before SET_IOMMU.
   */
  readonly gpa: GuestMemory;

  /** @internal */
  constructor(host: ContainerHost, readonly process: Process | undefined, pasidQuota?: number) {
    const core: ContainerCore = this.core = {
      host, process, iommu: undefined, domain: undefined, groupIds: [], iovas: [], allowed: undefined,
      maps: new MappingList(), dirtyTracking: false, doorbell: undefined, closed: false, devices: [], wedged: undefined,
    };
    this.external = new ExternalPins(core);
    this.pasid = host.pasids.open(pasidQuota);
    this.nesting = new Nesting(core, this.pasid);
    this.type1 = new Type1Mappings(core, () => this.tracking, this.external);
    this.tracking = new DirtyTracking(core, (first, last, what) => this.type1.checkNoBisect(first, last, what));
    // A freed PASID may be handed out again: no device may keep walking its old table.
    this.pasid.beforeFree = (min, max) => this.nesting.dropBindings((b) => b.pasid >= min && b.pasid <= max);
    this.gpa = guestMemory(core, (options, write) => this.nesting.guestPageTable(options, write));
    const tracking = this.tracking;
    this.dirty = {
      start: () => tracking.start(),
      stop: () => tracking.stop(),
      bitmap: (request) => tracking.bitmap(request),
      get tracking() { return core.dirtyTracking; },
    };
  }

  // ------------------------------------------------------------------ state

  /** The IOMMU domain of the container (undefined until SET_IOMMU). */
  get domain(): ContainerDomain | undefined { return this.core.domain; }
  get iommuType(): IommuType | undefined { return this.core.iommu; }
  get groups(): readonly number[] { return this.core.groupIds; }
  /** The MSI doorbell IOVA mapped for sw-msi (SMMUv3), if any. */
  get msiDoorbellIova(): bigint | undefined { return this.core.doorbell; }

  /** VFIO_CHECK_EXTENSION for the types this model implements. */
  checkExtension(type: string): boolean { return type === "type1v2" || type === "nesting"; }

  // ------------------------------------------------------------------ groups

  /**
   * VFIO_SET_IOMMU: needs at least one group; attaches every group with an
   * IOMMU to a new domain. Emulated groups (mdevs) get none: a container
   * of them alone has a driver and no domain, and their devices open.
   */
  setIommu(type: IommuType): void {
    const core = this.core;
    live(core);
    if (core.groupIds.length === 0 || core.iommu) fail("EINVAL", core.iommu ? "an IOMMU driver is already set" : "the container holds no group");
    if (type !== "type1v2" && type !== "nesting") fail(typeof type === "string" ? "ENODEV" : "EINVAL", `no IOMMU driver for ${show(type)} (supported: type1v2, nesting)`);
    const real = iommuGroups(core);
    const domain = real.length > 0 ? core.host.createDomain(core.host.stage2) : undefined;
    try {
      // Most recently added group first, as the kernel attaches them.
      const order = [...real].reverse();
      const attached: number[] = [];
      let list: IovaRange[] = [];
      for (const g of order) {
        list = attachChecks(core, g, attached);
        attached.push(g);
      }
      core.domain = domain;
      core.iommu = type;
      core.iovas = list;
      if (domain) configureDomain(core, domain);
      for (const g of order) afterAttach(core, g);
    } catch (e) {
      // Nothing of the attempt stays: no driver, no IOVA list, no doorbell.
      domain?.destroy();
      core.domain = undefined;
      core.iommu = undefined;
      core.iovas = [];
      core.doorbell = undefined;
      throw e;
    }
    for (const g of core.groupIds) this.openDevices(g);
  }

  /** An emulated group's devices open now (vfio_device_open registers them with type1): most recent first. */
  private openDevices(g: number): void {
    const core = this.core;
    if (!core.host.topology.isEmulated(g)) return;
    core.devices.unshift(...core.host.emulatedDevices(g));
  }

  /** @internal VFIO_GROUP_SET_CONTAINER, from the group's side; `handle` lets close() detach it. */
  attachGroup(g: number, handle: { forget(): void }): void {
    const core = this.core;
    live(core);
    if (core.iommu && core.host.topology.isEmulated(g)) {
      core.groupIds.push(g);
      this.openDevices(g);
    } else if (core.iommu && !core.domain) {
      this.attachFirstIommuGroup(g);
    } else if (core.iommu) {
      const list = attachChecks(core, g, core.groupIds);
      const iovas = core.iovas;
      core.groupIds.push(g);
      core.iovas = withoutDoorbell(core, list);
      try {
        afterAttach(core, g);
      } catch (e) {
        core.groupIds.pop();
        core.iovas = iovas;
        throw e;
      }
    } else {
      core.groupIds.push(g);
    }
    this.handles.set(g, handle);
  }

  /**
   * The first group with an IOMMU joins a container of emulated groups: a
   * domain is made and every mapping replayed into it (pinned, mapped,
   * counted). Any failure undoes the whole attach.
   */
  private attachFirstIommuGroup(g: number): void {
    const core = this.core;
    const list = attachChecks(core, g, []);
    for (const m of core.maps.all()) {
      if (!list.some((r) => m.iova >= r.start && m.last <= r.end)) fail("EINVAL", `group ${g}: the mapping [${hex(m.iova)}, ${hex(m.last)}] is outside its valid IOVA ranges`);
    }
    const domain = core.host.createDomain(core.host.stage2);
    core.domain = domain;
    core.iovas = list;
    let replayed = false;
    try {
      configureDomain(core, domain);
      this.type1.replay(domain);
      replayed = true;
      core.groupIds.push(g);
      afterAttach(core, g);
    } catch (e) {
      if (core.groupIds[core.groupIds.length - 1] === g) core.groupIds.pop();
      if (replayed) this.type1.unreplay(domain);
      domain.destroy();
      core.domain = undefined;
      core.iovas = [];
      core.doorbell = undefined;
      throw e;
    }
  }

  /**
   * The last group with an IOMMU left while emulated groups stay: bindings
   * and guest tables go, the mappings leave the domain but stay recorded
   * (vfio_iommu_unmap_unpin_reaccount), and the domain goes.
   */
  private dropDomain(domain: ContainerDomain): void {
    const core = this.core;
    this.nesting.releaseAll();
    this.type1.unreplay(domain);
    domain.destroy();
    core.domain = undefined;
    core.iovas = [];
    core.doorbell = undefined;
    core.dirtyTracking = false;
  }

  /**
   * @internal VFIO_GROUP_UNSET_CONTAINER: the group's devices lose every
   * PASID binding they had here (its IOTLB entries go with it) before the
   * call returns; the last group out releases the driver and every mapping.
   */
  detachGroup(g: number): void {
    const core = this.core;
    const i = core.groupIds.indexOf(g);
    if (i < 0) return;
    core.groupIds.splice(i, 1);
    this.handles.delete(g);
    this.nesting.dropBindings((b) => b.device.group.id === g);
    // Its devices close: they are no longer told of unmaps (their pins stay the container's).
    core.devices = core.devices.filter((d) => d.group !== g);
    if (!core.iommu) return;
    if (core.groupIds.length === 0) {
      this.release();
      return;
    }
    if (core.host.topology.isEmulated(g)) return;
    if (core.domain && iommuGroups(core).length === 0) {
      this.dropDomain(core.domain);
      return;
    }
    const list = withoutDoorbell(core, core.host.topology.iovaList(core.groupIds));
    if (list.length > 0) core.iovas = list;
  }

  // ------------------------------------------------------------------ nesting: stage-1 bindings

  /** @internal VFIO's bind of a guest page table, for one device and PASID. */
  bindStage1(device: Stage1Device, given: BindPgtblOptions): void { this.nesting.bind(device, given); }

  /** @internal */
  unbindStage1(device: Stage1Device, pasid: number): void { this.nesting.unbind(device, pasid); }

  /**
   * The guest's cache invalidation (iommufd's HWPT invalidate): entries in
   * order; a bad one stops the call with an IommuError whose `processed`
   * counts the entries handled before it (those stay applied).
   */
  invalidate(entries: readonly InvalidateEntry[]): number { return this.nesting.invalidate(entries); }

  /** Unmaps and unpins everything and frees the domain; SET_IOMMU is needed again. */
  private release(): void {
    const core = this.core;
    // Bindings and guest tables run over the stage 2 that goes now: they go first.
    this.nesting.releaseAll();
    this.type1.removeAll();
    core.domain?.destroy();
    core.domain = undefined;
    core.iommu = undefined;
    core.iovas = [];
    core.doorbell = undefined;
    core.dirtyTracking = false;
  }

  // ------------------------------------------------------------------ MAP / UNMAP

  /** VFIO_IOMMU_MAP_DMA. Returns the IOVA (the one asked for, or the one picked). All or nothing. */
  mapDma(given: MapDmaRequest): bigint { return this.type1.map(given); }

  /**
   * VFIO_IOMMU_UNMAP_DMA (v2). Returns the bytes unmapped; with dirtyBitmap
   * (GET_DIRTY_BITMAP), also the pages of the range written since the last
   * report, read (and cleared) before anything is unmapped, so none is lost.
   */
  unmapDma(request: UnmapDirtyRequest): UnmapDirtyResult;
  unmapDma(request: UnmapDmaRequest): bigint;
  unmapDma(given: UnmapDmaRequest | UnmapDirtyRequest): bigint | UnmapDirtyResult { return this.type1.unmap(given); }

  /** The mappings, lowest IOVA first. */
  mappings(): readonly Readonly<DmaMapping>[] { return this.core.maps.all(); }

  /**
   * iommufd's IOAS_ALLOW_IOVAS: restricts where IOVAs are picked. Ranges need
   * start < end and may not overlap each other (EINVAL) or a reserved region
   * of an attached group (EADDRINUSE); the old list stays on error.
   */
  allowIovas(ranges: readonly { start: Address; end: Address }[]): void { this.type1.allowIovas(ranges); }

  // ------------------------------------------------------------------ GET_INFO

  /** VFIO_IOMMU_GET_INFO. */
  getInfo(): ContainerInfo {
    const core = this.core;
    requireDriver(core);
    return {
      // No domain (emulated groups only): type1's initial bitmap, every power of two from 4 KiB.
      pgsizes: core.domain ? core.host.topology.preset.pgsizes : ~0xfffn & ((1n << 64n) - 1n),
      iovaRanges: core.iovas.map((r) => ({ ...r })),
      dmaAvail: core.host.dmaEntryLimit - core.maps.size,
      migration: { pgsize: minPageSize(core), maxDirtyBitmapSize: MAX_DIRTY_BITMAP_BYTES },
    };
  }

  // ------------------------------------------------------------------ close

  /** Detaches every group and releases every mapping. */
  close(): void {
    const core = this.core;
    if (core.wedged) throw core.wedged;
    if (core.closed) return;
    for (const handle of this.handles.values()) handle.forget();
    this.handles.clear();
    core.groupIds.length = 0;
    this.release();
    // PASIDs still held go back to the host-wide space.
    this.pasid.release();
    core.closed = true;
  }
}
