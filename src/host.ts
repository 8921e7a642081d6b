// createHost(): one engine over one fixed-size WebAssembly.Memory, with
// physical RAM, the IOTLB, the fault log, page tables and domains.
import { toU64, hex, type Address } from "./addr.js";
import { fail } from "./errors.js";
import { BufferArena } from "./arena.js";
import { Domain, type DomainOptions } from "./domain.js";
import { FaultLog } from "./faults.js";
import { Iotlb } from "./iotlb.js";
import { PhysicalMemory } from "./memory.js";
import { PageTable } from "./pagetable.js";
import { DmaPort, type DmaInterrupt } from "./dma.js";
import type { DomainFlags, PageTableOptions } from "./format.js";
import { Engine } from "./engine/engine.js";
import { ENGINE_FINGERPRINT } from "./engine/load.js";
import { archPreset, type Arch } from "./vfio/arch.js";
import { Topology, type Conflict, type DeviceSpec, type GuestMapCheckOptions, type HostDevice } from "./vfio/topology.js";
import type { IovaRange, RangeSpec, ReservedRegion, ReservedRegionSpec } from "./vfio/reserved.js";
import { Process, type ProcessOptions } from "./vfio/process.js";
import { Container } from "./vfio/container.js";
import { VfioGroup, type Interrupt } from "./vfio/group.js";
import { DOORBELL_HPA } from "./vfio/msi.js";
import { EnginePlane } from "./vfio/plane.js";
import { EnginePasidPlane, PasidSpace } from "./vfio/pasid.js";
import { PASID_NODES_DEFAULT, PASID_NODES_MAX } from "./engine/abi.js";

export interface HostOptions {
  /** Bytes of physical RAM at HPA 0 (4 KiB multiple). Default 256 MiB. */
  ramSize?: Address;
  /** IOTLB geometry: sets (power of two, 16..65536) × ways (1..16). Default 512 × 4. */
  iotlb?: { sets?: number; ways?: number };
  /** Fault ring capacity (power of two, 16..65536). Default 1024. */
  faultRingSize?: number;
  /** Bytes of engine memory for allocBuffer() / createTranslationBatch(). Default 4 MiB. */
  bufferArenaSize?: number;
  /** The IOMMU: Intel VT-d (default) or Arm SMMUv3. Decides the stage-2 format, reserved regions and MSI handling. */
  arch?: Arch;
  /** IOMMU input address width (the aperture is 0 .. 2^width - 1). Default 48. */
  addressWidth?: number;
  /** MAP_DMA entries per container (type1's dma_entry_limit). Default 65535. */
  dmaEntryLimit?: number;
  /** Accept groups without MSI isolation (type1's allow_unsafe_interrupts). Default false. */
  allowUnsafeInterrupts?: boolean;
  /** Reserved regions every group has (e.g. RMRRs, bridge windows). */
  platformReserved?: ReservedRegionSpec[];
  /** Nodes in the pool every PASID tree (allocator, device PASID tables) takes from: 272 bytes each, 1..2^20. Default 16384. */
  pasidNodes?: number;
}

export interface ContainerOptions {
  /** The process whose memory MAP_DMA pins (each call may name another). */
  process?: Process;
  /** PASIDs the container may hold at once (VFIO_IOMMU_PASID_REQUEST's quota). Default 1000. */
  pasidQuota?: number;
}

export interface TranslationBatch { iovas: BigUint64Array; hpas: BigUint64Array; status: Uint8Array }

const isPow2 = (n: number, lo: number, hi: number): boolean => Number.isInteger(n) && n >= lo && n <= hi && (n & (n - 1)) === 0;

