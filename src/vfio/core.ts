// What every part of a container reads and changes: its host, its IOMMU
// driver and domain, its groups, the valid IOVA list, the DMA mappings and
// the dirty-tracking switch. The parts (attach.ts, type1.ts, dirty.ts,
// nesting.ts, gpa.ts) take this core; container.ts owns it and is the facade.
import { fail, type KernelBug, type KernelWarning } from "../errors.js";
import type { PageTableOptions } from "../format.js";
import type { DataPlane } from "./plane.js";
import type { MappingList } from "./mappings.js";
import type { Process } from "./process.js";
import type { Topology } from "./topology.js";
import type { IovaRange } from "./reserved.js";
import type { PasidSpace } from "./pasid.js";

/** type1 v2, or nesting: the mappings are stage 2 and devices bind guest stage-1 tables to PASIDs. */
export type IommuType = "type1v2" | "nesting";

/** The domain a container builds (the engine's Domain, or the twin's). */
export interface ContainerDomain {
  readonly id: number;
  readonly pageTable: {
    map(iova: bigint, hpa: bigint, size: bigint, prot: { read?: boolean; write?: boolean }): void;
    iovaToPhys(iova: bigint): bigint | undefined;
  };
  /** Without a range: every entry of the domain. */
  invalidate(opts?: { iova: bigint; npages: bigint }): void;
  destroy(): void;
}

/** What a container needs from its host and groups (wired by Host). */
export interface ContainerHost {
  plane: DataPlane;
  topology: Topology;
  dmaEntryLimit: number;
  allowUnsafeInterrupts: boolean;
  /** The stage-2 page-table format of this arch. */
  stage2: PageTableOptions;
  /** Physical RAM (for guest-memory access through stage 2). */
  ram: { read(hpa: bigint, len: number): Uint8Array; write(hpa: bigint, bytes: Uint8Array): void };
  createDomain(options: PageTableOptions): ContainerDomain;
  /** The host-wide PASID space the container allocates from. */
  pasids: PasidSpace;
  /** The emulated devices (mdevs) of an emulated group, for the container's device list. */
  emulatedDevices(group: number): readonly EmulatedDevice[];
  /** Records a kernel WARN (host.warnings). */
  warn(warning: KernelWarning): void;
}

/**
 * A device VFIO registers with type1 when it is opened in a container (an
 * mdev): its vendor driver's dma_unmap op, called before a mapping it may
 * have pinned pages of goes.
 */
export interface EmulatedDevice {
  readonly uuid: string;
  readonly group: number;
  /** The vendor driver's dma_unmap op (undefined: the driver registered none). */
  readonly dmaUnmap: ((iova: bigint, size: bigint) => void) | undefined;
}

export interface ContainerCore {
  readonly host: ContainerHost;
  /** The process the container was opened by: MAP_DMA pins from it unless told otherwise. */
  readonly process: Process | undefined;
  iommu: IommuType | undefined;
  domain: ContainerDomain | undefined;
  readonly groupIds: number[];
  /** The valid IOVA list (inclusive ranges), the doorbell taken out. */
  iovas: IovaRange[];
  /** iommufd's allowed IOVAs, when set. */
  allowed: IovaRange[] | undefined;
  readonly maps: MappingList;
  dirtyTracking: boolean;
  /** The sw-msi doorbell's IOVA (SMMUv3), when mapped. */
  doorbell: bigint | undefined;
  closed: boolean;
  /** The emulated devices registered with type1 (opened in this container), most recently opened first. */
  devices: EmulatedDevice[];
  /** Set by a kernel BUG while the container's lock was held: every later call throws it again. */
  wedged: KernelBug | undefined;
}

/** GET_DIRTY_BITMAP's limit on one bitmap (the kernel's DIRTY_BITMAP_SIZE_MAX). */
export const MAX_DIRTY_BITMAP_BYTES = 1n << 28n;

export function live(core: ContainerCore): void {
  if (core.wedged) throw core.wedged;
  if (core.closed) fail("ENODEV", "container is closed");
}

/** SET_IOMMU done; the domain, when a group with an IOMMU is attached (a container of emulated groups only has none). */
export function requireDriver(core: ContainerCore): ContainerDomain | undefined {
  live(core);
  if (!core.iommu) fail("EINVAL", "no IOMMU driver is set on this container (setIommu first)");
  return core.domain;
}

/** SET_IOMMU done and an IOMMU domain there: what stage 2, dirty bits and guest tables need. */
export function requireIommu(core: ContainerCore): ContainerDomain {
  const domain = requireDriver(core);
  if (!domain) fail("EINVAL", "the container has no IOMMU domain: its groups are all emulated (mdevs)");
  return domain;
}

/** The container's groups that have an IOMMU (not emulated), in the order they joined. */
export function iommuGroups(core: ContainerCore): number[] {
  return core.groupIds.filter((g) => !core.host.topology.isEmulated(g));
}

/** The smallest IOMMU page: the granule of MAP/UNMAP and of dirty bitmaps. */
export function minPageSize(core: ContainerCore): bigint {
  const pgsizes = core.host.topology.preset.pgsizes;
  return pgsizes & -pgsizes;
}
