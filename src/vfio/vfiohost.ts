// The VFIO side of a host, written once for createHost() and the naive
// twin: devices, groups and reserved regions (the topology), processes,
// containers, opened groups and MSI listeners. A host brings its own data
// plane, RAM, PASID space, page tables, domains and DMA ports.
import { fail, type KernelWarning } from "../errors.js";
import { MdevRegistry, type MdevSpec } from "../mdev/registry.js";
import type { Mdev } from "../mdev/mdev.js";
import { gpuContext, gpuTableOptions, type GpuDomainObject, type GpuTable } from "../shadow/context.js";
import type { GpuDomain } from "../shadow/shadow.js";
import { func, isInstance, options as checkOptions, show } from "../args.js";
import type { DmaInterrupt } from "../dma.js";
import type { DomainFlags, PageTableOptions } from "../format.js";
import { stage2Options, type Arch } from "./arch.js";
import { Container, type ContainerDomain, type ContainerHost } from "./container.js";
import { VfioGroup, requesterId, type Interrupt } from "./group.js";
import type { PasidSpace } from "./pasid.js";
import type { DataPlane } from "./plane.js";
import { Process, processLimit, type ProcessOptions, type ProcessPageTable, type ProcessRam } from "./process.js";
import type { IovaRange, RangeSpec, ReservedRegion } from "./reserved.js";
import type { Conflict, DeviceSpec, GuestMapCheckOptions, HostDevice, Topology } from "./topology.js";
import { PASID_TABLE_NONE } from "../engine/abi.js";
import { HostDma } from "../dmaapi/hostdevices.js";
import type { DmaApi } from "../dmaapi/dmaapi.js";
import type { IovaAllocator } from "../dmaapi/iommu.js";
import { Hypervisor, hypervisorOptions, type HypervisorOptions } from "../xen/hypervisor.js";

export interface ContainerOptions {
  /** The process whose memory MAP_DMA pins (each call may name another). */
  process?: Process;
  /** PASIDs the container may hold at once (VFIO_IOMMU_PASID_REQUEST's quota). Default 1000. */
  pasidQuota?: number;
}

/** The VFIO settings of a host (HostOptions, checked). */
export interface VfioSettings { topology: Topology; dmaEntryLimit: number; allowUnsafeInterrupts: boolean }

export abstract class VfioHost<Port> {
  abstract readonly ram: ProcessRam & ContainerHost["ram"] & { readonly size: bigint; allocFrames(count?: number): bigint; freeFrames(hpa: bigint, count?: number): void };
  /** The host-wide PASID space: containers allocate from it (c.pasid); it makes device PASID tables. */
  abstract readonly pasids: PasidSpace;
  protected abstract readonly plane: DataPlane;
  protected readonly topology: Topology;
  private readonly settings: VfioSettings;
  private readonly openGroups = new Map<number, VfioGroup<Port>>();
  private readonly mdevList: MdevRegistry;
  private readonly warningLog: KernelWarning[] = [];
  private readonly listeners = new Set<(interrupt: Interrupt) => void>();
  /** Page tables and domains this host made: the only ones a domain may be built over. */
  private readonly made = new WeakSet<object>();
  private processes = 0;
  /** Devices host drivers own: default domains, the DMA API, device ports (made at first use). */
  private hostDmaRef: HostDma<Port> | undefined;
  private hypervisorRef: Hypervisor<Port> | undefined;

  protected constructor(settings: VfioSettings) {
    this.settings = settings;
    this.topology = settings.topology;
    this.mdevList = new MdevRegistry(this.topology, {
      openContainer: (g) => {
        const c = this.openGroups.get(g)?.container;
        return c?.iommuType !== undefined ? c : undefined;
      },
      groupOpen: (g) => this.openGroups.has(g),
      gpuContext: (dma, table) => {
        const stage2 = this.hostDma.domainOf(dma);
        if (stage2 === undefined) fail("ENODEV", `${dma.bdf} has no domain its device's MMU could translate into`);
        return this.gpuContext(table, stage2);
      },
      parentPort: (bdf) => this.topology.device(bdf).dma,
      frame: () => {
        const hpa = this.ram.allocFrames(1);
        this.ram.write(hpa, new Uint8Array(0x1000));
        return { hpa, write: (offset, bytes) => this.ram.write(hpa + BigInt(offset), bytes), free: () => this.ram.freeFrames(hpa, 1) };
      },
    });
    this.topology.dmaOwners = {
      dmaBusy: (device) => this.hostDmaRef?.busy(device) ?? false,
      port: (device) => this.hostDma.port(device) as never,
      prepareDirect: () => this.hostDma.prepareDirect(),
    };
  }