export class Host {
  readonly ram: PhysicalMemory;
  readonly iotlb: Iotlb;
  readonly faults: FaultLog;
  /** The host-wide PASID space: containers allocate from it (c.pasid); it makes device PASID tables. */
  readonly pasids: PasidSpace;
  /** Fingerprint of the WASM build this host runs. */
  readonly engineFingerprint = ENGINE_FINGERPRINT;
  private readonly arena: BufferArena;
  private readonly topology: Topology;
  private readonly dmaEntryLimit: number;
  private readonly allowUnsafeInterrupts: boolean;
  private readonly openGroups = new Set<number>();
  private readonly listeners = new Set<(interrupt: Interrupt) => void>();
  private processes = 0;
  private readonly plane: EnginePlane;

  /** @internal */
  constructor(readonly engine: Engine, topology: Topology, dmaEntryLimit: number, allowUnsafeInterrupts: boolean) {
    this.ram = new PhysicalMemory(engine);
    this.iotlb = new Iotlb(engine);
    this.faults = new FaultLog(engine);
    this.arena = new BufferArena(engine);
    this.topology = topology;
    this.dmaEntryLimit = dmaEntryLimit;
    this.allowUnsafeInterrupts = allowUnsafeInterrupts;
    this.plane = new EnginePlane(engine);
    this.pasids = new PasidSpace(new EnginePasidPlane(engine));
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
    return this.topology.checkGuestMemoryMap(ranges, options);
  }

  // ---- processes, containers, groups

  /** A user process with its own page tables in RAM. */
  createProcess(options: ProcessOptions = {}): Process {
    const pageTable = this.createPageTable({ format: "x86-64", levels: 4, pageSizes: [0x1000n] });
    return new Process(this.plane, this.ram, pageTable, ++this.processes, options);
  }

  /** Opens /dev/vfio/vfio: a container with no IOMMU set yet. */
  openContainer(options: ContainerOptions = {}): Container {
    return new Container({
      plane: this.plane,
      ram: this.ram,
      topology: this.topology,
      dmaEntryLimit: this.dmaEntryLimit,
      allowUnsafeInterrupts: this.allowUnsafeInterrupts,
      stage2: this.stage2(),
      createDomain: (o) => this.createDomain(o),
      pasids: this.pasids,
    }, options.process, options.pasidQuota);
  }

  /** Opens /dev/vfio/N: ENOENT for no such group, EBUSY while it is open. */
  openGroup(group: number): VfioGroup {
    this.topology.devicesOf(group);
    if (this.openGroups.has(group)) fail("EBUSY", `group ${group} is already open`);
    this.openGroups.add(group);
    const makePort = (domainId: () => number, sourceId: number, raise: (irq: DmaInterrupt) => void, pasidTable: () => number): DmaPort =>
      new DmaPort(this.engine, domainId, sourceId, raise, pasidTable);
    return new VfioGroup(makePort, this.topology, group, (irq) => this.raise(irq), () => this.openGroups.delete(group));
  }

  /** Calls cb for every MSI a device raises (a write to its doorbell); returns a function that stops it. */
  onInterrupt(cb: (interrupt: Interrupt) => void): () => void {
    this.listeners.add(cb);
    return () => { this.listeners.delete(cb); };
  }

  private raise(interrupt: Interrupt): void {
    for (const cb of this.listeners) cb(interrupt);
  }

  /** The stage-2 page-table format of this arch: VT-d second level, or Arm stage 2. */
  private stage2(): PageTableOptions {
    const p = this.topology.preset;
    if (p.arch === "vtd") return { format: "vtd-sl", inputBits: p.addressWidth, physAddrWidth: 52 };
    return { format: "arm64", stage: 2, inputBits: Math.min(p.addressWidth, 48), physAddrWidth: 48 };
  }

  /** A page table in RAM (a new root frame unless `root` is given). */
  createPageTable(options: PageTableOptions & DomainFlags = {}): PageTable {
    return new PageTable(this.engine, this.ram, options, options);
  }

  /** A domain over an existing page table, or over a table it creates from the options. */
  createDomain(options: DomainOptions = {}): Domain {
    return new Domain(this.engine, (o) => this.createPageTable(o), options);
  }

