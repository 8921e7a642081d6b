// The benchmark cases of DESIGN §12: each runs the same work on the engine
// and on its naive twin, counted in `items` per call so results read as ns
// per translation / per transfer.
import { createHost, PAGE_4K, type Container, type Domain, type Host } from "../src/index.js";
import { createNaiveHost, type NaiveHost } from "./naive/index.js";
import {
  IOVA_BASE, RAM_SIZE, nestedDomain, pagedDomain, residentU64s, sparseDomain, sparseIovas, vfioSetup, xorshift,
  type ContainerLike, type DomainLike, type HostLike, type VfioHostLike,
} from "./fixtures.js";
import { perCallSuite } from "./percall.js";
import { mdevPin512 } from "./mdev.js";
import { gpuDma4k, shadowGttUpdate } from "./shadow.js";
import { ptChurn } from "./ptchurn.js";
import { dmaMapPage, dmaMapSg16 } from "./dmaapi.js";
import { vfioScale } from "./vfioscale.js";
import { backendDma4k, foreignMap4k, xenPpgttStore, xenShadowGttUpdate } from "./xen.js";

export interface Case {
  name: string;
  /** What one item is, for the table. */
  unit: string;
  /** Items per call of engine() / naive(). */
  items: number;
  engine: () => void;
  naive: () => void;
  /** Untimed work before every timed call (e.g. holding again what the call frees). */
  engineSetup?: () => void;
  naiveSetup?: () => void;
  /** Another way to do the engine's work, timed in the same run and reported as `field` (ns per item) on the case. */
  variant?: { field: string; run: () => void; setup?: () => void };
  /** Counts the fixture measured (not times), reported with the case. */
  facts?: Record<string, number>;
  /** Calls per round when one call is long (default tinybench's 64, after 16 warm-up calls). */
  calls?: number;
}

/** A limit: the same copies as case `bounds`, with no translation. */
export interface Limit { name: string; unit: string; items: number; bounds: string; run: () => void }

export interface Suite { cases: Case[]; limits: Limit[] }

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`benchmark fixture is broken: ${what}`);
}

async function hosts(): Promise<[Host, HostLike]> {
  const engine = await createHost({ ramSize: RAM_SIZE });
  const naive = (await createNaiveHost({ ramSize: RAM_SIZE })) as unknown as HostLike;
  return [engine, naive];
}

/**
 * A translation-batch case: the same IOVAs through the engine (arrays on its
 * memory) and the twin, checked to agree before timing. `flush` invalidates
 * the domain first, so every translation misses and walks.
 */
function batchCase(name: string, unit: string, iovas: bigint[], ed: DomainLike, nd: DomainLike, eh: Host, flush: boolean): Case {
  const n = iovas.length;
  const batch = eh.createTranslationBatch(n);
  batch.iovas.set(iovas);
  const nIovas = BigUint64Array.from(iovas), nOut = new BigUint64Array(n), nStatus = new Uint8Array(n);
  check(ed.translateBatch(batch.iovas, "read", batch.hpas, batch.status) === 0, `${name} faults`);
  check(nd.translateBatch(nIovas, "read", nOut, nStatus) === 0, `naive ${name} faults`);
  check(batch.hpas.every((v, i) => v === nOut[i]), `${name}: engine and twin disagree`);
  return {
    name, unit, items: n,
    engine: () => { if (flush) ed.invalidate(); ed.translateBatch(batch.iovas, "read", batch.hpas, batch.status); },
    naive: () => { if (flush) nd.invalidate(); nd.translateBatch(nIovas, "read", nOut, nStatus); },
  };
}

async function iotlbHit(): Promise<Case> {
  const n = 1024; // fits the default 2048-entry IOTLB
  const [eh, nh] = await hosts();
  const order = [...Array(n).keys()];
  const rnd = xorshift(7);
  for (let i = n - 1; i > 0; i--) { const j = (rnd.next().value as number) % (i + 1); [order[i], order[j]] = [order[j], order[i]]; }
  const iovas = order.map((p) => IOVA_BASE + BigInt(p) * PAGE_4K + BigInt(p % 4096));
  return batchCase("iotlb-hit", "translation", iovas, pagedDomain(eh as unknown as HostLike, 4, n), pagedDomain(nh, 4, n), eh, false);
}

