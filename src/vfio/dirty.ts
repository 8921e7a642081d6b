// Dirty tracking for migration: start, stop, GET_DIRTY_BITMAP, and the bits
// an unmap with the dirty bitmap reads. Precise (the choice; the
// kernel's type1 reports every IOMMU-mapped page dirty): device writes set
// the stage-2 dirty bit, read and cleared here.
import { hex, toU64, U64_MAX, PAGE_SIZE, type Address } from "../addr.js";
import { fail } from "../errors.js";
import { options } from "../args.js";
import * as abi from "../engine/abi.js";
import { MAX_DIRTY_BITMAP_BYTES, minPageSize, requireIommu, type ContainerCore, type ContainerDomain } from "./core.js";

export interface DirtyBitmapRequest { iova: Address; size: Address; pgsize: Address }

export class DirtyTracking {
  /** The range may not cut a mapping (type1's bisect rule; type1.ts owns it). */
  constructor(private readonly core: ContainerCore, private readonly checkNoBisect: (first: bigint, last: bigint, what: string) => void) {}

  start(): void {
    const domain = requireIommu(this.core);
    if (this.core.dirtyTracking) return;
    const plane = this.core.host.plane;
    // Start clean: clear every dirty bit, then flush so writes walk and set them anew.
    for (const m of this.core.maps.all()) plane.readDirty(domain.id, m.iova, m.last);
    plane.setDomainFlags(domain.id, domainFlags(true));
    plane.flushDomain(domain.id);
    this.core.dirtyTracking = true;
  }

  stop(): void {
    const domain = requireIommu(this.core);
    if (!this.core.dirtyTracking) return;
    this.core.host.plane.setDomainFlags(domain.id, domainFlags(false));
    this.core.host.plane.flushDomain(domain.id);
    this.core.dirtyTracking = false;
  }

  /** Bit i ↔ page iova + i·pgsize; the bits read are cleared. */
  bitmap(given: DirtyBitmapRequest): Uint8Array {
    const domain = requireIommu(this.core);
    if (given === undefined) fail("EINVAL", "dirty bitmap: give { iova, size, pgsize }");
    const request = options(given, "dirty bitmap request", ["iova", "size", "pgsize"] as const) as DirtyBitmapRequest;
    const iova = toU64(request.iova, "iova"), size = toU64(request.size, "size"), pgsize = toU64(request.pgsize, "pgsize");
    if (size === 0n) fail("EINVAL", "dirty bitmap: size is zero");
    if (iova + size - 1n > U64_MAX) fail("EOVERFLOW", `dirty bitmap: ${hex(iova)} + ${hex(size)} wraps past 2^64`);
    const min = minPageSize(this.core);
    if (pgsize !== min) fail("EINVAL", `dirty bitmap: pgsize must be ${hex(min)}`);
    if (iova % min !== 0n || size % min !== 0n) fail("EINVAL", "dirty bitmap: iova and size must be page aligned");
    const pages = size / min;
    if ((pages + 7n) / 8n > MAX_DIRTY_BITMAP_BYTES) fail("EINVAL", "dirty bitmap: the range needs more than 256 MiB of bitmap");
    if (!this.core.dirtyTracking) fail("EINVAL", "dirty bitmap: tracking is not started");
    this.checkNoBisect(iova, iova + size - 1n, "dirty bitmap");
    return this.mappedDirty(domain, iova, iova + size - 1n);
  }

  /** GET_DIRTY_BITMAP's conditions: tracking started, and pgsize the smallest IOMMU page. */
  checkPgsize(given: Address, what: string): void {
    const pgsize = toU64(given, `${what} dirtyBitmap.pgsize`);
    const min = minPageSize(this.core);
    if (!this.core.dirtyTracking || pgsize !== min) fail("EINVAL", `${what}: dirty pages need tracking started and pgsize ${hex(min)}`);
  }

  /**
   * The dirty bits of [first, last], read and cleared, kept only where a
   * mapping is (vfio_iova_dirty_bitmap walks the vfio_dma entries): an
   * IOMMU entry no MAP_DMA made (the MSI doorbell) is never reported.
   */
  mappedDirty(domain: ContainerDomain, first: bigint, last: bigint): Uint8Array {
    const read = this.core.host.plane.readDirty(domain.id, first, last);
    const out = new Uint8Array(read.length);
    for (const m of this.core.maps.inside(first, last)) copyBits(out, read, Number((m.iova - first) / PAGE_SIZE), Number((m.last - first) / PAGE_SIZE));
    return out;
  }
}

function domainFlags(dirty: boolean): number {
  return abi.CTX_SRE | abi.CTX_WPE | abi.CTX_NX | (dirty ? abi.CTX_AD : 0);
}

/** Bits [from, to] (inclusive, bit i at byte i >> 3, bit i & 7) of src into dst: whole bytes in the middle, bit by bit at the ends. */
function copyBits(dst: Uint8Array, src: Uint8Array, from: number, to: number): void {
  let i = from;
  for (; i <= to && (i & 7) !== 0; i++) dst[i >> 3] |= src[i >> 3] & (1 << (i & 7));
  for (; i + 7 <= to; i += 8) dst[i >> 3] = src[i >> 3];
  for (; i <= to; i++) dst[i >> 3] |= src[i >> 3] & (1 << (i & 7));
}
