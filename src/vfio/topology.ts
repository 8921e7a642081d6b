// The host's devices and IOMMU groups as sysfs shows them
// (/sys/kernel/iommu_groups/N): which devices share a group, whether VFIO may
// take the group, its reserved regions, and the IOVA ranges left for DMA —
// everything a VMM can ask before it opens a container.
import { bool, list as checkList, options, show } from "../args.js";
import { fail } from "../errors.js";
import { U64_MAX } from "../addr.js";
import type { ArchPreset } from "./arch.js";
import type { DmaPort } from "../dma.js";
import { DEFAULT_MASK_BITS, maskBits } from "../dmaapi/dmaapi.js";
import {
  intersect, isRelaxable, mergeRegions, RESERVED_TYPES, subtractRanges, sysfsText, toIovaRange, toReservedRegion,
  type IovaRange, type RangeSpec, type ReservedRegion, type ReservedRegionSpec,
} from "./reserved.js";

/** 'host' is any driver that is not VFIO's: the host itself may DMA through it. */
export type Driver = "vfio-pci" | "host" | null;
const DRIVERS: readonly Driver[] = ["vfio-pci", "host", null];

export interface DeviceSpec {
  /** PCI address `DDDD:BB:DD.F` in hex (domain, bus, slot 0..1f, function 0..7); kept lowercase. */
  bdf: string;
  /**
   * IOMMU group to join (created if new). Omitted: a group of its own, with
   * the lowest id no group uses yet — what the kernel's ida_alloc hands
   * iommu_group_alloc, so ids start at 0.
   */
  group?: number;
  /** The device's own regions (e.g. its RMRRs). */
  reserved?: readonly ReservedRegionSpec[];
  /** Default: the preset's msiIsolatedDefault. */
  msiIsolated?: boolean;
  /** Default 'vfio-pci' ('vfio-pci' cannot take a device with no IOMMU: null for one). */
  driver?: Driver;
  /**
   * false: no IOMMU in front of the device (dma-direct): it is in no IOMMU
   * group, VFIO cannot take it (binding vfio-pci is EINVAL), and its DMA
   * reaches physical addresses directly. It then takes no group, reserved
   * regions or msiIsolated (EINVAL). Default true.
   */
  iommu?: boolean;
  /** The DMA mask the DMA API starts with, in bits (12..64; EIO below 12, as dma_set_mask). Default 32, the PCI default. */
  dmaMask?: number;
}

/** What a device asks of its host: whether VFIO holds its group, whether the host's DMA API still maps for it, its DMA port. */
export interface DeviceOwners {
  claimed(group: number): boolean;
  /** Whether another owner than the host (a hypervisor's driver domain) holds the group. */
  held(group: number): boolean;
  dmaBusy(device: HostDevice): boolean;
  port(device: HostDevice): DmaPort;
}

/** The host's DMA side, as the topology asks it. */
export interface DmaOwners extends Omit<DeviceOwners, "claimed" | "held"> {
  /** Readies DMA for a device with no IOMMU (the identity view of RAM); throws (ENOMEM) with nothing changed. */
  prepareDirect(): void;
}

export class HostDevice {
  private boundDriver: Driver;

  /** @internal */
  constructor(
    readonly bdf: string,
    /** The device's IOMMU group; null when no IOMMU is in front of it. */
    readonly group: number | null,
    readonly reserved: readonly Readonly<ReservedRegion>[],
    readonly msiIsolated: boolean,
    driver: Driver,
    /** The DMA mask its DMA API starts with, in bits. */
    readonly dmaMask: number,
    private readonly owners: DeviceOwners,
  ) {
    this.boundDriver = driver;
  }

  /** Whether an IOMMU is in front of the device (false: dma-direct, DMA reaches physical addresses). */
  get iommu(): boolean { return this.group !== null; }

  get driver(): Driver { return this.boundDriver; }