  /** An IOVA allocator for a default domain (iova.c's; the twin brings its own). */
  protected abstract makeIova(startPfn: bigint): IovaAllocator;

  private get hostDma(): HostDma<Port> {
    this.hostDmaRef ??= new HostDma<Port>({
      topology: this.topology,
      ramSize: this.ram.size,
      createDomain: (o) => this.createDomain(o),
      plane: this.plane,
      makeIova: (startPfn) => this.makeIova(startPfn),
      makePort: (domainId, sourceId, raise) => this.makePort(domainId, sourceId, raise, () => PASID_TABLE_NONE),
      raise: (device, irq) => this.raise({ device, address: irq.address, data: irq.data }),
    });
    return this.hostDmaRef;
  }

  /**
   * The DMA API of a device a host driver owns (driver 'host'): dma_map_page
   * and friends over its group's default domain, or dma-direct (DMA address =
   * physical address) for a device with no IOMMU. EBUSY while VFIO owns the
   * device (bound to vfio-pci, or its group in a container); ENODEV with no driver.
   */
  dmaApi(bdf: string): DmaApi { return this.hostDma.dmaApi(bdf); }

  /**
   * The host's hypervisor (made at the first call; a later call with other
   * options is EBUSY): VMs over per-VM p2ms, driver domains, delegated mapping.
   */
  hypervisor(options?: HypervisorOptions): Hypervisor<Port> {
    const wanted = hypervisorOptions(options);
    if (this.hypervisorRef !== undefined) {
      if (options !== undefined && wanted.exposeMfn !== this.hypervisorRef.exposeMfn) {
        fail("EBUSY", "hypervisor: this host's hypervisor already runs with other options");
      }
      return this.hypervisorRef;
    }
    const stage2 = stage2Options(this.topology.preset);
    this.hypervisorRef = new Hypervisor<Port>({
      plane: this.plane,
      createContext: () => this.createDomain(stage2),
      gpuContext: (stage2, table) => this.gpuContext(table, stage2),
      inputBits: stage2.inputBits!,
      ram: this.ram,
      topology: this.topology,
      makePort: (domainId, bdf) => this.makePort(domainId, requesterId(bdf), (irq) => this.raise({ device: bdf, address: irq.address, data: irq.data }), () => PASID_TABLE_NONE),
    }, options);
    return this.hypervisorRef;
  }

  /** A GPU's translation context of `table` over stage2, for a shadow GTT. */
  private gpuContext(table: GpuTable, stage2: unknown): GpuDomain {
    return gpuContext(this.plane, this.createDomain(gpuTableOptions(table, stage2) as unknown as PageTableOptions) as unknown as GpuDomainObject);
  }

  abstract createPageTable(options: PageTableOptions & DomainFlags): ProcessPageTable;
  abstract createDomain(options: PageTableOptions): ContainerDomain;
  /** A device's DMA port: its requests go through the group's domain, PASID-tagged ones through its PASID table. */
  protected abstract makePort(domainId: () => number, sourceId: number, raise: (irq: DmaInterrupt) => void, pasidTable: () => number): Port;

  /** Records a page table or domain as this host's. */
  protected remember<T extends object>(made: T): T {
    this.made.add(made);
    return made;
  }

  /** A domain's pageTable or stage2 must be a live object of this host (not another host's, not a look-alike). */
  protected checkOperands(options: Record<string, unknown>): void {
    for (const key of ["pageTable", "stage2"] as const) {
      const given = options[key];
      if (given !== undefined && !this.made.has(given as object)) fail("EINVAL", `createDomain: ${key} must be a ${key === "stage2" ? "domain" : "page table"} this host made, got ${show(given)}`);
    }
  }

  // ---- topology: devices, groups, reserved regions (the sysfs view; no container needed)

  get arch(): Arch { return this.topology.preset.arch; }
  /** The IOMMU aperture, inclusive. */
  get aperture(): IovaRange { return { ...this.topology.preset.aperture }; }

