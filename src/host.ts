// createHost(): one engine over one fixed-size WebAssembly.Memory, with
// physical RAM, the IOTLB, the fault log, page tables and domains.
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
import { hostConfig, type HostOptions } from "./hostoptions.js";
import { DOORBELL_HPA } from "./vfio/msi.js";
import { EnginePlane } from "./vfio/plane.js";
import { EnginePasidPlane, PasidSpace } from "./vfio/pasid.js";
import { VfioHost, type VfioSettings } from "./vfio/vfiohost.js";

export type { HostOptions } from "./hostoptions.js";
export type { ContainerOptions } from "./vfio/vfiohost.js";

export interface TranslationBatch { iovas: BigUint64Array; hpas: BigUint64Array; status: Uint8Array }

export class Host extends VfioHost<DmaPort> {
  readonly ram: PhysicalMemory;
  readonly iotlb: Iotlb;
  readonly faults: FaultLog;
  readonly pasids: PasidSpace;
  /** Fingerprint of the WASM build this host runs. */
  readonly engineFingerprint = ENGINE_FINGERPRINT;
  protected readonly plane: EnginePlane;
  private readonly arena: BufferArena;

  /** @internal */
  constructor(readonly engine: Engine, vfio: VfioSettings) {
    super(vfio);
    this.ram = new PhysicalMemory(engine);
    this.iotlb = new Iotlb(engine);
    this.faults = new FaultLog(engine);
    this.arena = new BufferArena(engine);
    this.plane = new EnginePlane(engine);
    this.pasids = new PasidSpace(new EnginePasidPlane(engine));
  }

  protected makePort(domainId: () => number, sourceId: number, raise: (irq: DmaInterrupt) => void, pasidTable: () => number): DmaPort {
    return new DmaPort(this.engine, domainId, sourceId, raise, pasidTable);
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
  const c = hostConfig(options);
  const engine = await Engine.create({ ramSize: c.ramSize, iotlbSets: c.iotlbSets, iotlbWays: c.iotlbWays, faultRingSize: c.faultRingSize,
    arenaSize: c.arenaSize, pasidNodes: c.pasidNodes });
  // The SMMU's doorbell page: device writes that translate to it are interrupts.
  if (c.vfio.topology.preset.arch === "smmuv3") engine.wasm.setMsiDoorbell(DOORBELL_HPA, DOORBELL_HPA + 0xfffn);
  return new Host(engine, c.vfio);
}