  /**
   * The device's DMA as it issues it: through its group's default domain
   * (the DMA API's) while a host driver owns it; with no owner, or while VFIO
   * holds it (use the VFIO device's port then), every access faults. With no
   * IOMMU in front of it, straight to physical addresses whoever owns it
   * (beyond RAM it faults).
   */
  get dma(): DmaPort { return this.owners.port(this); }

  /**
   * Binds the device to another driver; null unbinds it. Viability of its
   * group follows. A host driver cannot take a device whose group VFIO owns
   * (in a container): EBUSY, as the kernel's DMA-owner claim refuses it; nor
   * let go of one while the DMA API still has live mappings (EBUSY).
   * vfio-pci cannot take a device with no IOMMU (EINVAL: its probe finds no
   * IOMMU group, and the model has no VFIO no-IOMMU mode).
   */
  bindDriver(driver: Driver): void {
    const next = toDriver(driver, this.bdf);
    if (this.group !== null && this.owners.held(this.group)) fail("EBUSY", `${this.bdf}: group ${this.group} is assigned to a VM; no host driver may bind it`);
    if (next === "vfio-pci" && this.group === null) fail("EINVAL", noGroupForVfio(this.bdf));
    if (next === "host" && this.boundDriver !== "host" && this.group !== null && this.owners.claimed(this.group)) {
      fail("EBUSY", `${this.bdf}: group ${this.group} is in a VFIO container; a host driver cannot take the device`);
    }
    if (next !== "host" && this.boundDriver === "host" && this.owners.dmaBusy(this)) {
      fail("EBUSY", `${this.bdf}: its DMA API still has live mappings; unmap them before the driver lets go`);
    }
    this.boundDriver = next;
  }
}

/**
 * The part of the address space the IOMMU cannot translate (above the
 * aperture's end, or below its start). Not a kernel reserved type: MAP_DMA
 * there fails with EINVAL just the same, so a guest memory map is checked
 * against it too.
 */
export interface OutsideAperture {
  start: bigint;
  end: bigint;
  type: "outside-aperture";
}

export interface Conflict {
  /** The guest RAM range, normalised to an inclusive end. */
  range: IovaRange;
  region: ReservedRegion | OutsideAperture;
  /** The group whose reserved region it is; null for outside-aperture, which every group shares. */
  group: number | null;
  /** The addresses of `range` that fall in `region`. */
  overlap: IovaRange;
}

export interface GuestMapCheckOptions {
  /** Groups whose reserved regions count. Default: every group. */
  groups?: readonly number[];
}

const BDF = /^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/i;
const PCI_MAX_SLOT = 0x1f;

function toBdf(bdf: string): string {
  const m = typeof bdf === "string" ? BDF.exec(bdf) : null;
  if (m === null || parseInt(m[3], 16) > PCI_MAX_SLOT) {
    fail("EINVAL", `device address ${show(bdf)} is not DDDD:BB:DD.F (hex; slot up to 1f, function 0..7)`);
  }
  return bdf.toLowerCase();
}

/** vfio_group_find_or_alloc: a device with no IOMMU group gets none (EINVAL) unless VFIO's no-IOMMU mode is on, which the model does not have. */
const noGroupForVfio = (bdf: string): string => `${bdf}: no IOMMU group, so vfio-pci cannot take it (VFIO's no-IOMMU mode is not modelled)`;

function toDriver(driver: Driver, bdf: string): Driver {
  if (!DRIVERS.includes(driver)) fail("EINVAL", `${bdf}: driver must be 'vfio-pci', 'host' or null, got ${show(driver)}`);
  return driver;
}

function toGroupId(group: number, what: string): number {
  if (typeof group !== "number" || !Number.isSafeInteger(group) || group < 0) {
    fail("EINVAL", `${what} must be a non-negative integer, got ${show(group)}`);
  }
  return group;
}

