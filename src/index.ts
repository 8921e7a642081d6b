// Public exports of iommu-wasm.
export { createHost, Host, type HostOptions, type TranslationBatch } from "./host.js";
export { IommuError, type Errno } from "./errors.js";
export { PhysicalMemory } from "./memory.js";
export { PageTable, type WalkResult, type WalkStep } from "./pagetable.js";
export { Domain, type Translation, type TranslateOptions, type InvalidateOptions, type DomainOptions } from "./domain.js";
export { DmaPort, type DmaOptions, type DmaResult, type DmaReadResult, type DmaFault, type SgOptions, type SgResult, type SgSegments } from "./dma.js";
export { Iotlb, type IotlbStats } from "./iotlb.js";
export { FaultLog, type FaultRecord } from "./faults.js";
export { PAGE_4K, PAGE_2M, PAGE_1G, type FormatName, type PageTableOptions, type DomainFlags } from "./format.js";
export type { Access, AccessFlags, Perms, Prot, FaultReason } from "./access.js";
export type { Address } from "./addr.js";
