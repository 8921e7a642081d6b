// createNaiveHost(): the twin of createHost(), with the same options, the
// same surface and the same answers, in plain TypeScript. bufferArenaSize is
// accepted but not enforced: allocBuffer() returns plain Uint8Arrays.
import type { DomainFlags, HostOptions, IotlbStats, PageTableOptions, TranslationBatch } from "../../src/index.js";
import { fail, hex, toU64 } from "./args.js";
import { Builder } from "./builder.js";
import { Contexts } from "./context.js";
import { NaiveDomain, type NaiveDomainOptions } from "./domain.js";
import { NaiveFaultLog } from "./faults.js";
import { FrameAllocator } from "./frames.js";
import { NaiveIotlb } from "./iotlb.js";
import { NaivePhysicalMemory } from "./memory.js";
import { NaivePageTable, type NaiveCore } from "./pagetable.js";
import { Ram } from "./ram.js";
import { Translator } from "./translate.js";

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

export class NaiveHost {
  readonly ram: NaivePhysicalMemory;
  readonly iotlb: NaiveIotlbView;
  readonly faults: NaiveFaultLog;
  private readonly core: NaiveCore;
  private readonly translator: Translator;
  /** Buffers that stand for engine memory: DMA through them needs no staging. */
  private readonly resident = new WeakSet<ArrayBufferLike>();
  private readonly liveBuffers = new WeakSet<ArrayBufferLike>();

  constructor(ramSize: bigint, sets: number, ways: number, faultRingSize: number) {
    const ram = new Ram(ramSize);
    const frames = new FrameAllocator(ram);
    const memory = new NaivePhysicalMemory(ram, frames);
    const contexts = new Contexts();
    const tlb = new NaiveIotlb(sets, ways, contexts);
    this.faults = new NaiveFaultLog(faultRingSize);
    this.core = { ram, memory, contexts, builder: new Builder(ram, frames), iotlb: tlb };
    this.translator = new Translator(ram, contexts, tlb, this.faults);
    this.ram = memory;
    this.iotlb = new NaiveIotlbView(tlb);
    this.resident.add(ram.buffer);
  }

  private readonly isDirect = (view: ArrayBufferView): boolean => this.resident.has(view.buffer);

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
  return new NaiveHost(ramSize, sets, ways, faultRingSize);
}
