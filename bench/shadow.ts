// The vGPU cases (issue 9): shadow-gtt-update, a guest's GGTT entry writes as
// an emulator traps them (each pins and DMA-maps its frame unless the DMA
// cache has it, aims the shadow entry at the IOVA, invalidates the GPU's
// cached translation, and lets go of the old frame); gpu-dma-4k, the GPU's
// 4 KiB reads by GMA through the shadow and the parent's IOMMU domain in one
// walk, against device-dma-4k (a VFIO device's reads through one stage).
import { createHost, type Host, type ShadowGtt } from "../src/index.js";
import { createNaiveHost } from "./naive/index.js";
import { RAM_SIZE, residentU64s } from "./fixtures.js";
import type { Case } from "./cases.js";

const GPU = "0000:00:02.0";
const FRAMES = 1000;
const ENTRIES = 1024;
const GUEST = BigInt(FRAMES) * 0x1000n;

interface Vgpu { host: Host; gtt: ShadowGtt; write(gpa: bigint, bytes: Uint8Array): void }

/** A guest of FRAMES pages behind an mdev, and its shadow GGTT over the parent's DMA API. */
async function vgpu(make: (o: object) => Promise<unknown>): Promise<Vgpu> {
  const host = (await make({ arch: "vtd", ramSize: RAM_SIZE })) as Host;
  host.addDevice({ bdf: GPU, driver: "host", dmaMask: 39 });
  const mdev = host.createMdev({ parent: GPU });
  const vmm = host.createProcess();
  const c = host.openContainer({ process: vmm });
  host.openGroup(mdev.group).setContainer(c);
  c.setIommu("type1v2");
  const ram = vmm.mmap(GUEST);
  c.mapDma({ vaddr: ram, iova: 0n, size: GUEST, read: true, write: true });
  const gtt = mdev.shadowGtt({ format: "ggtt", entries: ENTRIES }, { dma: host.dmaApi(GPU) });
  return { host, gtt, write: (gpa, bytes) => vmm.write(ram + gpa, bytes) };
}

export async function shadowGttUpdate(): Promise<Case> {
  const e = await vgpu(createHost), n = await vgpu(createNaiveHost as never);
  // Each round moves every entry to another of the FRAMES guest frames: most
  // writes find their frame in the DMA cache, and frames left with no entry
  // are unmapped and unpinned, then mapped again later.
  let round = 0;
  const pass = (s: Vgpu, r: number) => {
    for (let i = 0; i < ENTRIES; i++) s.gtt.guestWrite(i, (BigInt((i * 7 + r * 13) % FRAMES) << 12n) | 3n);
  };
  pass(e, 0);
  pass(n, 0);
  const a = e.gtt.stats(), b = n.gtt.stats();
  if (JSON.stringify(a) !== JSON.stringify(b) || a.shadowEntries !== ENTRIES) throw new Error("benchmark fixture is broken: engine and twin shadows differ");
  return {
    name: "shadow-gtt-update", unit: "guest GGTT entry write", items: ENTRIES,
    engine: () => { pass(e, ++round); },
    naive: () => { pass(n, ++round); },
  };
}

export async function gpuDma4k(): Promise<Case> {
  const pages = 64;
  const e = await vgpu(createHost), n = await vgpu(createNaiveHost as never);
  const fill = Uint8Array.from({ length: pages * 4096 }, (_, i) => (i * 7 + (i >> 12)) & 0xff);
  for (const s of [e, n]) {
    s.write(0n, fill);
    for (let i = 0; i < pages; i++) s.gtt.guestWrite(i, (BigInt(i) << 12n) | 3n);
  }
  const pairs = [...Array(pages).keys()].flatMap((i) => [BigInt(i) * 0x1000n, 0x1000n]);
  const total = pages * 4096;
  const eSegs = residentU64s(e.host, pairs), nSegs = BigUint64Array.from(pairs);
  const eBuf = e.host.allocBuffer(total), nBuf = new Uint8Array(total);
  const ok = (r: { bytes: number }) => r.bytes === total;
  if (!ok(e.gtt.dma.sg(eSegs, eBuf, { direction: "read" })) || !ok(n.gtt.dma.sg(nSegs, nBuf, { direction: "read" })) || eBuf.some((v, i) => v !== fill[i] || v !== nBuf[i])) {
    throw new Error("benchmark fixture is broken: the GPU reads the wrong bytes");
  }
  return {
    name: "gpu-dma-4k", unit: "4 KiB read", items: pages,
    engine: () => { e.gtt.dma.sg(eSegs, eBuf, { direction: "read" }); },
    naive: () => { n.gtt.dma.sg(nSegs, nBuf, { direction: "read" }); },
  };
}
