// npm start: a tour of the engine on its defaults — a host with 256 MiB of
// RAM, an x86-64 4-level table with mixed page sizes, walks printed level by
// level, translations through the IOTLB, DMA, a fault, and the counters.
import { createHost, PAGE_4K, PAGE_2M, PAGE_1G } from "../dist/iommu-wasm.js";
import { vmmStory } from "./vfio.mjs";
import { guestStory } from "./guest.mjs";
import { vgpuStory } from "./vgpu.mjs";
import { xenStory } from "./xen.mjs";

// npm start runs every part; npm run demo -- engine | vfio | guest | vgpu | xen runs one.
const only = process.argv[2];
if (only === "vfio") { await vmmStory(); process.exit(0); }
if (only === "guest") { await guestStory(); process.exit(0); }
if (only === "vgpu") { await vgpuStory(); process.exit(0); }
if (only === "xen") { await xenStory(); process.exit(0); }

const hex = (v) => "0x" + v.toString(16);
const size = (s) => (s >= PAGE_1G ? `${s / PAGE_1G} GiB` : s >= PAGE_2M ? `${s / PAGE_2M * 2n} MiB` : `${s / 1024n} KiB`);
const LEVELS = ["PTE", "PDE", "PDPTE", "PML4E", "PML5E"];

const host = await createHost();
console.log(`host: ${Number(host.ram.size) >> 20} MiB of RAM, IOTLB ${host.iotlb.sets} sets × ${host.iotlb.ways} ways, engine ${host.engineFingerprint}\n`);

// A device's DMA domain over an x86-64 (VT-d first-level) 4-level table.
const domain = host.createDomain({ format: "x86-64", levels: 4 });
const pt = domain.pageTable;
const buffer = host.ram.allocFrames(512 * 3); // 6 MiB of RAM to back the mappings
const hpa2m = (buffer + PAGE_2M - 1n) & ~(PAGE_2M - 1n);

pt.map(0x0000_1000n, buffer, 3n * PAGE_4K, { write: true });                // three 4 KiB pages
pt.map(0x4020_0000n, hpa2m, PAGE_2M, { write: true });                        // one 2 MiB page
pt.map(0x8000_0000n, 0x1_0000_0000n, PAGE_1G);                               // one read-only 1 GiB page, beyond RAM
pt.map(0x4000_0000n - PAGE_4K, buffer + 3n * PAGE_4K, PAGE_4K, { write: false, user: false });
console.log("mapped: 3 × 4 KiB at 0x1000, 2 MiB at 0x40200000, 1 GiB at 0x80000000 (beyond RAM), a supervisor-only page at 0x3ffff000\n");

for (const iova of [0x2abcn, 0x4031_2345n, 0x8123_4567n, 0x5000n]) {
  const walk = domain.walk(iova, "read");
  console.log(`walk ${hex(iova)}:`);
  for (const step of walk.steps) {
    console.log(`  L${step.level} ${LEVELS[step.level].padEnd(6)} @ ${hex(step.entryAddress).padStart(10)} = ${hex(step.entry).padStart(18)}`);
  }
  if (walk.fault) console.log(`  → fault: ${walk.fault.reason} at level ${walk.fault.level}\n`);
  else console.log(`  → hpa ${hex(walk.hpa)} (${size(walk.pageSize)} page, ${Object.entries(walk.perms).filter(([, v]) => v).map(([k]) => k).join("/")})\n`);
}

// Translations through the IOTLB: the first misses and walks, the repeat hits.
for (const iova of [0x4031_2345n, 0x4031_2345n, 0x8123_4567n]) {
  const t = domain.translate(iova, "read");
  console.log(`translate ${hex(iova)} → ${hex(t.hpa)}${t.inRam ? "" : " (outside RAM: a DMA there faults)"}`);
}

// DMA: the device writes a message across a page boundary, then reads it back.
const message = new TextEncoder().encode("DMA through the IOMMU, across a 4 KiB page boundary");
const write = domain.dma.write(0x1ff0n, message);
const read = domain.dma.read(0x1ff0n, message.length);
console.log(`\nDMA write ${write.bytes} bytes at 0x1ff0, read back: "${new TextDecoder().decode(read.data)}"`);
console.log(`  in RAM at ${hex(pt.iovaToPhys(0x1ff0n))} and ${hex(pt.iovaToPhys(0x2000n))}`);

// A DMA that runs off the end of its mapping stops there and reports how far it got.
const partial = domain.dma.read(0x3800n, 0x1000);
console.log(`\nDMA read of 4096 bytes at 0x3800: ${partial.bytes} bytes, then ${partial.fault.reason} at ${hex(partial.fault.address)} (level ${partial.fault.level})`);
const denied = domain.dma.write(0x3ffff000n, new Uint8Array(8));
console.log(`DMA write to the supervisor-only page: ${denied.bytes} bytes, ${denied.fault.reason}`);

console.log("\nfault ring:");
for (const f of host.faults.drain()) {
  const access = Object.entries(f.access).filter(([, v]) => v).map(([k]) => k).join("+");
  console.log(`  domain ${f.domain} pasid ${f.pasid} ${access.padEnd(5)} ${hex(f.address).padStart(12)}: ${f.reason} at level ${f.level} (stage ${f.stage})`);
}

// Unmap without invalidating: the IOTLB still serves the old translation, as real hardware would.
pt.unmap(0x4020_0000n, PAGE_2M);
const stale = domain.translate(0x4031_2345n);
domain.invalidate({ iova: 0x4020_0000n, npages: 512 });
const fresh = domain.translate(0x4031_2345n);
console.log(`\nafter unmap: ${hex(stale.hpa)} (stale IOTLB entry); after invalidate: ${fresh.fault.reason}`);

const s = host.iotlb.stats();
console.log(`\nIOTLB: ${s.hits} hits, ${s.misses} misses, ${s.walks} walks, ${s.evictions} evictions, ${s.invalidations} invalidations`);

if (only !== "engine") {
  console.log("\n" + "=".repeat(78) + "\nThe VMM story: VFIO containers, groups and devices\n" + "=".repeat(78));
  await vmmStory();
  console.log("\n" + "=".repeat(78) + "\nThe guest story: nested translation through a PASID\n" + "=".repeat(78));
  await guestStory();
  console.log("\n" + "=".repeat(78) + "\nThe vGPU story: a mediated GPU, its shadow GTT, two translations per access\n" + "=".repeat(78));
  await vgpuStory();
  console.log("\n" + "=".repeat(78) + "\nThe Xen story: a driver domain, delegated mapping, a shadow GGTT of BFNs\n" + "=".repeat(78));
  await xenStory();
}
