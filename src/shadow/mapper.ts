// What a shadow device page table needs from whoever can make guest memory
// reachable by the device: map one guest frame and say where the device sees
// it (a bus address: an IOVA of the system IOMMU), unmap it, and be told when
// guest frames must go at once. An mdev's vendor driver implements it with
// vfio_pin_pages + dma_map_page (src/mdev/mapper.ts); a Xen backend would with
// delegated IOMMU mappings. The shadow never learns a host physical address.

export interface ShadowMapper {
  /** Makes guest frame `gfn` reachable by the device; its bus address, or undefined when that cannot be done now (the shadow then uses its scratch page). */
  map(gfn: bigint): bigint | undefined;
  /** The device no longer needs `gfn` at `bus` (the last shadow entry using it went). */
  unmap(gfn: bigint, bus: bigint): void;
}
