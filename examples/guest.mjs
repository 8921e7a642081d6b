// The guest story: in a nesting container the mappings are stage 2; the guest
// builds its own stage-1 table in guest memory, the VMM binds its root to a
// PASID of a device, the device DMAs by guest virtual address, and the guest
// remaps and invalidates.
// Run: node examples/guest.mjs
import { createHost } from "iommu-wasm";

const MiB = 1n << 20n;
const host = await createHost({ arch: "vtd", ramSize: 128 * 1024 * 1024 });
host.addDevice({ bdf: "0000:03:00.0" });
const vmm = host.createProcess();
const ram = vmm.mmap(16n * MiB);
const c = host.openContainer({ process: vmm });
const g = host.openGroup(0);
g.setContainer(c);
c.setIommu("nesting");                                          // instead of "type1v2": the mappings are stage 2
c.mapDma({ vaddr: ram, iova: 0n, size: 16n * MiB, read: true, write: true });

// The guest's own page allocator: table pages from GPA 1 MiB up, handed back when a table empties.
let nextTablePage = 1n * MiB;
const freed = [];
const gpt = c.gpa.pageTable({
  format: "x86-64",
  allocTable: () => freed.pop() ?? (nextTablePage += 0x1000n) - 0x1000n,
  freeTable: (gpa) => freed.push(gpa),
});
const gva = 0x7f0000000000n;
gpt.map(gva, 0x800000n, 0x1000n, { write: true });             // GVA → GPA 0x800000
c.gpa.write(0x800000n, new TextEncoder().encode("guest buffer"));

const pasid = c.pasid.alloc({ min: 1, max: 0xfffff });          // ENOSPC past the quota (openContainer({ pasidQuota }))
const nic = g.device("0000:03:00.0");
nic.bindPgtbl({ pasid, format: "x86-64", root: gpt.root });     // EBUSY if bound; EINVAL for a PASID not allocated here
console.log(`PASID ${pasid} reads GVA 0x${gva.toString(16)}: ${new TextDecoder().decode(nic.dma.read(gva, 12, { pasid }).data)}`);

// The guest moves its buffer: the device sees the old page until the guest invalidates.
c.gpa.write(0x900000n, new TextEncoder().encode("moved buffer"));
gpt.unmap(gva, 0x1000n);
gpt.map(gva, 0x900000n, 0x1000n, { write: true });
console.log(`before the invalidation: ${new TextDecoder().decode(nic.dma.read(gva, 12, { pasid }).data)}`);
c.invalidate([{ pasid, addr: gva, npages: 1 }]);                // a bad entry throws with .processed
console.log(`after it: ${new TextDecoder().decode(nic.dma.read(gva, 12, { pasid }).data)}`);

// Faults say which stage refused: a GVA the guest never mapped is stage 1.
const miss = nic.dma.read(gva + 0x1000n, 8, { pasid });
console.log(`unmapped GVA: ${miss.fault.reason}, stage ${miss.fault.stage}`);

c.pasid.free({ min: 0, max: 0xffffffff });                      // unbinds first; O(PASIDs held), not O(range)
console.log(`after the free: ${nic.dma.read(gva, 12, { pasid }).fault.reason}`);