// Nested walks: each miss walks stage 1 with every table read and the output
// translated through stage 2 (up to 5 × 4 + 4 entry reads).
async function walkNested(): Promise<Case> {
  const [eh, nh] = await hosts();
  const gvas = sparseIovas(512, 9);
  type RamHost = Parameters<typeof nestedDomain>[0];
  return batchCase("walk-nested", "walk", gvas, nestedDomain(eh as unknown as RamHost, gvas), nestedDomain(nh as unknown as RamHost, gvas), eh, true);
}

async function walk(levels: 4 | 5): Promise<Case> {
  const [eh, nh] = await hosts();
  const iovas = sparseIovas(512, levels);
  return batchCase(`walk-${levels}level`, "walk", iovas, sparseDomain(eh as unknown as HostLike, levels, iovas), sparseDomain(nh, levels, iovas), eh, true);
}

/** The HPAs behind iovas, as a u64 list on engine memory for memcpyGather. */
function gatherList(host: Host, domain: DomainLike, iovas: bigint[]): number {
  const hpas = iovas.map((iova) => (domain as unknown as Domain).pageTable.iovaToPhys(iova)!);
  return host.engine.isDirect(residentU64s(host, hpas));
}

/**
 * Reads of (iova, length) pairs through one scatter-gather call (pair list
 * and buffer on engine memory), against the twin; the limit copies the same
 * bytes from the same HPAs with no translation. Engine and twin must read
 * the same bytes before anything is timed.
 */
function sgRead(name: string, unit: string, limitName: string, limitUnit: string, pairs: bigint[], ed: DomainLike, nd: DomainLike, eh: Host): { c: Case; limit: Limit } {
  const segs = pairs.length / 2, len = Number(pairs[1]), total = segs * len;
  const eSegs = residentU64s(eh, pairs), nSegs = BigUint64Array.from(pairs);
  const eBuf = eh.allocBuffer(total), nBuf = new Uint8Array(total);
  check(ed.dma.sg(eSegs, eBuf, { direction: "read" }).bytes === total, `${name} short`);
  check(nd.dma.sg(nSegs, nBuf, { direction: "read" }).bytes === total, `naive ${name} short`);
  check(eBuf.every((v, i) => v === nBuf[i]), `${name}: engine and twin read different bytes`);
  const gather = gatherList(eh, ed, pairs.filter((_, k) => k % 2 === 0));
  const wasm = eh.engine.wasm, dst = eh.engine.isDirect(eBuf);
  return {
    c: {
      name, unit, items: segs,
      engine: () => { ed.dma.sg(eSegs, eBuf, { direction: "read" }); },
      naive: () => { nd.dma.sg(nSegs, nBuf, { direction: "read" }); },
    },
    limit: { name: limitName, unit: limitUnit, items: segs, bounds: name, run: () => { wasm.memcpyGather(dst, gather, segs, len); } },
  };
}

// 4 KiB reads, batched the way DESIGN §2 asks calls to be: 64 reads per
// engine call (a scatter-gather list of whole pages), against the same 64
// copies done by memory.copy in one call. dma-4k-call issues one readInto()
// per read, to show what a call per transfer costs.
async function dma4k(): Promise<{ batched: Case; perCall: Case; limit: Limit }> {
  const pages = 64;
  const [eh, nh] = await hosts();
  const ed = pagedDomain(eh as unknown as HostLike, 4, pages), nd = pagedDomain(nh, 4, pages);
  const iovas = [...Array(pages).keys()].map((i) => IOVA_BASE + BigInt(i) * PAGE_4K);
  const { c: batched, limit } = sgRead("dma-4k", "4 KiB read", "memcpy-4k", "4 KiB copy", iovas.flatMap((iova) => [iova, PAGE_4K]), ed, nd, eh);
  const ePage = eh.allocBuffer(4096), nPage = new Uint8Array(4096);
  check(ed.dma.readInto(iovas[0], ePage).bytes === 4096 && nd.dma.readInto(iovas[0], nPage).bytes === 4096, "dma-4k-call short");
  return {
    batched,
    perCall: {
      name: "dma-4k-call", unit: "4 KiB read", items: pages,
      engine: () => { for (const iova of iovas) ed.dma.readInto(iova, ePage); },
      naive: () => { for (const iova of iovas) nd.dma.readInto(iova, nPage); },
    },
    limit,
  };
}

