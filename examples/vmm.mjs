// The VMM story: a process mmaps guest RAM, a VFIO type1 container maps it at
// GPA 0, a NIC DMAs into it, raises an MSI, and dirty pages are tracked.
// Run: node examples/vmm.mjs
import { createHost } from "iommu-wasm";

const MiB = 1n << 20n;
const host = await createHost({ arch: "vtd", ramSize: 256 * 1024 * 1024 });   // or "smmuv3"; RAM must hold the guest's memory
host.addDevice({ bdf: "0000:03:00.0" });                                       // its own IOMMU group, 0
process.stdout.write(host.reservedRegionsText(0));                             // "0x00000000fee00000 0x00000000feefffff msi"

const vmm = host.createProcess({ memlockLimit: 128n * MiB });
const ram = vmm.mmap(64n * MiB);                                               // guest RAM, frames need not be contiguous
const c = host.openContainer({ process: vmm });
const g = host.openGroup(0);
g.setContainer(c);                                                             // EPERM if not viable or no MSI isolation
c.setIommu("type1v2");                                                         // needs a group first, as in the kernel
c.mapDma({ vaddr: ram, iova: 0n, size: 64n * MiB, read: true, write: true });
const info = c.getInfo();
console.log(`pgsizes 0x${info.pgsizes.toString(16)}, ${info.dmaAvail} DMA entries left, ${info.iovaRanges.length} valid IOVA ranges`);

const nic = g.device("0000:03:00.0");
vmm.write(ram + 0x1000n, new TextEncoder().encode("ping"));
console.log(`NIC reads GPA 0x1000: ${new TextDecoder().decode(nic.dma.read(0x1000n, 4).data)}`);

host.onInterrupt(({ device, address, data }) => console.log(`MSI from ${device} at 0x${address.toString(16)}, data ${data}`));
nic.dma.write(nic.msiAddress, new Uint8Array([1, 0, 0, 0]));

// Migration: track dirty pages, read bitmaps while the guest runs, take the last ones with the unmap.
const dirtyPages = (bitmap) => [...bitmap].flatMap((byte, i) => [0, 1, 2, 3, 4, 5, 6, 7].filter((b) => byte & (1 << b)).map((b) => `0x${((i * 8 + b) * 4096).toString(16)}`));
c.dirty.start();
nic.dma.write(0x3000n, new TextEncoder().encode("pong"));
const bits = c.dirty.bitmap({ iova: 0n, size: 64n * MiB, pgsize: 4096n });  // bit i: page i written since the last read
console.log(`dirty since start: ${dirtyPages(bits).join(", ")}`);
nic.dma.write(0x5000n, new TextEncoder().encode("late"));
const { size, bitmap } = c.unmapDma({ iova: 0n, size: 64n * MiB, dirtyBitmap: { pgsize: 4096n } }); // read before the pages go
c.dirty.stop();
console.log(`unmapped ${size / MiB} MiB, dirty at the unmap: ${dirtyPages(bitmap).join(", ")}; locked now ${vmm.lockedBytes}`);
