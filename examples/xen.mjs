// A Xen driver domain shadows a served VM's GGTT and a PPGTT without ever
// seeing an MFN: each guest frame is mapped by delegated mapping at a bus
// frame (BFN) the shadow allocates, and the GPU's DMA by GMA goes GTT → BFN
// → MFN. The PPGTT's table pages are write-tracked: the guest's own stores
// to them reach the shadow. Unserving
// the VM revokes the pages: the GPU then faults at the IOMMU.
// Run: node examples/xen.mjs
import { createHost } from "iommu-wasm";

const host = await createHost({ ramSize: 64 * 1024 * 1024 });
host.addDevice({ bdf: "0000:00:02.0", driver: null });                 // the GPU, assigned to the driver domain
const hv = host.hypervisor();
const dom0 = hv.createVm({ name: "dom0", memory: 1 << 20, devices: ["0000:00:02.0"] });
const guest = hv.createVm({ name: "guest", memory: 1 << 20 });
hv.serve(dom0, guest);                                                  // the toolstack: dom0 may map guest's memory

const gtt = dom0.shadowGtt({ format: "ggtt", entries: 1024 }, { vm: guest });
guest.write(0x5000, new TextEncoder().encode("texture"));
gtt.guestWrite(1, 0x5000n | 3n);                                        // trapped: GMA 0x1000 → GFN 5, present, writable
const bfn = gtt.translate(0x1000n).bus >> 12n;
const { vm, gfn } = dom0.iommu.query(bfn);
console.log(`GMA 0x1000 → BFN 0x${bfn.toString(16)} (VM ${vm}, GFN ${gfn}); no MFN in sight`);
console.log(`the GPU reads: ${new TextDecoder().decode(gtt.dma.read(0x1000n, 7).data)}`);

// A per-process GTT lives in the guest's own memory: its table pages are write-tracked.
const ppgtt = dom0.shadowGtt({ format: "x86-64", levels: 4 }, { vm: guest });
const entry = (v) => new Uint8Array(new BigUint64Array([v]).buffer);
for (const [table, next] of [[0x1000, 0x2000n], [0x2000, 0x3000n], [0x3000, 0x4000n]]) guest.write(table, entry(next | 3n));
ppgtt.setRoot(0x1000n);                                                 // PML4 → PDPT → PD → PT: read, tracked, shadowed
guest.write(0x4000 + 2 * 8, entry(0x5000n | 3n));                       // the guest's own PTE store traps to the shadow
console.log(`the GPU reads through the PPGTT: ${new TextDecoder().decode(ppgtt.dma.read(0x2000n, 7).data)}`);

hv.unserve(dom0, guest);                                                // revoked and invalidated before it returns
const after = gtt.dma.read(0x1000n, 7);
console.log(`after unserve: ${after.fault.reason} at the ${after.fault.stage}`);
console.log(`the PPGTT too: ${ppgtt.dma.read(0x2000n, 7).fault.stage}`);
