// createHost(): one engine over one fixed-size WebAssembly.Memory, with
// physical RAM, the IOTLB, the fault log, page tables and domains.
import { fail } from "./errors.js";
import { integer, options } from "./args.js";
import { BufferArena } from "./arena.js";
import { Domain, type DomainOptions } from "./domain.js";
import { FaultLog } from "./faults.js";
import { Iotlb } from "./iotlb.js";
import { PhysicalMemory } from "./memory.js";
import { PageTable } from "./pagetable.js";
import { DmaPort, type DmaInterrupt } from "./dma.js";
import { tableOptions, DOMAIN_KEYS, type DomainFlags, type PageTableOptions } from "./format.js";
import { Engine } from "./engine/engine.js";
import { ENGINE_FINGERPRINT } from "./engine/load.js";
import { hostConfig, type HostOptions } from "./hostoptions.js";
import { DOORBELL_HPA } from "./vfio/msi.js";
import { EnginePlane } from "./vfio/plane.js";
import { EnginePasidPlane, PasidSpace } from "./vfio/pasid.js";
import { VfioHost, type VfioSettings } from "./vfio/vfiohost.js";
import { IovaDomain } from "./dmaapi/iova.js";

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

  /** @internal The engine under this host (tests and the benchmark reach into it): not public API. */
  readonly engine: Engine;

  /** @internal */
  constructor(engine: Engine, vfio: VfioSettings) {
    super(vfio);
    this.engine = engine;
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

  protected makeIova(startPfn: bigint): IovaDomain {
    return new IovaDomain({ startPfn });
  }

  /** A page table in RAM (a new root frame unless `root` is given). */
  createPageTable(options: PageTableOptions & DomainFlags = {}): PageTable {
    const o = tableOptions(options, "createPageTable options");
    return this.remember(new PageTable(this.engine, this.ram, o, o));
  }

  /** A domain over an existing page table, or over a table it creates from the options. */
  createDomain(options: DomainOptions = {}): Domain {
    const o = tableOptions(options, "createDomain options", DOMAIN_KEYS);
    this.checkOperands(o);
    return this.remember(new Domain(this.engine, (t) => this.createPageTable(t), o as DomainOptions));
  }

  /** A zero-filled buffer on engine memory: DMA and batches through it need no staging copy. */
  allocBuffer(byteLength: number): Uint8Array { return this.arena.alloc(byteLength); }

  freeBuffer(buffer: ArrayBufferView): void { this.arena.release(buffer); }

  /** Arrays for Domain.translateBatch that live on engine memory (no copies). */
  createTranslationBatch(count: number): TranslationBatch {
    integer(count, "batch size", 1, Number.MAX_SAFE_INTEGER);
    // All three or none: a refusal gives back what it took.
    const taken: Uint8Array[] = [];
    try {
      for (const bytes of [count * 8, count * 8, count]) taken.push(this.arena.alloc(bytes));
    } catch (e) {
      for (const view of taken) this.arena.release(view);
      throw e;
    }
    const [iovaBytes, hpaBytes, status] = taken;
    return {
      iovas: new BigUint64Array(iovaBytes.buffer, iovaBytes.byteOffset, count),
      hpas: new BigUint64Array(hpaBytes.buffer, hpaBytes.byteOffset, count),
      status,
    };
  }

  freeTranslationBatch(batch: TranslationBatch): void {
    const b = options(batch, "translation batch", ["iovas", "hpas", "status"] as const);
    const views = [b.iovas, b.hpas, b.status];
    // All three must be this host's before any goes back.
    if (!views.every((v) => this.arena.owns(v))) fail("EINVAL", "not a batch from this host's createTranslationBatch()");
    for (const v of views) this.arena.release(v as ArrayBufferView);
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