const compareBig = (a: bigint, b: bigint): number => (a < b ? -1 : a > b ? 1 : 0);
const regionRank = (type: Conflict["region"]["type"]): number =>
  type === "outside-aperture" ? RESERVED_TYPES.length : RESERVED_TYPES.indexOf(type);

export class Topology {
  readonly preset: ArchPreset;
  /** Firmware regions every group gets (e.g. RMRRs that cover all devices). */
  readonly platformReserved: readonly Readonly<ReservedRegion>[];
  private readonly devices = new Map<string, HostDevice>();
  private readonly members = new Map<number, HostDevice[]>();
  /** Groups VFIO holds (in a container): their devices' DMA is the container's, no host driver's. */
  private readonly claimed = new Set<number>();
  /** Emulated groups (an mdev's): no device on the bus, no IOMMU, no reserved region. */
  private readonly emulated = new Set<number>();
  /** Groups another owner holds (a hypervisor, for a driver domain): no host driver, DMA API or VFIO may take them meanwhile. */
  private readonly heldGroups = new Set<number>();
  /** @internal The host's DMA side (set by the host that owns this topology). */
  dmaOwners: DmaOwners = { dmaBusy: () => false, port: () => fail("ENODEV", "this host has no DMA API"), prepareDirect: () => undefined };

  constructor(preset: ArchPreset, platformReserved: readonly ReservedRegionSpec[] = []) {
    this.preset = preset;
    this.platformReserved = Object.freeze(
      platformReserved.map((spec, i) => Object.freeze(toReservedRegion(spec, `platform reserved region ${i}`))),
    );
  }

  addDevice(given: DeviceSpec): HostDevice {
    if (given === undefined) fail("EINVAL", "device spec must be an object with a bdf");
    const spec = options(given, "device spec", ["bdf", "group", "reserved", "msiIsolated", "driver", "iommu", "dmaMask"] as const) as DeviceSpec;
    const bdf = toBdf(spec.bdf);
    if (this.devices.has(bdf)) fail("EEXIST", `device ${bdf} already exists`);
    const iommu = bool(spec.iommu, `${bdf}: iommu`, true);
    const driver = toDriver(spec.driver === undefined ? (iommu ? "vfio-pci" : null) : spec.driver, bdf);
    const dmaMask = spec.dmaMask === undefined ? DEFAULT_MASK_BITS : maskBits(spec.dmaMask, `${bdf}: dmaMask`);
    if (!iommu) return this.addDirect(bdf, spec, driver, dmaMask);
    const group = spec.group === undefined ? this.lowestFreeGroup() : toGroupId(spec.group, `${bdf}: group`);
    const reserved = Object.freeze(
      (spec.reserved === undefined ? [] : checkList(spec.reserved, `${bdf} reserved`)).map((r, i) => Object.freeze(toReservedRegion(r as ReservedRegionSpec, `${bdf} reserved region ${i}`))),
    );
    const msiIsolated = spec.msiIsolated ?? this.preset.msiIsolatedDefault;
    bool(msiIsolated, `${bdf}: msiIsolated`, false);

    const device = new HostDevice(bdf, group, reserved, msiIsolated, driver, dmaMask, this.owners());
    this.devices.set(bdf, device);
    const list = this.members.get(group);
    if (list === undefined) this.members.set(group, [device]);
    else list.push(device);
    return device;
  }

