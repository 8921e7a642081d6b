// dma-map-page (issue 9): a host driver's dma_map_page + dma_unmap_page of
// 4 KiB through the DMA API, the common cycle the IOVA rcache makes O(1):
// allocate, map, unmap, invalidate, free. Engine (IOVA tree + rcache, WASM
// page table) against the twin (linear IOVA lists, BigInt tables), with 1000
// other mappings live so neither allocator runs empty.
// dma-map-sg-16: dma_map_sg + dma_unmap_sg of 16 scattered 4 KiB segments,
// the page-table work of the whole list in one data-plane call.
import { createHost } from "../src/index.js";
import { createNaiveHost } from "./naive/index.js";
import { RAM_SIZE } from "./fixtures.js";
import type { Case } from "./cases.js";

const CYCLES = 1000;
const BDF = "0000:02:00.0";

interface DmaApiLike {
  mapPage(hpa: bigint, size: bigint, direction: string): bigint;
  mapSg(segments: readonly { hpa: bigint; length: number }[], direction: string): { iova: bigint };
  unmapSg(mapping: object): void;
  unmapPage(dma: bigint, size: bigint, direction: string): void;
  setMask(bits: number): void;
}

async function api(make: (o: object) => Promise<unknown>): Promise<DmaApiLike> {
  const host = (await make({ arch: "vtd", ramSize: RAM_SIZE })) as { addDevice(o: object): void; dmaApi(bdf: string): DmaApiLike };
  host.addDevice({ bdf: BDF, driver: "host" });
  const a = host.dmaApi(BDF);
  a.setMask(64);
  for (let i = 0; i < 1000; i++) a.mapPage(0x100000n + BigInt(i % 256) * 4096n, 4096n, "bidirectional");
  return a;
}

export async function dmaMapPage(): Promise<Case> {
  const e = await api(createHost), n = await api(createNaiveHost as never);
  const cycle = (a: DmaApiLike) => () => {
    for (let i = 0; i < CYCLES; i++) {
      const hpa = 0x200000n + BigInt(i & 255) * 4096n;
      a.unmapPage(a.mapPage(hpa, 4096n, "to-device"), 4096n, "to-device");
    }
  };
  const first = e.mapPage(0x200000n, 4096n, "to-device"), twinFirst = n.mapPage(0x200000n, 4096n, "to-device");
  if (first !== twinFirst) throw new Error("benchmark fixture is broken: engine and twin hand out different IOVAs");
  e.unmapPage(first, 4096n, "to-device");
  n.unmapPage(twinFirst, 4096n, "to-device");
  return { name: "dma-map-page", unit: "map + unmap of 4 KiB", items: CYCLES, engine: cycle(e), naive: cycle(n) };
}

const SG_SEGMENTS = 16;
const SG_CYCLES = 200;

export async function dmaMapSg16(): Promise<Case> {
  const e = await api(createHost), n = await api(createNaiveHost as never);
  // Every other page: no two segments merge, each is its own entry.
  const segs = Array.from({ length: SG_SEGMENTS }, (_, i) => ({ hpa: 0x300000n + BigInt(i) * 0x2000n, length: 4096 }));
  const cycle = (a: DmaApiLike) => () => {
    for (let i = 0; i < SG_CYCLES; i++) a.unmapSg(a.mapSg(segs, "bidirectional"));
  };
  const first = e.mapSg(segs, "bidirectional"), twinFirst = n.mapSg(segs, "bidirectional");
  if (first.iova !== twinFirst.iova) throw new Error("benchmark fixture is broken: engine and twin hand out different IOVAs");
  e.unmapSg(first);
  n.unmapSg(twinFirst);
  return { name: "dma-map-sg-16", unit: "map_sg + unmap_sg of 16 segments", items: SG_CYCLES, engine: cycle(e), naive: cycle(n) };
}
