// createNaiveHost(): the twin of createHost(), with the same options, the
// same surface and the same answers, in plain TypeScript. bufferArenaSize is
// accepted but not enforced: allocBuffer() returns plain Uint8Arrays.
//
// The VFIO API is the facade's own control logic (src/vfio: topology,
// container, process, group) run over the twin's data plane (NaivePlane),
// page tables, RAM and DMA ports, so only the data plane is restated here.
import type { DomainFlags, HostOptions, IotlbStats, PageTableOptions, TranslationBatch } from "../../src/index.js";
import type { DmaInterrupt } from "../../src/dma.js";
import { archPreset, type Arch } from "../../src/vfio/arch.js";
import { Container, type ContainerDomain } from "../../src/vfio/container.js";
import { VfioGroup, type Interrupt } from "../../src/vfio/group.js";
import { DOORBELL_HPA } from "../../src/vfio/msi.js";
import { Process, type ProcessOptions } from "../../src/vfio/process.js";
import type { IovaRange, RangeSpec, ReservedRegion } from "../../src/vfio/reserved.js";
import { Topology, type Conflict, type DeviceSpec, type GuestMapCheckOptions, type HostDevice } from "../../src/vfio/topology.js";
import { fail, hex, toU64 } from "./args.js";
import { Builder } from "./builder.js";
import { Contexts } from "./context.js";
import { NaiveDmaPort } from "./dma.js";
import * as abi from "../../src/engine/abi.js";
import { NaiveDomain, type NaiveDomainOptions } from "./domain.js";
import { NaiveFaultLog } from "./faults.js";
import { FrameAllocator } from "./frames.js";
import { NaiveIotlb } from "./iotlb.js";
import { NaivePhysicalMemory } from "./memory.js";
import { NaivePageTable, type NaiveCore } from "./pagetable.js";
import { FramePins } from "./pins.js";
import { NaivePlane } from "./plane.js";
import { Ram } from "./ram.js";
import { Translator } from "./translate.js";
import { NaivePasidPlane } from "./pasid.js";
import { PasidSpace } from "../../src/vfio/pasid.js";

const isPow2 = (n: number, lo: number, hi: number): boolean => Number.isInteger(n) && n >= lo && n <= hi && (n & (n - 1)) === 0;

/** Host-wide view of the twin's IOTLB. */
export class NaiveIotlbView {
  constructor(private readonly tlb: NaiveIotlb) {}
  get sets(): number { return this.tlb.sets; }
  get ways(): number { return this.tlb.ways; }
  get entries(): number { return this.tlb.sets * this.tlb.ways; }
  stats(): IotlbStats { return { ...this.tlb.counters }; }
  invalidateAll(): void { this.tlb.flushAll(); }
}

/** The VFIO settings of a host (HostOptions, checked). */
export interface NaiveVfioConfig { topology: Topology; dmaEntryLimit: number; allowUnsafeInterrupts: boolean }

export class NaiveHost {
  readonly ram: NaivePhysicalMemory;
  readonly iotlb: NaiveIotlbView;
  readonly faults: NaiveFaultLog;
  /** The host-wide PASID space, the facade's rules over the twin's Maps. */
  private readonly pasidPlane = new NaivePasidPlane();
  readonly pasids = new PasidSpace(this.pasidPlane);
  private readonly core: NaiveCore;
  private readonly translator: Translator;
  private readonly plane: NaivePlane;
  private readonly pins: FramePins;
  private readonly topology: Topology;
  private readonly dmaEntryLimit: number;
  private readonly allowUnsafeInterrupts: boolean;
  private readonly openGroups = new Set<number>();
  private readonly listeners = new Set<(interrupt: Interrupt) => void>();
  private processes = 0;
  /** Buffers that stand for engine memory: DMA through them needs no staging. */
  private readonly resident = new WeakSet<ArrayBufferLike>();
  private readonly liveBuffers = new WeakSet<ArrayBufferLike>();

  constructor(ramSize: bigint, sets: number, ways: number, faultRingSize: number, vfio: NaiveVfioConfig) {
    const ram = new Ram(ramSize);
    const frames = new FrameAllocator(ram);
    const memory = new NaivePhysicalMemory(ram, frames);
    const contexts = new Contexts();
    const tlb = new NaiveIotlb(sets, ways, contexts);
    this.pins = new FramePins(frames);
    this.faults = new NaiveFaultLog(faultRingSize);
    this.core = { ram, memory, contexts, builder: new Builder(ram, frames, this.pins), iotlb: tlb, doorbell: { start: 1n, end: 0n } };
    this.translator = new Translator(ram, contexts, tlb, this.faults);
    this.plane = new NaivePlane(this.core, this.pins);
    this.ram = memory;
    this.iotlb = new NaiveIotlbView(tlb);
    this.resident.add(ram.buffer);
    this.topology = vfio.topology;
    this.dmaEntryLimit = vfio.dmaEntryLimit;
    this.allowUnsafeInterrupts = vfio.allowUnsafeInterrupts;
    // The SMMU's doorbell page: device writes that translate to it are interrupts.
    if (this.topology.preset.arch === "smmuv3") this.core.doorbell = { start: DOORBELL_HPA, end: DOORBELL_HPA + 0xfffn };
  }

  private readonly isDirect = (view: ArrayBufferView): boolean => this.resident.has(view.buffer);

  /** Pins held on the frame at hpa (for tests: the engine's framePins). */
  framePins(hpa: bigint): number { return this.pins.count(hpa); }

  // ---- topology: devices, groups, reserved regions (the facade's Topology)

  get arch(): Arch { return this.topology.preset.arch; }
  get aperture(): IovaRange { return { ...this.topology.preset.aperture }; }

