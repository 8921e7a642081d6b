// What a shadow device page table needs from whoever can make guest memory
// reachable by the device: map one guest frame and say where the device sees
// it (a bus address: an IOVA of the system IOMMU), unmap it, and be told when
// guest frames must go at once. An mdev's vendor driver implements it with
// vfio_pin_pages + dma_map_page (src/mdev/mapper.ts); a Xen backend would with
// delegated IOMMU mappings. The shadow never learns a host physical address.

export interface ShadowMapper {
  /**
   * Makes `pages` guest frames from `gfn` (1, or 512 for a 2 MiB leaf: then
   * one HPA-contiguous run behind one 2 MiB-aligned bus address) reachable by
   * the device; their bus address, or undefined when that cannot be done now
   * (the shadow then uses its scratch page, or smaller pieces).
   */
  map(gfn: bigint, pages: number): bigint | undefined;
  /** The device no longer needs the frames at `bus` (the last shadow entry using them went). */
  unmap(gfn: bigint, bus: bigint, pages: number): void;
}

/**
 * The guest's own tables, as the vendor driver reaches them (a PPGTT lives
 * in guest memory): read and write by GPA, and write-protect a page so its
 * writes are trapped and its removal is told (an mdev: a pin on the page, so
 * the VMM's unmap of it reaches the shadow; GVT's KVM page tracking).
 */
export interface GuestTables {
  read(gpa: bigint, length: number): Uint8Array;
  write(gpa: bigint, bytes: Uint8Array): void;
  /** Starts tracking the guest page at gfn; throws (an IommuError) when it cannot be. */
  protect(gfn: bigint): void;
  unprotect(gfn: bigint): void;
}

/** A zeroed host frame the device reaches at `bus` (mapped both ways): the scratch page, a shadow table. */
export interface DeviceFrame {
  readonly bus: bigint;
  /** Writes bytes at offset in the frame (host-side, as the driver stores through its mapping). */
  write(offset: number, bytes: Uint8Array): void;
  /** Unmaps the frame for the device and frees it. */
  release(): void;
}
