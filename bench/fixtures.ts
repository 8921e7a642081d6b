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