  /**
   * A device with no IOMMU in front: in no group (no group, reserved regions
   * or isolated MSIs to give it), never VFIO's (vfio-pci: EINVAL, as
   * vfio_group_find_or_alloc finds no IOMMU group); its DMA is readied before
   * it is recorded.
   */
  private addDirect(bdf: string, spec: DeviceSpec, driver: Driver, dmaMask: number): HostDevice {
    if (spec.group !== undefined) fail("EINVAL", `${bdf}: a device with no IOMMU is in no IOMMU group, got group ${show(spec.group)}`);
    if (spec.reserved !== undefined) fail("EINVAL", `${bdf}: a device with no IOMMU has no IOMMU reserved regions`);
    if (bool(spec.msiIsolated, `${bdf}: msiIsolated`, false)) fail("EINVAL", `${bdf}: with no IOMMU there is no interrupt remapping to isolate its MSIs`);
    if (driver === "vfio-pci") fail("EINVAL", noGroupForVfio(bdf));
    this.dmaOwners.prepareDirect();
    const device = new HostDevice(bdf, null, [], false, driver, dmaMask, this.owners());
    this.devices.set(bdf, device);
    return device;
  }

  private owners(): DeviceOwners {
    return { claimed: (g) => this.claimed.has(g), held: (g) => this.heldGroups.has(g), dmaBusy: (d) => this.dmaOwners.dmaBusy(d), port: (d) => this.dmaOwners.port(d) };
  }

  /** Every group id, ascending. */
  groups(): number[] {
    return [...this.members.keys()].sort((a, b) => a - b);
  }

  /** The group's devices in bdf order, as `ls /sys/kernel/iommu_groups/N/devices` lists them. */
  devicesOf(group: number): HostDevice[] {
    return [...this.membersOf(group)].sort((a, b) => (a.bdf < b.bdf ? -1 : a.bdf > b.bdf ? 1 : 0));
  }

  device(bdf: string): HostDevice {
    const key = toBdf(bdf);
    const device = this.devices.get(key);
    if (device === undefined) fail("ENODEV", `no device ${key}`);
    return device;
  }

  /**
   * VFIO takes a group only when no device in it is driven by a host driver:
   * every device bound to vfio-pci or to nothing. The kernel also leaves
   * drivers that never DMA on the host's behalf bound (driver_managed_dma,
   * e.g. pci-stub); model those as null.
   */
  viable(group: number): boolean {
    return this.membersOf(group).every((d) => d.driver === "vfio-pci" || d.driver === null);
  }

  /**
   * @internal A new emulated IOMMU group for an mdev: the lowest free id, from
   * the id space real groups use (vfio makes a group of its own for the
   * device, type VFIO_EMULATED_IOMMU).
   */
  addEmulatedGroup(): number {
    const id = this.lowestFreeGroup();
    this.members.set(id, []);
    this.emulated.add(id);
    return id;
  }

  /** @internal The mdev is gone: its group's id is free again. */
  removeEmulatedGroup(group: number): void {
    if (!this.emulated.delete(group)) return;
    this.members.delete(group);
    this.claimed.delete(group);
  }

  /** Whether the group is an emulated one (an mdev's): type1 gives it no domain. */
  isEmulated(group: number): boolean { return this.emulated.has(group); }

  /** Whether VFIO holds the group (it is in a container). */
  isClaimed(group: number): boolean { return this.claimed.has(group); }
  /** @internal VFIO takes (or gives back) a group's DMA ownership as it joins (leaves) a container. */
  claim(group: number, held: boolean): void {
    if (held) this.claimed.add(group);
    else this.claimed.delete(group);
  }

  /** Whether another owner (a hypervisor's driver domain) holds the group. */
  isHeld(group: number): boolean { return this.heldGroups.has(group); }
  /** @internal Another owner takes (or gives back) a group: VFIO, host drivers and the DMA API are refused it (EBUSY) meanwhile. */
  hold(group: number, held: boolean): void {
    if (held) this.heldGroups.add(group);
    else this.heldGroups.delete(group);
  }

  /** A group's MSIs are isolated only when every device's are. */
  msiIsolated(group: number): boolean {
    return this.membersOf(group).every((d) => d.msiIsolated);
  }

  /** The group's list as the kernel builds it: hardware, platform and every device's regions, merged. */
  reservedRegions(group: number): ReservedRegion[] {
    const own = this.membersOf(group).flatMap((d) => d.reserved);
    // No IOMMU behind an emulated group: no region reaches it.
    if (this.emulated.has(group)) return [];
    return mergeRegions([...this.preset.hardwareReserved, ...this.platformReserved, ...own]);
  }