// 64-byte reads, 256 per call, at random 64-byte slots of `pages` pages: 64
// pages (a 256 KiB buffer pool, as a device's descriptors and packets would
// use) for the target case, 1024 pages (4 MiB, IOTLB entries mostly outside
// the CPU's L1) for the wide one.
async function dma64bSg(name: string, pages: number): Promise<{ c: Case; limit: Limit }> {
  const segs = 256;
  const [eh, nh] = await hosts();
  const ed = pagedDomain(eh as unknown as HostLike, 4, pages), nd = pagedDomain(nh, 4, pages);
  const rnd = xorshift(64);
  const pairs: bigint[] = [];
  for (let i = 0; i < segs; i++) {
    const r = rnd.next().value as number;
    pairs.push(IOVA_BASE + BigInt(r % pages) * PAGE_4K + BigInt(((r >>> 16) % 64) * 64), 64n);
  }
  return sgRead(name, "64 B segment", name === "dma-64b-sg" ? "memcpy-64b" : `memcpy-64b-wide`, "64 B copy", pairs, ed, nd, eh);
}

async function ptMapUnmap(): Promise<Case> {
  const [eh, nh] = await hosts();
  const size = 1n << 30n, iova = 0x40000000n, hpa = 0x100000000n;
  // 4 KiB leaves only: 262144 entries and 512 leaf tables built and torn down each time.
  const et = eh.createPageTable({ pageSizes: [PAGE_4K] }), nt = nh.createPageTable({ pageSizes: [PAGE_4K] });
  return {
    name: "pt-map-unmap", unit: "1 GiB map + unmap", items: 1,
    engine: () => { et.map(iova, hpa, size, { write: true }); check(et.unmap(iova, size) === size, "unmap"); },
    naive: () => { nt.map(iova, hpa, size, { write: true }); check(nt.unmap(iova, size) === size, "naive unmap"); },
  };
}

// ---- VFIO: the same container logic over the engine's data plane and the twin's.


/**
 * MAP_DMA chunk sizes: a fixed pseudo-random sequence of 4 KiB multiples
 * from 4 KiB to 64 MiB (log-uniform, so small and large maps both occur),
 * the last one cut so they sum to `total`.
 */
export function mapChunks(total: bigint, seed = 1): bigint[] {
  const rnd = xorshift(seed);
  const sizes: bigint[] = [];
  let left = total;
  while (left > 0n) {
    // [2^log, 2^(log+1)) for log 12..25: 4 KiB up to just below 64 MiB.
    const log = 12 + ((rnd.next().value as number) % 14);
    const size = (1n << BigInt(log)) + (BigInt((rnd.next().value as number) % (1 << (log - 12))) << 12n);
    sizes.push(size > left ? left : size);
    left -= sizes[sizes.length - 1];
  }
  return sizes;
}

/**
 * A process maps 1 GiB into a VT-d container with MAP_DMA in chunks of mixed
 * sizes (pinning every page, mapping physically contiguous runs), then
 * UNMAP_DMA of everything (unpinning): both hosts run the facade's container
 * logic, so the difference is the data plane.
 */
