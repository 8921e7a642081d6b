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
import type { DomainFlags, PageTableOptions } from "./format.js";
import { Engine } from "./engine/engine.js";
import { ENGINE_FINGERPRINT } from "./engine/load.js";

export interface HostOptions {
  /** Bytes of physical RAM at HPA 0 (4 KiB multiple). Default 256 MiB. */
  ramSize?: Address;
  /** IOTLB geometry: sets (power of two, 16..65536) × ways (1..16). Default 512 × 4. */
  iotlb?: { sets?: number; ways?: number };
  /** Fault ring capacity (power of two, 16..65536). Default 1024. */
  faultRingSize?: number;
  /** Bytes of engine memory for allocBuffer() / createTranslationBatch(). Default 4 MiB. */
  bufferArenaSize?: number;
}

export interface TranslationBatch { iovas: BigUint64Array; hpas: BigUint64Array; status: Uint8Array }

const isPow2 = (n: number, lo: number, hi: number): boolean => Number.isInteger(n) && n >= lo && n <= hi && (n & (n - 1)) === 0;

export class Host {
  readonly ram: PhysicalMemory;
  readonly iotlb: Iotlb;
  readonly faults: FaultLog;
  /** Fingerprint of the WASM build this host runs. */
  readonly engineFingerprint = ENGINE_FINGERPRINT;
  private readonly arena: BufferArena;

  /** @internal */
  constructor(readonly engine: Engine) {
    this.ram = new PhysicalMemory(engine);
    this.iotlb = new Iotlb(engine);
    this.faults = new FaultLog(engine);
    this.arena = new BufferArena(engine);
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
  const engine = await Engine.create({ ramSize, iotlbSets: sets, iotlbWays: ways, faultRingSize, arenaSize });
  return new Host(engine);
}
