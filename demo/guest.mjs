// The guest story (npm start, or npm run demo -- guest): a guest builds its
// own x86-64 stage-1 tables in guest RAM (by hand, then with the builder), the VMM binds them to a PASID of a
// device in a nesting container, the device DMAs with guest virtual
// addresses, the guest remaps and invalidates, and a fault is reported with
// its stage.
import { createHost } from "../dist/iommu-wasm.js";

const hex = (v) => "0x" + v.toString(16);
const MiB = 1n << 20n;
const P = 1n, RW = 2n, US = 4n, A = 1n << 5n, D = 1n << 6n, EA = 1n << 10n;

export async function guestStory() {
  const host = await createHost({ ramSize: 128 * 1024 * 1024 });
  host.addDevice({ bdf: "0000:05:00.0" });
  const vmm = host.createProcess();
  const guestRam = vmm.mmap(32n * MiB);
  const container = host.openContainer({ process: vmm });
  const group = host.openGroup(0);
  group.setContainer(container);
  container.setIommu("nesting");
  container.mapDma({ vaddr: guestRam, iova: 0n, size: 32n * MiB, read: true, write: true });
  console.log(`nesting container: 32 MiB of guest RAM at GPA 0 is stage 2`);

  // The guest: a 4-level table at GPA 0x1000..0x4000 mapping its buffer at GVA 0x7f0000000000 to GPA 0x800000.
  const gpa = container.gpa;
  const gva = 0x7f0000000000n;
  const idx = (level) => (gva >> BigInt(12 + 9 * level)) & 511n;
  gpa.writeU64(0x1000n + idx(3) * 8n, 0x2000n | P | RW | US);
  gpa.writeU64(0x2000n + idx(2) * 8n, 0x3000n | P | RW | US);
  gpa.writeU64(0x3000n + idx(1) * 8n, 0x4000n | P | RW | US);
  gpa.writeU64(0x4000n + idx(0) * 8n, 0x800000n | P | RW | US);
  gpa.write(0x800000n, new TextEncoder().encode("a descriptor the guest wrote"));
  console.log(`guest: stage-1 table at GPA 0x1000 maps GVA ${hex(gva)} → GPA 0x800000`);

  // The VMM binds it to a PASID of the device.
  const pasid = container.pasid.alloc({ min: 1, max: 0xfffff });
  const nic = group.device("0000:05:00.0");
  // EAFE, as the guest's PASID entry asks: the IOMMU sets the extended-accessed bit along with A.
  nic.bindPgtbl({ pasid, format: "x86-64", root: 0x1000n, flags: { eafe: true } });
  console.log(`VMM: PASID ${pasid} of 0000:05:00.0 bound to that table (EAFE on)`);

  const read = nic.dma.read(gva, 28, { pasid });
  console.log(`device DMA at GVA ${hex(gva)} with PASID ${pasid}: "${new TextDecoder().decode(read.data)}"`);
  nic.dma.write(gva + 0x100n, new Uint8Array([1]), { pasid });
  const leaf = gpa.readU64(0x4000n + idx(0) * 8n);
  const bits = [[A, "A"], [D, "D"], [EA, "EA"]].filter(([b]) => (leaf & b) !== 0n).map(([, n]) => n).join(" ");
  console.log(`after a read and a write the guest's leaf has ${bits} set: written back through stage 2, as the IOMMU would`);

  // The guest remaps its buffer to another page; the device sees the old one until the guest invalidates.
  gpa.write(0x900000n, new TextEncoder().encode("the buffer after the remap"));
  gpa.writeU64(0x4000n + idx(0) * 8n, 0x900000n | P | RW | US);
  console.log(`guest remaps GVA ${hex(gva)} → GPA 0x900000; before invalidating, the device reads "${new TextDecoder().decode(nic.dma.read(gva, 26, { pasid }).data)}"`);
  container.invalidate([{ pasid, addr: gva, npages: 1 }]);
  console.log(`after the guest's invalidation: "${new TextDecoder().decode(nic.dma.read(gva, 26, { pasid }).data)}"`);

  // A stage-1 hole and a stage-2 hole: the fault says which stage refused.
  const s1 = nic.dma.read(gva + 0x1000n, 8, { pasid });
  console.log(`DMA at ${hex(gva + 0x1000n)}: ${s1.fault.reason} at level ${s1.fault.level}, stage ${s1.fault.stage}`);
  gpa.writeU64(0x4000n + (idx(0) + 1n) * 8n, (64n * MiB) | P | RW | US);
  container.invalidate([{ pasid, addr: gva + 0x1000n, npages: 1 }]);
  const s2 = nic.dma.read(gva + 0x1000n, 8, { pasid });
  console.log(`after the guest points it at GPA 0x4000000 (beyond its RAM): ${s2.fault.reason}, stage ${s2.fault.stage}`);

  // A second address space, built the way a guest kernel would: the library's builder writes the
  // table into guest RAM (through stage 2), taking table pages from the guest's own allocator.
  let nextTablePage = 0x10000n;
  const gpt = gpa.pageTable({ format: "x86-64", allocTable: () => (nextTablePage += 0x1000n) });
  gpt.map(0x40000000n, 0x1000000n, 2n * MiB, { write: true });
  const pasid2 = container.pasid.alloc({ min: 1, max: 0xfffff });
  nic.bindPgtbl({ pasid: pasid2, format: "x86-64", root: gpt.root });
  nic.dma.write(0x40000010n, new TextEncoder().encode("written by the device"), { pasid: pasid2 });
  console.log(`guest builds a table with gpa.pageTable (root ${hex(gpt.root)}, ${(nextTablePage - 0x10000n) / 0x1000n} table pages): ` +
    `GVA 0x40000000 → GPA 0x1000000 (2 MiB); device writes with PASID ${pasid2}, guest reads "${new TextDecoder().decode(gpa.read(0x1000010n, 21))}"`);
  for (const f of host.faults.drain()) {
    console.log(`  fault record: device ${hex(f.source)} PASID ${f.pasid} ${hex(f.address)} ${f.reason} (stage ${f.stage})`);
  }
}