async function vfioMapUnmap(): Promise<Case> {
  const total = 1n << 30n;
  const ramSize = (1 << 30) + (32 << 20); // the process's 1 GiB, its tables and the IOMMU's
  const eh = (await createHost({ ramSize, arch: "vtd" })) as unknown as VfioHostLike;
  const nh = (await createNaiveHost({ ramSize, arch: "vtd" })) as unknown as VfioHostLike;
  const iovaBase = 0x100000000n;
  const chunks = mapChunks(total);
  const sides = [vfioSetup(eh, total), vfioSetup(nh, total)];
  const mapAll = ({ vaddr, container }: { vaddr: bigint; container: ContainerLike }): void => {
    let off = 0n;
    for (const size of chunks) {
      container.mapDma({ vaddr: vaddr + off, iova: iovaBase + off, size, read: true, write: true });
      off += size;
    }
  };
  const unmapAll = ({ container }: { container: ContainerLike }): bigint => container.unmapDma({ all: true });
  // Both sides map the same chunks, pin the same bytes, translate alike and unmap it all.
  for (const side of sides) {
    mapAll(side);
    check(side.container.mappings().length === chunks.length && side.process.lockedBytes === total, "vfio-map-unmap: map");
  }
  const probe = [0n, 0x12345000n, total - 4096n];
  const [eRead, nRead] = sides.map((side) => probe.map((off) => {
    const into = new Uint8Array(8);
    return side.dma.readInto(iovaBase + off, into).bytes === 8 ? into.join() : "fault";
  }).join("|"));
  check(eRead === nRead && !eRead.includes("fault"), "vfio-map-unmap: engine and twin read differently");
  for (const side of sides) check(unmapAll(side) === total && side.process.lockedBytes === 0n, "vfio-map-unmap: unmap");
  return {
    name: "vfio-map-unmap", unit: "1 GiB map + unmap", items: 1,
    engine: () => { mapAll(sides[0]); check(unmapAll(sides[0]) === total, "unmap"); },
    naive: () => { mapAll(sides[1]); check(unmapAll(sides[1]) === total, "naive unmap"); },
  };
}

/**
 * dma-4k through VFIO: a device of a group in a VT-d container reads 64
 * pages of a process's memory, 64 reads of 4 KiB per scatter-gather call
 * (pair list and buffer on engine memory), against the twin.
 */
async function deviceDma4k(): Promise<Case> {
  const pages = 64;
  const eh = (await createHost({ ramSize: RAM_SIZE })) as unknown as VfioHostLike;
  const nh = (await createNaiveHost({ ramSize: RAM_SIZE })) as unknown as VfioHostLike;
  const bytes = BigInt(pages) * PAGE_4K;
  const fill = Uint8Array.from({ length: Number(bytes) }, (_, i) => (i * 7 + (i >> 12)) & 0xff);
  const [e, n] = [eh, nh].map((host) => {
    const side = vfioSetup(host, bytes);
    side.process.write(side.vaddr, fill);
    side.container.mapDma({ vaddr: side.vaddr, iova: IOVA_BASE, size: bytes, read: true, write: true });
    return side;
  });
  const pairs = [...Array(pages).keys()].flatMap((i) => [IOVA_BASE + BigInt(i) * PAGE_4K, PAGE_4K]);
  const total = pages * 4096;
  const eSegs = residentU64s(eh as unknown as Host, pairs), nSegs = BigUint64Array.from(pairs);
  const eBuf = eh.allocBuffer(total), nBuf = new Uint8Array(total);
  check(e.dma.sg(eSegs, eBuf, { direction: "read" }).bytes === total, "device-dma-4k short");
  check(n.dma.sg(nSegs, nBuf, { direction: "read" }).bytes === total, "naive device-dma-4k short");
  check(eBuf.every((v, i) => v === fill[i] && v === nBuf[i]), "device-dma-4k: engine and twin read different bytes");
  return {
    name: "device-dma-4k", unit: "4 KiB read", items: pages,
    engine: () => { e.dma.sg(eSegs, eBuf, { direction: "read" }); },
    naive: () => { n.dma.sg(nSegs, nBuf, { direction: "read" }); },
  };
}

// ---- PASIDs: device PASID tables and the host-wide allocator.

const PASID_ALL = { min: 0, max: 0xffffffff };

/**
 * The DMA path's PASID lookup: one device table with 64 K live PASIDs (the
 * ones the allocator hands out, 1..65536), bound to stage-1 context ids;
 * 1024 lookups of random live PASIDs per batch call (arrays on engine
 * memory), against the twin's Map.
 */
