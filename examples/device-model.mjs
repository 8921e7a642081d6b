// Embedding in an emulator: a tiny DMA copy engine whose every access goes
// through the IOMMU. The guest puts descriptors in a ring in its memory; on a
// doorbell the device reads each descriptor by DMA, gathers its two source
// pieces with one scatter-gather read, writes them to the destination, and
// writes a completion status back into the descriptor. A descriptor that
// points at memory the IOMMU does not map completes with an error, and the
// fault names the address. Addresses are plain numbers where they can be:
// below 2^53 a DMA call then makes no BigInt and allocates nothing.
// Run: node examples/device-model.mjs
import { createHost } from "iommu-wasm";

const DESC_SIZE = 32;                  // a descriptor: two source pieces and a destination
const OFF = { src0: 0, src1: 8, len0: 16, len1: 20, dst: 24 };
const STATUS_OK = 1, STATUS_FAULT = 2;

class CopyEngine {
  constructor(dma) {
    this.dma = dma;                    // the device's DMA port: every access is translated and checked
    this.desc = new Uint8Array(DESC_SIZE);
    this.view = new DataView(this.desc.buffer);
    this.buffer = new Uint8Array(4096);
    this.status = new Uint8Array(4);
  }

  /** The guest wrote the ring's tail register: process descriptors [head, tail). */
  doorbell(ringIova, head, tail, statusIova) {
    for (let i = head; i < tail; i++) {
      const at = ringIova + i * DESC_SIZE;
      const read = this.dma.readInto(at, this.desc);
      if (read.fault) return this.complete(statusIova, i, STATUS_FAULT, read.fault);
      const len0 = this.view.getUint32(OFF.len0, true), len1 = this.view.getUint32(OFF.len1, true);
      const segments = [
        { iova: this.view.getBigUint64(OFF.src0, true), length: len0 },
        { iova: this.view.getBigUint64(OFF.src1, true), length: len1 },
      ];
      const data = this.buffer.subarray(0, len0 + len1);
      const gathered = this.dma.sg(segments, data, { direction: "read" });
      const stored = gathered.fault ? gathered : this.dma.write(this.view.getBigUint64(OFF.dst, true), data);
      this.complete(statusIova, i, stored.fault ? STATUS_FAULT : STATUS_OK, stored.fault);
    }
  }

  complete(statusIova, index, status, fault) {
    new DataView(this.status.buffer).setUint32(0, status, true);
    this.dma.write(statusIova + index * 4, this.status);
    if (fault) console.log(`descriptor ${index}: ${fault.reason} at 0x${fault.address.toString(16)}`);
  }
}

// The platform: 1 MiB of guest RAM at IOVA 0 (GPA = IOVA here), behind an x86-64 IOMMU domain.
const host = await createHost({ ramSize: 16 * 1024 * 1024 });
const guestRam = host.ram.allocFrames(256);
const domain = host.createDomain({ format: "x86-64", levels: 4 });
domain.pageTable.map(0n, guestRam, 0x100000n, { write: true });
const guest = {
  write: (gpa, bytes) => host.ram.write(guestRam + gpa, bytes),
  read: (gpa, len) => host.ram.read(guestRam + gpa, len),
};
const engine = new CopyEngine(domain.dma);

// The guest driver: two descriptors, the second pointing past the end of its memory.
const RING = 0x1000, STATUS = 0x2000;
guest.write(0x10000n, new TextEncoder().encode("hello, "));
guest.write(0x20ff0n, new TextEncoder().encode("IOMMU world"));
const descriptor = (src0, len0, src1, len1, dst) => {
  const d = new DataView(new ArrayBuffer(DESC_SIZE));
  d.setBigUint64(OFF.src0, src0, true); d.setBigUint64(OFF.src1, src1, true);
  d.setUint32(OFF.len0, len0, true); d.setUint32(OFF.len1, len1, true);
  d.setBigUint64(OFF.dst, dst, true);
  return new Uint8Array(d.buffer);
};
guest.write(BigInt(RING), descriptor(0x10000n, 7, 0x20ff0n, 11, 0x30000n));
guest.write(BigInt(RING + 32), descriptor(0x10000n, 7, 0x200000n, 11, 0x30100n));

engine.doorbell(RING, 0, 2, STATUS);

const status = new DataView(guest.read(BigInt(STATUS), 8).buffer);
console.log(`status: ${status.getUint32(0, true)} ${status.getUint32(4, true)} (1 = done, 2 = fault)`);
console.log(`destination: ${new TextDecoder().decode(guest.read(0x30000n, 18))}`);
console.log(`IOTLB: ${JSON.stringify(host.iotlb.stats())}`);
