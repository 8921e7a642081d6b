// The vGPU story (issue 9; the 2015 XenGT/KVMGT thread, in its own order):
// the guest programs its GPU's GTT with guest physical addresses; the vendor
// driver pins each page through VFIO, maps it with dma_map_page and writes
// the IOVA into the shadow GTT the GPU really walks; a GPU access is then
// translated twice, by the GPU's MMU and by the system IOMMU. When the VMM
// unmaps guest memory, VFIO tells the vendor first, the shadow entry goes,
// and the GPU's next access faults at its own MMU.
import { createHost } from "../dist/iommu-wasm.js";

const hex = (v) => "0x" + v.toString(16);
const GPU = "0000:00:02.0";

export async function vgpuStory() {
  const host = await createHost();
  // The physical GPU stays with its vendor driver (i915), which makes a vGPU on it.
  host.addDevice({ bdf: GPU, driver: "host", dmaMask: 39 });
  const vgpu = host.createMdev({ parent: GPU });
  console.log(`GPU ${GPU} driven by its vendor driver; vGPU ${vgpu.uuid} in emulated IOMMU group ${vgpu.group}`);

  // The VMM gives the guest 64 MiB at GPA 0 through a container of the vGPU's group.
  const vmm = host.createProcess();
  const container = host.openContainer({ process: vmm });
  host.openGroup(vgpu.group).setContainer(container);
  container.setIommu("type1v2");
  const guestRam = vmm.mmap(64n << 20n);
  container.mapDma({ vaddr: guestRam, iova: 0n, size: 64n << 20n, read: true, write: true });
  console.log(`VMM: guest RAM [0, 64 MiB) mapped; the container has ${container.domain ? "an" : "no"} IOMMU domain (emulated groups only), ${vmm.lockedBytes} bytes pinned so far`);

  // The vendor driver: a shadow of the guest's GGTT over the GPU's DMA API.
  const dma = host.dmaApi(GPU);
  const gtt = vgpu.shadowGtt({ format: "ggtt", entries: 1024 }, { dma });

  // The guest puts a frame at GPA 0x123000 and points GGTT entry 5 (GMA 0x5000) at it.
  vmm.write(guestRam + 0x123000n, new TextEncoder().encode("a frame the guest rendered"));
  gtt.guestWrite(5, 0x123000n | 3n);
  console.log(`\nguest writes GGTT[5] = ${hex(gtt.guestRead(5))} (GMA 0x5000 → GPA 0x123000; it reads back its own GPA)`);
  const t = gtt.translate(0x5000n);
  console.log(`vendor pinned GPA 0x123000 (${vmm.lockedBytes} bytes now pinned), dma_map_page gave IOVA ${hex(t.bus)}`);
  console.log(`GPU access to GMA 0x5000: device MMU (shadow GGTT) → IOVA ${hex(t.bus)}, system IOMMU → HPA ${hex(t.hpa)}`);
  const read = gtt.dma.read(0x5000n, 26);
  console.log(`the GPU reads by GMA: "${new TextDecoder().decode(read.data)}"`);

  // Many entries over one frame cost one pin and one map (the DMA cache).
  for (let i = 100; i < 200; i++) gtt.guestWrite(i, 0x123000n | 1n);
  const s = gtt.stats();
  console.log(`\n100 more entries over the same frame: ${s.shadowEntries} shadow entries, ${s.pinnedPages} page pinned, cache ${s.cacheHits} hits / ${s.cacheMisses} miss`);

  // The VMM unmaps the guest's RAM: VFIO calls the vendor before UNMAP_DMA returns.
  vgpu.onDmaUnmap((iova, size) => console.log(`  dma_unmap callback: [${hex(iova)}, +${hex(size)}) — the shadow already let go of its pages there`));
  console.log("\nVMM unmaps guest RAM:");
  container.unmapDma({ iova: 0n, size: 64n << 20n });
  const after = gtt.stats();
  console.log(`shadow now: ${after.shadowEntries} entries, ${after.pinnedPages} pages pinned; the guest's GGTT[5] still reads ${hex(gtt.guestRead(5))}`);
  const stale = gtt.dma.read(0x5000n, 26);
  console.log(`the GPU's next access to GMA 0x5000: ${stale.fault.reason} at the ${stale.fault.stage} — nothing stale is reachable`);
  gtt.destroy();
}
