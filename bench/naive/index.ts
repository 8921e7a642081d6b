// The naive twin of iommu-wasm: the same API and the same answers as the
// engine facade, written the obvious way (BigInt arithmetic, DataView reads
// of an ArrayBuffer of RAM, a Map-based IOTLB, per-page copies). It is the
// benchmark's baseline and the differential tests' oracle.
export { createNaiveHost, NaiveHost, NaiveIotlbView } from "./host.js";
export { NaivePageTable } from "./pagetable.js";
export { NaiveDomain, type NaiveDomainOptions } from "./domain.js";
export { NaiveDmaPort } from "./dma.js";
export { NaivePhysicalMemory } from "./memory.js";
export { NaiveFaultLog } from "./faults.js";
export { BuilderDivergence } from "./builder.js";
export { NaivePlane } from "./plane.js";
export { NaivePasidPlane, NaivePasidTable } from "./pasid.js";
