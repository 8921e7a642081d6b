// The vendor driver's side of a shadow GPU page table (kvmgt's
// gvt_dma_map_page / gvt_dma_unmap_page): a guest frame is pinned through the
// mdev (its GPA is the container's IOVA) and mapped for the parent GPU with
// the DMA API; it goes the same way back. A frame that cannot be pinned or
// mapped is left to the shadow's scratch page (no error reaches the guest).
// A 2 MiB run is gvt_pin_guest_page's: 512 pins whose HPAs follow each
// other, then one 2 MiB dma_map_page (its IOVA size-aligned, A9).
// The guest's own page tables are read and written with vfio_dma_rw and
// tracked with a pin per page, so the VMM's unmap of one is told.
import { IommuError } from "../errors.js";
import type { DmaApi } from "../dmaapi/dmaapi.js";
import type { GuestTables, ShadowMapper } from "../shadow/mapper.js";
import type { Mdev } from "./mdev.js";

const PAGE = 0x1000n;
const READ_WRITE = Object.freeze({ read: true, write: true });

export class MdevMapper implements ShadowMapper, GuestTables {
  constructor(private readonly mdev: Mdev, private readonly dma: DmaApi) {}

  map(gfn: bigint, pages: number): bigint | undefined {
    const size = BigInt(pages) * PAGE;
    let hpas: BigUint64Array;
    try {
      // gvt pins every guest page read-write. The HPAs come in the pins' own
      // array, read here before anything pins again.
      hpas = this.mdev.pin(gfn * PAGE, pages, READ_WRITE, false);
    } catch (e) {
      if (e instanceof IommuError) return undefined;
      throw e;
    }
    const first = hpas[0];
    let contiguous = true;
    for (let k = 1; k < pages && contiguous; k++) contiguous = hpas[k] === first + BigInt(k) * PAGE;
    let bus: bigint | undefined;
    if (contiguous) {
      try {
        bus = this.dma.mapPage(first, size, "bidirectional");
      } catch (e) {
        if (!(e instanceof IommuError)) throw e;
      }
      // dma-direct gives the HPA, which need not be aligned for a large leaf.
      if (bus !== undefined && bus % size !== 0n) {
        this.dma.unmapPage(bus, size, "bidirectional");
        bus = undefined;
      }
    }
    if (bus === undefined) this.unpin(gfn, pages);
    return bus;
  }

  unmap(gfn: bigint, bus: bigint, pages: number): void {
    this.dma.unmapPage(bus, BigInt(pages) * PAGE, "bidirectional");
    this.unpin(gfn, pages);
  }

  read(gpa: bigint, length: number): Uint8Array { return this.mdev.dmaRw(gpa, length, { write: false }); }

  write(gpa: bigint, bytes: Uint8Array): void { this.mdev.dmaRw(gpa, bytes, { write: true }); }

  protect(gfn: bigint): void { this.mdev.pinPages(gfn * PAGE, 1, { read: true }); }

  unprotect(gfn: bigint): void { this.unpin(gfn, 1); }

  private unpin(gfn: bigint, pages: number): void {
    try {
      this.mdev.unpinPages(gfn * PAGE, pages);
    } catch (e) {
      // The mdev left its container: the pin went with it (leaked there, and warned about).
      if (!(e instanceof IommuError)) throw e;
    }
  }
}
