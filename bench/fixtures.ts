// Identical fixtures for the engine and its naive twin: the same calls build
// the same tables, so each benchmark case compares like with like.
import { PAGE_4K } from "../src/index.js";

/** The facade surface both hosts share (the twin mirrors the engine's API). */
export interface HostLike {
  ram: { allocFrames(count?: number): bigint };
  createPageTable(options: Record<string, unknown>): PageTableLike;
  createDomain(options: Record<string, unknown>): DomainLike;
  allocBuffer(n: number): Uint8Array;
  createTranslationBatch(n: number): { iovas: BigUint64Array; hpas: BigUint64Array; status: Uint8Array };
}
export interface PageTableLike {
  map(iova: bigint, hpa: bigint, size: bigint, prot?: Record<string, boolean>): void;
  unmap(iova: bigint, size: bigint): bigint;
}
export interface DomainLike {
  pageTable: PageTableLike;
  translateBatch(iovas: BigUint64Array, access: string, out: BigUint64Array, status: Uint8Array): number;
  invalidate(opts?: Record<string, unknown>): void;
  dma: {
    readInto(iova: bigint, target: Uint8Array): { bytes: number; fault?: unknown };
    sg(segments: BigUint64Array, buffer: Uint8Array, opts: { direction: "read" | "write" }): { bytes: number; fault?: unknown };
  };
}

/** The VFIO surface both hosts share: a process, a container, a group's device. */
export interface VfioHostLike {
  addDevice(spec: { bdf: string }): unknown;
  createProcess(): ProcessLike;
  openContainer(options: { process: ProcessLike }): ContainerLike;
  openGroup(group: number): { setContainer(c: ContainerLike): void; device(bdf: string): { dma: DomainLike["dma"] } };
  allocBuffer(n: number): Uint8Array;
}
export interface ProcessLike { mmap(size: bigint): bigint; write(vaddr: bigint, bytes: Uint8Array): void; lockedBytes: bigint }
export interface ContainerLike {
  setIommu(type: "type1v2"): void;
  mapDma(request: { vaddr: bigint; iova: bigint; size: bigint; read: boolean; write: boolean }): bigint;
  unmapDma(request: { all: true } | { iova: bigint; size: bigint }): bigint;
  mappings(): readonly unknown[];
}

export const RAM_SIZE = 128 * 1024 * 1024;
export const IOVA_BASE = 0x10000000n;

/** A domain with `pages` 4 KiB pages at IOVA_BASE, backed by scattered RAM frames. */
export function pagedDomain(host: HostLike, levels: 4 | 5, pages: number, stride = 1): DomainLike {
  const domain = host.createDomain({ format: "x86-64", levels, pageSizes: [PAGE_4K] });
  const frames = host.ram.allocFrames(pages * stride);
  for (let i = 0; i < pages; i++) {
    // Pages reverse-ordered in RAM so no run of IOVAs is physically contiguous.
    const hpa = frames + BigInt((pages - 1 - i) * stride) * PAGE_4K;
    domain.pageTable.map(IOVA_BASE + BigInt(i) * PAGE_4K, hpa, PAGE_4K, { write: true });
  }
  return domain;
}

/** Deterministic pseudo-random sequence (xorshift32) so both sides see the same addresses. */
export function* xorshift(seed: number): Generator<number> {
  let x = seed >>> 0 || 1;
  for (;;) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    yield x;
  }
}

/** IOVAs spread over a wide address range, each in a distinct 4 KiB page (for walk benchmarks). */
export function sparseIovas(count: number, seed: number): bigint[] {
  const rnd = xorshift(seed);
  const seen = new Set<bigint>();
  const out: bigint[] = [];
  while (out.length < count) {
    // 2^35 bytes of IOVA space: many distinct page tables on the path.
    const page = BigInt(rnd.next().value as number) * 8n + BigInt((rnd.next().value as number) & 7);
    const iova = IOVA_BASE + page * PAGE_4K;
    if (!seen.has(iova)) { seen.add(iova); out.push(iova); }
  }
  return out;
}

/** A domain where each of `iovas` is one mapped 4 KiB page (a walk per address touches many tables). */
export function sparseDomain(host: HostLike, levels: 4 | 5, iovas: bigint[]): DomainLike {
  const domain = host.createDomain({ format: "x86-64", levels, pageSizes: [PAGE_4K] });
  const frames = host.ram.allocFrames(iovas.length);
  iovas.forEach((iova, i) => domain.pageTable.map(iova, frames + BigInt(i) * PAGE_4K, PAGE_4K, { write: true }));
  return domain;
}

/**
 * A nested domain: a 4-level x86-64 stage 1, written into guest memory, over
 * a 4-level VT-d second level with 4 KiB pages (so every stage-1 table read
 * and every output is a full stage-2 walk). Each of `gvas` maps a 4 KiB page.
 */
export function nestedDomain(host: HostLike & { ram: { readU64(hpa: bigint): bigint; writeU64(hpa: bigint, v: bigint): void } }, gvas: bigint[]): DomainLike {
  const s2 = host.createDomain({ format: "vtd-sl", inputBits: 48, pageSizes: [PAGE_4K] }) as DomainLike & { id: number };
  // Guest RAM: GPA page p is host frame frames + p.
  const pages = 4096;
  const frames = host.ram.allocFrames(pages);
  s2.pageTable.map(0n, frames, BigInt(pages) * PAGE_4K, { write: true });
  const hpa = (gpa: bigint) => frames + gpa;
  let nextTable = 1n;
  const table = () => (nextTable++) * PAGE_4K;
  for (const [k, gva] of gvas.entries()) {
    let t = 0n; // the root is GPA 0
    for (let level = 3; level >= 1; level--) {
      const slot = hpa(t + ((gva >> BigInt(12 + 9 * level)) & 511n) * 8n);
      let e = host.ram.readU64(slot);
      if ((e & 1n) === 0n) { e = table() | 7n; host.ram.writeU64(slot, e); }
      t = e & 0x000ffffffffff000n;
    }
    host.ram.writeU64(hpa(t + ((gva >> 12n) & 511n) * 8n), (BigInt(2048 + (k % 1024)) * PAGE_4K) | 7n);
  }
  return host.createDomain({ stage2: s2, format: "x86-64", levels: 4, root: 0n });
}

const DEVICE = "0000:00:01.0";

/** A host (VT-d) with one device in group 0, a process with `bytes` of memory, and a container with the group attached. */
export function vfioSetup(host: VfioHostLike, bytes: bigint): { process: ProcessLike; vaddr: bigint; container: ContainerLike; dma: DomainLike["dma"] } {
  host.addDevice({ bdf: DEVICE });
  const process = host.createProcess();
  const vaddr = process.mmap(bytes);
  const container = host.openContainer({ process });
  const group = host.openGroup(0);
  group.setContainer(container);
  container.setIommu("type1v2");
  return { process, vaddr, container, dma: group.device(DEVICE).dma };
}

/** A list of u64s on engine memory (e.g. (iova, length) pairs the engine reads in place). */
export function residentU64s(host: { allocBuffer(n: number): Uint8Array }, values: bigint[]): BigUint64Array {
  const bytes = host.allocBuffer(values.length * 8);
  const list = new BigUint64Array(bytes.buffer, bytes.byteOffset, values.length);
  list.set(values);
  return list;
}
