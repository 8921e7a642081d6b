// createNaiveHost(): the twin of createHost(), with the same options, the
// same surface and the same answers, in plain TypeScript. bufferArenaSize is
// accepted but not enforced: allocBuffer() returns plain Uint8Arrays.
//
// The VFIO API is the facade's own control logic (src/vfio: topology,
// container, process, group) run over the twin's data plane (NaivePlane),
// page tables, RAM and DMA ports, so only the data plane is restated here.
import { NaiveIovaDomain } from "./iova.js";
import type { DomainFlags, HostOptions, IotlbStats, PageTableOptions, TranslationBatch } from "../../src/index.js";
import type { DmaInterrupt } from "../../src/dma.js";
import { hostConfig } from "../../src/hostoptions.js";
import { tableOptions, DOMAIN_KEYS } from "../../src/format.js";
import { DOORBELL_HPA } from "../../src/vfio/msi.js";
import { VfioHost, type VfioSettings } from "../../src/vfio/vfiohost.js";
import { fail } from "./args.js";
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

/** Host-wide view of the twin's IOTLB. */
export class NaiveIotlbView {
  constructor(private readonly tlb: NaiveIotlb) {}
  get sets(): number { return this.tlb.sets; }
  get ways(): number { return this.tlb.ways; }
  get entries(): number { return this.tlb.sets * this.tlb.ways; }
  stats(): IotlbStats { return { ...this.tlb.counters }; }
  invalidateAll(): void { this.tlb.flushAll(); }
}

export class NaiveHost extends VfioHost<NaiveDmaPort> {
  readonly ram: NaivePhysicalMemory;
  readonly iotlb: NaiveIotlbView;
  readonly faults: NaiveFaultLog;
  /** The host-wide PASID space, the facade's rules over the twin's Maps. */
  private readonly pasidPlane = new NaivePasidPlane();
  readonly pasids = new PasidSpace(this.pasidPlane);
  private readonly core: NaiveCore;
  private readonly translator: Translator;
  protected readonly plane: NaivePlane;
  private readonly pins: FramePins;
  /** Buffers that stand for engine memory: DMA through them needs no staging. */
  private readonly resident = new WeakSet<ArrayBufferLike>();
  private readonly liveBuffers = new WeakSet<ArrayBufferLike>();

  constructor(ramSize: bigint, sets: number, ways: number, faultRingSize: number, vfio: VfioSettings) {
    super(vfio);
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
    // The SMMU's doorbell page: device writes that translate to it are interrupts.
    if (this.topology.preset.arch === "smmuv3") this.core.doorbell = { start: DOORBELL_HPA, end: DOORBELL_HPA + 0xfffn };
  }

  private readonly isDirect = (view: ArrayBufferView): boolean => this.resident.has(view.buffer);

  /** Pins held on the frame at hpa (for tests: the engine's framePins). */
  framePins(hpa: bigint): number { return this.pins.count(hpa); }

  // A PASID-tagged request goes through the device's PASID table when it has one (the engine looks it up in WASM).
  protected makeIova(startPfn: bigint): NaiveIovaDomain {
    return new NaiveIovaDomain({ startPfn });
  }

  protected makePort(domainId: () => number, sourceId: number, raise: (irq: DmaInterrupt) => void, pasidTable: () => number): NaiveDmaPort {
    return new NaiveDmaPort(this.translator, this.isDirect, domainId, sourceId, this.core.doorbell, raise, (pasid) => {
      const table = pasidTable();
      if (table === 0) return undefined;
      return table === abi.PASID_TABLE_NONE ? 0 : this.pasidPlane.tableLookup(table, pasid);
    });
  }

  createPageTable(options: PageTableOptions & DomainFlags = {}): NaivePageTable {
    const o = tableOptions(options, "createPageTable options");
    return this.remember(new NaivePageTable(this.core, o, o));
  }

  createDomain(options: NaiveDomainOptions = {}): NaiveDomain {
    const o = tableOptions(options, "createDomain options", DOMAIN_KEYS);
    this.checkOperands(o);
    return this.remember(new NaiveDomain(this.core, this.translator, this.isDirect, (t) => this.createPageTable(t), o as NaiveDomainOptions));
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
  const c = hostConfig(options);
  return new NaiveHost(c.ramSize, c.iotlbSets, c.iotlbWays, c.faultRingSize, c.vfio);
}
