// Public exports of iommu-wasm.
export { createHost, Host, type HostOptions, type ContainerOptions, type TranslationBatch } from "./host.js";
export { Process, type ProcessOptions, type MmapOptions } from "./vfio/process.js";
export { Container, type IommuType, type MapDmaRequest, type UnmapDmaRequest, type ContainerInfo, type DirtyBitmapRequest } from "./vfio/container.js";
export { VfioGroup, VfioDevice, type Interrupt } from "./vfio/group.js";
export { HostDevice, type DeviceSpec, type Conflict, type Driver } from "./vfio/topology.js";
export type { Arch } from "./vfio/arch.js";
export { PasidSpace, PasidTable, ContainerPasids, type PasidRange } from "./vfio/pasid.js";
export type { IovaRange, ReservedRegion, ReservedRegionSpec, ReservedType } from "./vfio/reserved.js";
export { IommuError, type Errno } from "./errors.js";
export { PhysicalMemory } from "./memory.js";
export { PageTable, type WalkResult, type WalkStep } from "./pagetable.js";
export { Domain, type Translation, type TranslateOptions, type InvalidateOptions, type DomainOptions, type NestedDomainOptions } from "./domain.js";
export { DmaPort, type DmaOptions, type DmaResult, type DmaReadResult, type DmaFault, type DmaInterrupt, type SgOptions, type SgResult, type SgSegments } from "./dma.js";
export { Iotlb, type IotlbStats } from "./iotlb.js";
export { FaultLog, type FaultRecord } from "./faults.js";
export { PAGE_4K, PAGE_2M, PAGE_1G, type FormatName, type PageTableOptions, type DomainFlags } from "./format.js";
export type { Access, AccessFlags, Perms, Prot, FaultReason } from "./access.js";
export type { Address } from "./addr.js";