  addDevice(spec: DeviceSpec): HostDevice { return this.topology.addDevice(spec); }
  device(bdf: string): HostDevice { return this.topology.device(bdf); }
  iommuGroups(): number[] { return this.topology.groups(); }
  devicesOf(group: number): HostDevice[] { return this.topology.devicesOf(group); }
  reservedRegions(group: number): ReservedRegion[] { return this.topology.reservedRegions(group); }
  reservedRegionsText(group: number): string { return this.topology.reservedRegionsText(group); }
  usableRanges(group?: number): IovaRange[] { return this.topology.usableRanges(group); }
  checkGuestMemoryMap(ranges: readonly RangeSpec[], options?: GuestMapCheckOptions): Conflict[] {
    return this.topology.checkGuestMemoryMap(ranges, options);
  }

  // ---- processes, containers, groups (the facade's control logic over the twin's plane)

  createProcess(options: ProcessOptions = {}): Process {
    const pageTable = this.createPageTable({ format: "x86-64", levels: 4, pageSizes: [0x1000n] });
    return new Process(this.plane, this.ram, pageTable, ++this.processes, options);
  }

  openContainer(options: { process?: Process; pasidQuota?: number } = {}): Container {
    return new Container({
      plane: this.plane,
      ram: this.ram,
      topology: this.topology,
      dmaEntryLimit: this.dmaEntryLimit,
      allowUnsafeInterrupts: this.allowUnsafeInterrupts,
      stage2: this.stage2(),
      createDomain: (o): ContainerDomain => this.createDomain(o),
      pasids: this.pasids,
    }, options.process, options.pasidQuota);
  }

  openGroup(group: number): VfioGroup<NaiveDmaPort> {
    this.topology.devicesOf(group);
    if (this.openGroups.has(group)) fail("EBUSY", `group ${group} is already open`);
    this.openGroups.add(group);
    // A PASID-tagged request goes through the device's PASID table when it has one (the engine looks it up in WASM).
    const makePort = (domainId: () => number, sourceId: number, raise: (irq: DmaInterrupt) => void, pasidTable: () => number): NaiveDmaPort =>
      new NaiveDmaPort(this.translator, this.isDirect, domainId, sourceId, this.core.doorbell, raise, (pasid) => {
        const table = pasidTable();
        if (table === 0) return undefined;
        return table === abi.PASID_TABLE_NONE ? 0 : this.pasidPlane.tableLookup(table, pasid);
      });
    return new VfioGroup(makePort, this.topology, group, (irq) => this.raise(irq), () => this.openGroups.delete(group));
  }

  onInterrupt(cb: (interrupt: Interrupt) => void): () => void {
    this.listeners.add(cb);
    return () => { this.listeners.delete(cb); };
  }

  private raise(interrupt: Interrupt): void {
    for (const cb of this.listeners) cb(interrupt);
  }

  /** The stage-2 format of the arch, as the facade picks it. */
  private stage2(): PageTableOptions {
    const p = this.topology.preset;
    if (p.arch === "vtd") return { format: "vtd-sl", inputBits: p.addressWidth, physAddrWidth: 52 };
    return { format: "arm64", stage: 2, inputBits: Math.min(p.addressWidth, 48), physAddrWidth: 48 };
  }

  createPageTable(options: PageTableOptions & DomainFlags = {}): NaivePageTable {
    return new NaivePageTable(this.core, options, options);
  }

  createDomain(options: NaiveDomainOptions = {}): NaiveDomain {
    return new NaiveDomain(this.core, this.translator, this.isDirect, (o) => this.createPageTable(o), options);
  }

  allocBuffer(byteLength: number): Uint8Array {
    if (!Number.isSafeInteger(byteLength) || byteLength <= 0) fail("EINVAL", `buffer length must be a positive integer, got ${byteLength}`);
    const buffer = new Uint8Array(byteLength);
    this.resident.add(buffer.buffer);
    this.liveBuffers.add(buffer.buffer);
    return buffer;
  }

  freeBuffer(buffer: ArrayBufferView): void {
    if (buffer.byteOffset !== 0 || !this.liveBuffers.has(buffer.buffer)) fail("EINVAL", "not a buffer from this host's allocBuffer()");
    this.liveBuffers.delete(buffer.buffer);
  }

  createTranslationBatch(count: number): TranslationBatch {
    if (!Number.isSafeInteger(count) || count <= 0) fail("EINVAL", `batch size must be a positive integer, got ${count}`);
    const iovas = new BigUint64Array(count), hpas = new BigUint64Array(count), status = new Uint8Array(count);
    for (const a of [iovas, hpas, status]) { this.resident.add(a.buffer); this.liveBuffers.add(a.buffer); }
    return { iovas, hpas, status };
  }

  freeTranslationBatch(batch: TranslationBatch): void {
    this.freeBuffer(batch.iovas);
    this.freeBuffer(batch.hpas);
    this.freeBuffer(batch.status);
  }
}

export async function createNaiveHost(options: HostOptions = {}): Promise<NaiveHost> {
  const ramSize = toU64(options.ramSize ?? 256 * 1024 * 1024, "ramSize");
  if (ramSize === 0n || ramSize % 4096n !== 0n) fail("EINVAL", `ramSize ${hex(ramSize)} must be a non-zero multiple of 4 KiB`);
  if (ramSize > 0xc0000000n) fail("EINVAL", `ramSize ${hex(ramSize)} is above the 3 GiB a 32-bit WebAssembly.Memory can hold with engine state`);
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
  const topology = new Topology(archPreset(options.arch ?? "vtd", options.addressWidth), options.platformReserved ?? []);
  return new NaiveHost(ramSize, sets, ways, faultRingSize, { topology, dmaEntryLimit, allowUnsafeInterrupts: options.allowUnsafeInterrupts ?? false });
}
