// A host driver's DMA: the device is bound to a host driver (not VFIO), maps
// a buffer with the DMA API (dma_map_page over its group's default domain,
// IOVAs from iova.c's allocator), the device reads it, the driver unmaps it
// and the device's next access faults.
// Run: node examples/dma-api.mjs
import { createHost } from "iommu-wasm";

const host = await createHost({ arch: "vtd", ramSize: 16 * 1024 * 1024 });
host.addDevice({ bdf: "0000:02:00.0", driver: "host" });       // a NIC its host driver owns
const dma = host.dmaApi("0000:02:00.0");                        // EBUSY while VFIO owns the device
const nic = host.device("0000:02:00.0");

const buffer = host.ram.allocFrames(1) + 0x80n;                 // a driver buffer, 128 bytes into its page
host.ram.write(buffer, new TextEncoder().encode("tx packet"));
const addr = dma.mapPage(buffer, 9n, "to-device");              // the device may read it, not write it
console.log(`dma_map_page → 0x${addr.toString(16)} (top-down below 4 GiB, page offset kept)`);
console.log(`the NIC reads: ${new TextDecoder().decode(nic.dma.read(addr, 9).data)}`);
console.log(`the NIC writes: ${nic.dma.write(addr, new Uint8Array(1)).fault?.reason}`);

dma.unmapPage(addr, 9n, "to-device");                           // unmapped and invalidated before the IOVA is free
console.log(`after dma_unmap_page: ${nic.dma.read(addr, 9).fault?.reason}`);
console.log(`the next map reuses it: 0x${dma.mapPage(buffer, 9n, "to-device").toString(16)}, rcache hits ${dma.stats().rcacheHits}`);