  addDevice(spec: DeviceSpec): HostDevice { return this.topology.addDevice(spec); }
  device(bdf: string): HostDevice { return this.topology.device(bdf); }
  iommuGroups(): number[] { return this.topology.groups(); }
  devicesOf(group: number): HostDevice[] { return this.topology.devicesOf(group); }
  reservedRegions(group: number): ReservedRegion[] { return this.topology.reservedRegions(group); }
  /** /sys/kernel/iommu_groups/N/reserved_regions, byte for byte. */
  reservedRegionsText(group: number): string { return this.topology.reservedRegionsText(group); }
  /** The aperture minus the group's (or every group's) non-relaxable reserved regions. */
  usableRanges(group?: number): IovaRange[] { return this.topology.usableRanges(group); }
  /** Each overlap of guest RAM with a region a device could not DMA to (before hot-add, or after migration). */
  checkGuestMemoryMap(ranges: readonly RangeSpec[], options?: GuestMapCheckOptions): Conflict[] {
    return this.topology.checkGuestMemoryMap(ranges, checkOptions(options, "checkGuestMemoryMap options", ["groups"] as const) as GuestMapCheckOptions);
  }

  // ---- processes, containers, groups

  /** A user process with its own page tables in RAM. */
  createProcess(options?: ProcessOptions): Process {
    // The options first: a refused call makes no page table.
    const memlockLimit = processLimit(options);
    const pageTable = this.createPageTable({ format: "x86-64", levels: 4, pageSizes: [0x1000n] });
    return new Process(this.plane, this.ram, pageTable, ++this.processes, { memlockLimit });
  }

  /** Opens /dev/vfio/vfio: a container with no IOMMU set yet. */
  openContainer(given?: ContainerOptions): Container {
    const options = checkOptions(given, "openContainer options", ["process", "pasidQuota"] as const) as ContainerOptions;
    if (options.process !== undefined && !isInstance(options.process, Process)) fail("EINVAL", `openContainer: process must be a Process (host.createProcess()), got ${show(options.process)}`);
    return new Container({
      plane: this.plane,
      ram: this.ram,
      topology: this.topology,
      dmaEntryLimit: this.settings.dmaEntryLimit,
      allowUnsafeInterrupts: this.settings.allowUnsafeInterrupts,
      stage2: stage2Options(this.topology.preset),
      createDomain: (o) => this.createDomain(o),
      pasids: this.pasids,
      emulatedDevices: (g) => this.mdevList.ofGroup(g),
      warn: (w) => { this.warningLog.push(w); },
    }, options.process, options.pasidQuota);
  }

  /** Opens /dev/vfio/N: ENOENT for no such group, EBUSY while it is open. */
  openGroup(group: number): VfioGroup<Port> {
    this.topology.devicesOf(group);
    if (this.openGroups.has(group)) fail("EBUSY", `group ${group} is already open`);
    const opened = new VfioGroup((domainId, sourceId, raise, pasidTable) => this.makePort(domainId, sourceId, raise, pasidTable),
      this.topology, group, (irq) => this.raise(irq), () => this.openGroups.delete(group));
    this.openGroups.set(group, opened);
    return opened;
  }

  // ---- mediated devices

  /**
   * Makes a mediated device on `parent`, a device its vendor driver drives
   * (driver 'host'; ENODEV otherwise), with an emulated IOMMU group of its
   * own (mdev.group). EEXIST for a UUID in use.
   */
  createMdev(spec: MdevSpec): Mdev { return this.mdevList.create(spec); }

  /** The mediated devices, oldest first. */
  mdevs(): Mdev[] { return this.mdevList.all(); }

  /** The kernel WARNs the model met and carried on after, oldest first (unpin past a mapping, pins leaked, a callback that threw). */
  get warnings(): readonly KernelWarning[] { return [...this.warningLog]; }

  /** Calls cb for every MSI a device raises (a write to its doorbell); returns a function that stops it. */
  onInterrupt(cb: (interrupt: Interrupt) => void): () => void {
    this.listeners.add(func(cb, "onInterrupt callback"));
    return () => { this.listeners.delete(cb); };
  }

  private raise(interrupt: Interrupt): void {
    for (const cb of this.listeners) cb(interrupt);
  }
}
