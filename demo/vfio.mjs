// The VMM story (npm start, or npm run demo -- vfio): a process mmaps guest
// RAM, a VFIO container maps it at GPA 0, a device DMAs into it, the kernel's
// views of reserved regions and valid IOVA ranges are printed, an MSI is
// raised, and a conflicting hot-add is refused with its reason.
import { createHost } from "../dist/iommu-wasm.js";

const hex = (v) => "0x" + v.toString(16);
const MiB = 1024n * 1024n;

export async function vmmStory() {
  const host = await createHost({ ramSize: 512 * 1024 * 1024, arch: "vtd" });
  // A NIC in a group of its own, and a GPU whose firmware reserves a range (an RMRR) that lands in low memory.
  host.addDevice({ bdf: "0000:03:00.0" });
  host.addDevice({ bdf: "0000:65:00.0", reserved: [{ start: 0x0c000000n, size: 16n * MiB, type: "direct" }] });
  console.log(`host: VT-d, groups ${host.iommuGroups().join(", ")}`);
  for (const g of host.iommuGroups()) {
    console.log(`\n/sys/kernel/iommu_groups/${g}/reserved_regions:`);
    process.stdout.write(host.reservedRegionsText(g));
  }

  // The VMM: 256 MiB of guest RAM, mapped for the NIC at GPA 0.
  const vmm = host.createProcess({ memlockLimit: 512n * MiB });
  const guestRamSize = 256n * MiB;
  const guestRam = vmm.mmap(guestRamSize);
  const container = host.openContainer({ process: vmm });
  const nicGroup = host.openGroup(host.device("0000:03:00.0").group);
  nicGroup.setContainer(container);
  container.setIommu("type1v2");
  container.mapDma({ vaddr: guestRam, iova: 0n, size: guestRamSize, read: true, write: true });
  const info = container.getInfo();
  console.log(`\nmapped ${guestRamSize / MiB} MiB of the VMM's memory at GPA 0 (vaddr ${hex(guestRam)}); locked ${vmm.lockedBytes / MiB} MiB`);
  console.log(`GET_INFO: pgsizes ${hex(info.pgsizes)}, ${info.dmaAvail} DMA entries left, valid IOVA ranges:`);
  for (const r of info.iovaRanges) console.log(`  ${hex(r.start).padStart(18)} - ${hex(r.end)}`);

  // The guest posts a packet; the NIC reads it by DMA and writes a reply.
  vmm.write(guestRam + 0x10000n, new TextEncoder().encode("ping from the guest"));
  const nic = nicGroup.device("0000:03:00.0");
  const rx = nic.dma.read(0x10000n, 19);
  console.log(`\nNIC read at GPA 0x10000: "${new TextDecoder().decode(rx.data)}"`);
  nic.dma.write(0x20000n, new TextEncoder().encode("pong from the NIC"));
  console.log(`guest sees at GPA 0x20000: "${new TextDecoder().decode(vmm.read(guestRam + 0x20000n, 17))}"`);

  // An MSI: the device writes its message to the interrupt window, no memory is touched.
  host.onInterrupt(({ device, address, data }) => console.log(`MSI from ${device}: address ${hex(address)}, data ${hex(data)}`));
  nic.dma.write(nic.msiAddress, new Uint8Array([0x41, 0x00, 0x00, 0x00]));

  // A DMA outside the guest's memory faults, with the NIC's requester id.
  const stray = nic.dma.read(0x50000000n, 8);
  const f = host.faults.drain().pop();
  console.log(`NIC read at GPA 0x50000000: ${stray.fault.reason}; fault record source ${hex(f.source)} (bus 3, device 0, function 0)`);

  // Hot-adding the GPU: its RMRR overlaps guest RAM. The check a VMM runs first, then the refusal.
  const gpuGroup = host.device("0000:65:00.0").group;
  console.log(`\nbefore hot-adding 0000:65:00.0 (group ${gpuGroup}):`);
  for (const c of host.checkGuestMemoryMap([{ start: 0n, size: guestRamSize }], { groups: [gpuGroup] })) {
    console.log(`  guest RAM [${hex(c.range.start)}, ${hex(c.range.end)}] overlaps ${c.region.type} [${hex(c.region.start)}, ${hex(c.region.end)}] of group ${c.group}`);
  }
  try {
    host.openGroup(gpuGroup).setContainer(container);
  } catch (e) {
    console.log(`hot-add refused: ${e.message}`);
  }

  console.log(`\nunmap all: ${container.unmapDma({ all: true }) / MiB} MiB; locked now ${vmm.lockedBytes} bytes`);
}
