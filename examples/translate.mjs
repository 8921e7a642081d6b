// Translate and DMA through one IOMMU domain, and see a fault.
// Run: node examples/translate.mjs
import { createHost, PAGE_2M } from "iommu-wasm";

const host = await createHost({ ramSize: 64 * 1024 * 1024 });
const domain = host.createDomain({ format: "x86-64", levels: 4 });
domain.pageTable.map(0x40000000n, 0x200000n, PAGE_2M, { write: true });   // IOVA 0x40000000 → HPA 0x200000, one 2 MiB page

const t = domain.translate(0x40001234n, "write");
console.log(`translate 0x40001234 → hpa 0x${t.hpa.toString(16)}, page 0x${t.pageSize.toString(16)}`);

domain.dma.write(0x40000000n, new TextEncoder().encode("hello"));
const { data, bytes } = domain.dma.read(0x40000000n, 5);
console.log(`read ${bytes} bytes: ${new TextDecoder().decode(data)}`);

// A read that runs off the end of the mapping stops there and says why.
const partial = domain.dma.read(0x401ffffen, 4);
console.log(`read at the end of the page: ${partial.bytes} bytes, then ${partial.fault.reason} at 0x${partial.fault.address.toString(16)}`);

for (const f of host.faults.drain()) {
  const access = Object.entries(f.access).filter(([, on]) => on).map(([kind]) => kind).join("+");
  console.log(`fault record: ${f.reason} at 0x${f.address.toString(16)} (${access}, level ${f.level}, stage ${f.stage})`);
}