async function pasidLookup(): Promise<Case> {
  const live = 65536, batch = 1024;
  const eh = await createHost({ ramSize: 1 << 20 });
  const nh: NaiveHost = await createNaiveHost({ ramSize: 1 << 20 });
  const owner = eh.openContainer({ pasidQuota: live });
  const pasids = Array.from({ length: live }, () => owner.pasid.alloc(PASID_ALL));
  const [et, nt] = [eh.pasids.createTable(), nh.pasids.createTable()];
  for (const t of [et, nt]) pasids.forEach((p, i) => t.attach(p, (i % 4095) + 1));
  const rnd = xorshift(20);
  const asked = Array.from({ length: batch }, () => pasids[(rnd.next().value as number) % live]);
  const inBytes = eh.allocBuffer(batch * 4), outBytes = eh.allocBuffer(batch * 4);
  const eIn = new Uint32Array(inBytes.buffer, inBytes.byteOffset, batch), eOut = new Uint32Array(outBytes.buffer, outBytes.byteOffset, batch);
  eIn.set(asked);
  const nIn = Uint32Array.from(asked), nOut = new Uint32Array(batch);
  check(et.lookupBatch(eIn, eOut) === 0 && nt.lookupBatch(nIn, nOut) === 0, "pasid-lookup misses");
  check(pasids.every((p, i) => p === i + 1), "pasid-lookup: the allocator hands out 1..65536");
  check(eOut.every((v, i) => v === nOut[i] && v === ((asked[i] - 1) % 4095) + 1), "pasid-lookup: engine and twin disagree");
  return {
    name: "pasid-lookup", unit: "lookup", items: batch,
    engine: () => { et.lookupBatch(eIn, eOut); },
    naive: () => { nt.lookupBatch(nIn, nOut); },
  };
}

/**
 * VFIO_IOMMU_PASID_REQUEST FREE of [0, 0xFFFFFFFF] by a container holding
 * 1000 PASIDs spread over the whole space, while another container holds
 * 1000 more; before every call (untimed) the same 1000 are allocated again.
 * The variant frees the same 1000 one PASID a call: the range free must cost
 * O(held), like those single frees, not O(width). The twin: Maps and a Set.
 */
async function pasidFreeRange(): Promise<Case> {
  const held = 1000;
  const eh = await createHost({ ramSize: 1 << 20 });
  const nh: NaiveHost = await createNaiveHost({ ramSize: 1 << 20 });
  const rnd = xorshift(1000);
  const chosen = new Set<number>();
  while (chosen.size < 2 * held) chosen.add(((rnd.next().value as number) % 0xfffff) + 1);
  const all = [...chosen];
  const mine = all.slice(0, held), theirs = all.slice(held);
  const [ec, nc] = [eh, nh].map((h) => {
    const other = h.openContainer();
    for (const p of theirs) other.pasid.alloc({ min: p, max: p });
    return h.openContainer();
  });
  const hold = (c: Container) => (): void => { for (const p of mine) c.pasid.alloc({ min: p, max: p }); };
  const holdEngine = hold(ec), holdNaive = hold(nc);
  for (const [c, holdIt] of [[ec, holdEngine], [nc, holdNaive]] as const) {
    holdIt();
    check(c.pasid.held().join() === [...mine].sort((a, b) => a - b).join(), "pasid-free-range: held set");
    check(c.pasid.free(PASID_ALL) === held && c.pasid.held().length === 0, "pasid-free-range: free");
  }
  return {
    name: "pasid-free-range", unit: "PASID freed", items: held,
    engine: () => { check(ec.pasid.free(PASID_ALL) === held, "range free"); },
    naive: () => { check(nc.pasid.free(PASID_ALL) === held, "naive range free"); },
    engineSetup: holdEngine,
    naiveSetup: holdNaive,
    variant: { field: "each_ns", setup: holdEngine, run: () => { for (const p of mine) ec.pasid.free({ min: p, max: p }); } },
  };
}

export async function buildSuite(): Promise<Suite> {
  const d4 = await dma4k(), sg = await dma64bSg("dma-64b-sg", 64), wide = await dma64bSg("dma-64b-sg-wide", 1024);
  const perCall = await perCallSuite();
  return {
    cases: [await iotlbHit(), await walk(4), await walk(5), await walkNested(), d4.batched, d4.perCall, await deviceDma4k(), await gpuDma4k(), await backendDma4k(), sg.c, wide.c,
      ...perCall.cases, await ptMapUnmap(), await ptChurn(), await dmaMapPage(), await dmaMapSg16(), await mdevPin512(), await shadowGttUpdate(), await vfioMapUnmap(), await pasidLookup(), await pasidFreeRange(), await foreignMap4k(), await xenShadowGttUpdate(), await xenPpgttStore(),
      ...(await vfioScale())],
    limits: [d4.limit, sg.limit, wide.limit, ...perCall.limits],
  };
}
