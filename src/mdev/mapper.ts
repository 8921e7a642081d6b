// The vendor driver's side of a shadow GPU page table (kvmgt's
// gvt_dma_map_page / gvt_dma_unmap_page): a guest frame is pinned through the
// mdev (its GPA is the container's IOVA) and mapped for the parent GPU with
// the DMA API; it goes the same way back. A frame that cannot be pinned or
// mapped is left to the shadow's scratch page (no error reaches the guest).
import { IommuError } from "../errors.js";
import type { DmaApi } from "../dmaapi/dmaapi.js";
import type { ShadowMapper } from "../shadow/mapper.js";
import type { Mdev } from "./mdev.js";

const PAGE = 0x1000n;
const READ_WRITE = Object.freeze({ read: true, write: true });

export class MdevMapper implements ShadowMapper {
  constructor(private readonly mdev: Mdev, private readonly dma: DmaApi) {}

  map(gfn: bigint): bigint | undefined {
    let hpa: bigint;
    try {
      // gvt pins every guest page read-write.
      hpa = this.mdev.pin(gfn * PAGE, 1, READ_WRITE, false)[0];
    } catch (e) {
      if (e instanceof IommuError) return undefined;
      throw e;
    }
    try {
      return this.dma.mapPage(hpa, PAGE, "bidirectional");
    } catch (e) {
      this.mdev.unpinPages(gfn * PAGE, 1);
      if (e instanceof IommuError) return undefined;
      throw e;
    }
  }

  unmap(gfn: bigint, bus: bigint): void {
    this.dma.unmapPage(bus, PAGE, "bidirectional");
    try {
      this.mdev.unpinPages(gfn * PAGE, 1);
    } catch (e) {
      // The mdev left its container: the pin went with it (leaked there, and warned about).
      if (!(e instanceof IommuError)) throw e;
    }
  }
}
