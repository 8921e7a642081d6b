// The Xen story (issue 10): a dom0-style backend drives the GPU and serves
// one VM. It never learns a machine frame number: it asks the hypervisor to
// "map this GFN into my IOMMU tables" at a bus frame (BFN) of its choice, and
// its shadow GGTT holds BFNs, so the GPU's DMA by GMA goes GTT → BFN → MFN.
// Mapping a VM it does not serve is refused, and so is the old GFN → MFN
// query; with the insecure exposeMfn baseline, the backend's device reads an
// unserved VM's page. Unserving the VM makes the GPU fault at the IOMMU.
import { createHost } from "../dist/iommu-wasm.js";

const hex = (v) => "0x" + v.toString(16);
const GPU = "0000:00:02.0";
const enc = (s) => new TextEncoder().encode(s);
const dec = (b) => new TextDecoder().decode(b);
const refusal = (f) => { try { f(); return "allowed"; } catch (e) { return e.message; } };

async function world(exposeMfn) {
  const host = await createHost({ ramSize: 64 << 20 });
  host.addDevice({ bdf: GPU, driver: null });   // unbound: the toolstack assigns it to the driver domain
  const hv = host.hypervisor({ exposeMfn });
  const dom0 = hv.createVm({ name: "dom0", memory: 1 << 20, devices: [GPU] });
  const guest = hv.createVm({ name: "guest", memory: 1 << 20 });
  const stranger = hv.createVm({ name: "stranger", memory: 1 << 20 });
  guest.write(0x5000, enc("guest's framebuffer"));
  stranger.write(0x3000, enc("stranger's secret"));
  return { host, hv, dom0, guest, stranger };
}

export async function xenStory() {
  const { hv, dom0, guest, stranger } = await world(false);
  console.log(`backend ${dom0.name} (VM ${dom0.id}) drives the GPU ${GPU}; its IOMMU table maps its own ${dom0.gfnCount} pages at BFN = GFN and nothing else`);
  hv.serve(dom0, guest);
  console.log(`toolstack: ${dom0.name} serves ${guest.name} (VM ${guest.id}) and no one else`);

  // "Map this GFN into my IOMMU tables": the backend names (VM, GFN) and a BFN, never an MFN.
  dom0.iommu.map({ bfn: 0x1000, vm: guest, gfn: 5 });
  console.log(`\ndelegated map: BFN 0x1000 ← (VM ${guest.id}, GFN 5); query says ${JSON.stringify(dom0.iommu.query(0x1000), (_, v) => (typeof v === "bigint" ? hex(v) : v))}`);
  console.log(`  the GPU (as the backend's device) reads BFN 0x1000: "${dec(dom0.device(GPU).dma.read(0x1000n << 12n, 19).data)}"`);
  dom0.iommu.unmap({ bfn: 0x1000 });

  // The GPU's shadow GGTT: the guest writes GMA → GFN; the shadow holds GMA → BFN.
  const gtt = dom0.shadowGtt({ format: "ggtt", entries: 1024 }, { vm: guest });
  gtt.guestWrite(1, 0x5000n | 3n);
  const t = gtt.translate(0x1000n);
  console.log(`\nshadow GGTT: guest entry 1 = ${hex(gtt.guestRead(1))} (GFN 5); the GPU walks GMA 0x1000 → BFN ${hex(t.bus >> 12n)} → HPA (the hypervisor's)`);
  console.log(`  BFN ${hex(t.bus >> 12n)} holds ${JSON.stringify(dom0.iommu.query(t.bus >> 12n), (_, v) => (typeof v === "bigint" ? hex(v) : v))}`);
  console.log(`  the GPU reads GMA 0x1000 in one walk (GTT → BFN → MFN): "${dec(gtt.dma.read(0x1000n, 19).data)}"`);
  for (let i = 2; i < 1000; i++) gtt.guestWrite(i, 0x5000n | 3n);
  console.log(`  999 entries over that frame: ${dom0.iommu.mappings().length} BFN mapping, ${gtt.stats().cacheHits} cache hits`);

  // What the backend cannot do.
  console.log(`\nmap an unserved VM's page: ${refusal(() => dom0.iommu.map({ bfn: 0x2000, vm: stranger, gfn: 3 }))}`);
  console.log(`gfnToMfn (the 2014 XenGT hypercall): ${refusal(() => hv.gfnToMfn(guest, 5))}`);

  // Unserve: the hypervisor revokes the pages and invalidates before it returns; the shadow keeps its entries.
  const revoked = hv.unserve(dom0, guest);
  const after = gtt.dma.read(0x1000n, 19);
  console.log(`\nunserve: ${revoked} page revoked; the GPU's next read of GMA 0x1000: ${after.fault.reason} at the ${after.fault.stage}`);
  guest.destroy();
  const next = hv.createVm({ name: "next", memory: 1 << 20 });
  for (let g = 0; g < next.gfnCount; g++) next.write(g * 4096, enc("next VM's data"));
  const reused = gtt.dma.read(0x1000n, 14);
  console.log(`guest destroyed, its frames handed to a new VM: the GPU still gets ${reused.fault.reason} at the ${reused.fault.stage}, never "next VM's data"`);

  // The insecure baseline: MFNs exposed, dom0's IOMMU table all of RAM 1:1.
  const bad = await world(true);
  const mfn = bad.hv.gfnToMfn(bad.stranger, 3);
  const breach = bad.dom0.device(GPU).dma.read(mfn << 12n, 17);
  console.log(`\nwith exposeMfn: gfnToMfn(stranger, 3) = ${hex(mfn)}; the backend's device reads MFN ${hex(mfn)}: "${dec(breach.data)}" — an unserved VM's page`);
}