  /** A zero-filled buffer on engine memory: DMA and batches through it need no staging copy. */
  allocBuffer(byteLength: number): Uint8Array { return this.arena.alloc(byteLength); }

  freeBuffer(buffer: ArrayBufferView): void { this.arena.release(buffer); }

  /** Arrays for Domain.translateBatch that live on engine memory (no copies). */
  createTranslationBatch(count: number): TranslationBatch {
    if (!Number.isSafeInteger(count) || count <= 0) fail("EINVAL", `batch size must be a positive integer, got ${count}`);
    const iovaBytes = this.arena.alloc(count * 8);
    const hpaBytes = this.arena.alloc(count * 8);
    const status = this.arena.alloc(count);
    return {
      iovas: new BigUint64Array(iovaBytes.buffer, iovaBytes.byteOffset, count),
      hpas: new BigUint64Array(hpaBytes.buffer, hpaBytes.byteOffset, count),
      status,
    };
  }

  freeTranslationBatch(batch: TranslationBatch): void {
    this.arena.release(batch.iovas);
    this.arena.release(batch.hpas);
    this.arena.release(batch.status);
  }
}

export async function createHost(options: HostOptions = {}): Promise<Host> {
  const ramSize = toU64(options.ramSize ?? 256 * 1024 * 1024, "ramSize");
  if (ramSize === 0n || ramSize % 4096n !== 0n) fail("EINVAL", `ramSize ${hex(ramSize)} must be a non-zero multiple of 4 KiB`);
  if (ramSize > 0xC0000000n) fail("EINVAL", `ramSize ${hex(ramSize)} is above the 3 GiB a 32-bit WebAssembly.Memory can hold with engine state`);
  const sets = options.iotlb?.sets ?? 512;
  const ways = options.iotlb?.ways ?? 4;
  if (!isPow2(sets, 16, 65536)) fail("EINVAL", `iotlb.sets must be a power of two in 16..65536, got ${sets}`);
  if (!Number.isInteger(ways) || ways < 1 || ways > 16) fail("EINVAL", `iotlb.ways must be 1..16, got ${ways}`);
  const faultRingSize = options.faultRingSize ?? 1024;
  if (!isPow2(faultRingSize, 16, 65536)) fail("EINVAL", `faultRingSize must be a power of two in 16..65536, got ${faultRingSize}`);
  const arenaSize = options.bufferArenaSize ?? 4 * 1024 * 1024;
  if (!Number.isSafeInteger(arenaSize) || arenaSize < 0 || arenaSize > 0x10000000) fail("EINVAL", `bufferArenaSize must be 0..256 MiB, got ${arenaSize}`);
  const dmaEntryLimit = options.dmaEntryLimit ?? 65535;
  if (!Number.isSafeInteger(dmaEntryLimit) || dmaEntryLimit < 0) fail("EINVAL", `dmaEntryLimit must be a non-negative integer, got ${dmaEntryLimit}`);
  const pasidNodes = options.pasidNodes ?? PASID_NODES_DEFAULT;
  if (!Number.isInteger(pasidNodes) || pasidNodes < 1 || pasidNodes > PASID_NODES_MAX) fail("EINVAL", `pasidNodes must be an integer in 1..${PASID_NODES_MAX}, got ${pasidNodes}`);
  const topology = new Topology(archPreset(options.arch ?? "vtd", options.addressWidth), options.platformReserved ?? []);
  const engine = await Engine.create({ ramSize, iotlbSets: sets, iotlbWays: ways, faultRingSize, arenaSize, pasidNodes });
  // The SMMU's doorbell page: device writes that translate to it are interrupts.
  if (topology.preset.arch === "smmuv3") engine.wasm.setMsiDoorbell(DOORBELL_HPA, DOORBELL_HPA + 0xfffn);
  return new Host(engine, topology, dmaEntryLimit, options.allowUnsafeInterrupts ?? false);
}
