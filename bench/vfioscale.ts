// The scale of the container (issue 9): per-operation cost of MAP_DMA and
// UNMAP_DMA as the container fills up. vfio-map-4k-count maps 4,096 single
// 4 KiB pages in random IOVA order, then unmaps them one by one in another
// random order; vfio-map-65k does the same with 65,535, the kernel's default
// dma_entry_limit (a full container). Both report ns per operation (a map or
// an unmap), so the two read side by side: with an O(log n) mapping set the
// per-op cost at 65 K stays within 1.5× of that at 4 K (bench/run.ts). One
// call is a whole cycle (131,070 ioctls at 65 K, about 0.3 s on the engine
// and 1 s on the twin), so the 65 K case makes 8 calls a round, not 64.
import { createHost, PAGE_4K } from "../src/index.js";
import { createNaiveHost } from "./naive/index.js";
import { vfioSetup, xorshift, type ContainerLike, type VfioHostLike } from "./fixtures.js";
import type { Case } from "./cases.js";

/** The kernel's default dma_entry_limit (vfio_iommu_type1.c): the most mappings one container holds. */
const DMA_ENTRY_LIMIT = 65535;
const IOVA_BASE = 0x100000000n;

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`benchmark fixture is broken: ${what}`);
}

/** 0 .. n-1 in a deterministic random order (Fisher–Yates over xorshift), the same on both sides. */
function shuffled(n: number, seed: number): number[] {
  const rnd = xorshift(seed);
  const out = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = (rnd.next().value as number) % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

type MapRequest = { vaddr: bigint; iova: bigint; size: bigint; read: boolean; write: boolean };
type UnmapRequest = { iova: bigint; size: bigint };

async function mapCount(name: string, count: number): Promise<Case> {
  const bytes = BigInt(count) * PAGE_4K;
  // The process's pages, plus room for its page tables and the IOMMU's.
  const ramSize = Number(bytes) + (32 << 20);
  const options = { ramSize, arch: "vtd", dmaEntryLimit: DMA_ENTRY_LIMIT } as const;
  const eh = (await createHost(options)) as unknown as VfioHostLike;
  const nh = (await createNaiveHost(options)) as unknown as VfioHostLike;
  const sides = [vfioSetup(eh, bytes), vfioSetup(nh, bytes)];
  // Page p of the process backs IOVA page p; the order of the calls is random.
  // Requests are built once, so the timed loop is only the ioctls.
  const mapOrder = shuffled(count, 7), unmapOrder = shuffled(count, 11);
  const [eMaps, nMaps] = sides.map(({ vaddr }) => mapOrder.map((p): MapRequest => ({
    vaddr: vaddr + BigInt(p) * PAGE_4K, iova: IOVA_BASE + BigInt(p) * PAGE_4K, size: PAGE_4K, read: true, write: true,
  })));
  const unmaps = unmapOrder.map((p): UnmapRequest => ({ iova: IOVA_BASE + BigInt(p) * PAGE_4K, size: PAGE_4K }));
  const cycle = (container: ContainerLike, maps: MapRequest[], lockedBytes: () => bigint) => (): void => {
    for (const m of maps) container.mapDma(m);
    check(lockedBytes() === bytes, `${name}: pinned after the maps`);
    for (const u of unmaps) if (container.unmapDma(u) !== PAGE_4K) check(false, `${name}: an unmap missed its page`);
    check(lockedBytes() === 0n, `${name}: pinned after the unmaps`);
  };
  const [engine, naive] = sides.map((side, i) => cycle(side.container, i === 0 ? eMaps : nMaps, () => side.process.lockedBytes));
  // Before timing: both sides hold every page, read the same bytes through the device, and end empty.
  for (const [i, side] of sides.entries()) {
    for (const m of i === 0 ? eMaps : nMaps) side.container.mapDma(m);
    check(side.container.mappings().length === count, `${name}: mapping count`);
    side.process.write(side.vaddr + bytes - 8n, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8));
  }
  const [eRead, nRead] = sides.map((side) => {
    const into = new Uint8Array(8);
    return side.dma.readInto(IOVA_BASE + bytes - 8n, into).bytes === 8 ? into.join() : "fault";
  });
  check(eRead === nRead && eRead === "1,2,3,4,5,6,7,8", `${name}: engine and twin read differently`);
  for (const side of sides) {
    for (const u of unmaps) side.container.unmapDma(u);
    check(side.container.mappings().length === 0 && side.process.lockedBytes === 0n, `${name}: unmap`);
  }
  // A 65 K cycle takes about 0.3 s on the engine and 1 s on the twin: 8 calls a round (the median of 8 still drops a descheduled one).
  return { name, unit: "MAP_DMA or UNMAP_DMA of 4 KiB", items: 2 * count, engine, naive, facts: { mappings: count }, ...(count > 8192 ? { calls: 8 } : {}) };
}

/** vfio-map-4k-count and vfio-map-65k. */
export async function vfioScale(): Promise<Case[]> {
  return [await mapCount("vfio-map-4k-count", 4096), await mapCount("vfio-map-65k", DMA_ENTRY_LIMIT)];
}
