// A mediated GPU (vGPU) as a vendor driver runs one: the guest's GGTT holds
// guest physical addresses; the driver shadows it with IOVAs of pages it pins
// through VFIO and maps with the DMA API, so each GPU access is translated
// twice (the GPU's MMU, then the system IOMMU). The VMM's unmap takes the
// shadow entries away before it returns.
// Run: node examples/vgpu.mjs
import { createHost } from "iommu-wasm";

const host = await createHost({ ramSize: 64 * 1024 * 1024 });
host.addDevice({ bdf: "0000:00:02.0", driver: "host", dmaMask: 39 });   // the GPU, with its vendor driver
const vgpu = host.createMdev({ parent: "0000:00:02.0" });               // a vGPU, in an emulated IOMMU group

const vmm = host.createProcess();                                        // the VMM gives the guest 16 MiB at GPA 0
const container = host.openContainer({ process: vmm });
host.openGroup(vgpu.group).setContainer(container);
container.setIommu("type1v2");
const guestRam = vmm.mmap(16n << 20n);
container.mapDma({ vaddr: guestRam, iova: 0n, size: 16n << 20n, read: true, write: true });

const gtt = vgpu.shadowGtt({ format: "ggtt", entries: 1024 }, { dma: host.dmaApi("0000:00:02.0") });
vmm.write(guestRam + 0x42000n, new TextEncoder().encode("texture"));
gtt.guestWrite(1, 0x42000n | 3n);                                        // trapped: GMA 0x1000 → GPA 0x42000, present, writable
const t = gtt.translate(0x1000n);
console.log(`GMA 0x1000 → IOVA 0x${t.bus.toString(16)} → HPA 0x${t.hpa.toString(16)}`);
console.log(`the GPU reads: ${new TextDecoder().decode(gtt.dma.read(0x1000n, 7).data)}`);

container.unmapDma({ iova: 0n, size: 16n << 20n });                      // the shadow lets go before this returns
const after = gtt.dma.read(0x1000n, 7);
console.log(`after the VMM's unmap: ${after.fault.reason} at the ${after.fault.stage}; pinned pages ${gtt.stats().pinnedPages}`);