  /** Byte for byte what /sys/kernel/iommu_groups/N/reserved_regions reads. */
  reservedRegionsText(group: number): string {
    return sysfsText(this.reservedRegions(group));
  }

  /**
   * IOVA ranges a group — or, without an argument, every group at once —
   * can map: the aperture minus every non-relaxable reserved region. With no
   * group on the host nothing is reserved (the kernel's regions all come
   * through devices), so the whole aperture is usable.
   */
  usableRanges(group?: number): IovaRange[] {
    return this.apertureMinusReserved(group === undefined ? this.groups() : [group]);
  }

  /**
   * The valid IOVA list VFIO type1 computes once these groups share a
   * container (vfio_iommu_aper_resize + vfio_iommu_resv_exclude). May be
   * empty; attaching then fails with EINVAL, which is the caller's to raise.
   * No groups: the bare aperture.
   */
  iovaList(groups: readonly number[]): IovaRange[] {
    return this.apertureMinusReserved(groups.filter((g) => !this.emulated.has(g)));
  }

  /**
   * Every place a guest RAM range (IOVA = GPA, as a VMM maps it) would hit a
   * non-relaxable reserved region of one of the groups, or leave the
   * aperture. One entry per range × region × group; sorted by range, then
   * region, then group.
   */
  checkGuestMemoryMap(ranges: readonly RangeSpec[], options: GuestMapCheckOptions = {}): Conflict[] {
    const ram = checkList(ranges, "guest RAM ranges").map((r, i) => toIovaRange(r as RangeSpec, `guest RAM range ${i}`));
    const groups = this.distinctGroups(options.groups ?? this.groups());
    const conflicts: Conflict[] = [];
    for (const group of groups) {
      for (const region of this.reservedRegions(group)) {
        if (isRelaxable(region.type)) continue;
        for (const range of ram) {
          const overlap = intersect(range, region);
          if (overlap !== null) conflicts.push({ range, region, group, overlap });
        }
      }
    }
    for (const gap of this.outsideAperture()) {
      for (const range of ram) {
        const overlap = intersect(range, gap);
        if (overlap !== null) conflicts.push({ range, region: gap, group: null, overlap });
      }
    }
    return conflicts.sort((a, b) =>
      compareBig(a.range.start, b.range.start) || compareBig(a.range.end, b.range.end) ||
      compareBig(a.region.start, b.region.start) || regionRank(a.region.type) - regionRank(b.region.type) ||
      compareBig(a.region.end, b.region.end) || (a.group ?? -1) - (b.group ?? -1));
  }

  private apertureMinusReserved(groups: readonly number[]): IovaRange[] {
    const holes = this.distinctGroups(groups)
      .flatMap((g) => this.reservedRegions(g))
      .filter((r) => !isRelaxable(r.type));
    return subtractRanges([this.preset.aperture], holes);
  }

  private outsideAperture(): OutsideAperture[] {
    return subtractRanges([{ start: 0n, end: U64_MAX }], [this.preset.aperture])
      .map(({ start, end }) => ({ start, end, type: "outside-aperture" as const }));
  }

  private membersOf(group: number): HostDevice[] {
    const list = this.members.get(toGroupId(group, "group"));
    if (list === undefined) fail("ENOENT", `no IOMMU group ${group}`);
    return list;
  }

  /** Checks each id names a group; a repeated id counts once. */
  private distinctGroups(groups: readonly number[]): number[] {
    const ids = checkList(groups, "groups") as number[];
    for (const g of ids) this.membersOf(g);
    return [...new Set(ids)];
  }

  private lowestFreeGroup(): number {
    let id = 0;
    while (this.members.has(id)) id++;
    return id;
  }
}
