// A shadow GTT's mapper over a Xen driver domain (XenGT without MFNs): a
// guest frame of the served VM becomes reachable by the backend's GPU at a
// bus frame this mapper allocates, mapped through a RestrictedMapper (the
// narrowed right the 2014 thread asked the mediator to hold). The shadow
// entry then holds the BFN, and the IOMMU turns it into the MFN; nothing
// here ever sees an MFN. A frame that cannot be mapped (no right any more,
// the budget spent, no BFN left, a BFN the backend took itself) is undefined:
// the shadow uses its scratch page.
import { IommuError } from "../errors.js";
import type { ShadowMapper } from "../shadow/mapper.js";
import type { RestrictedMapper } from "./backend.js";
import type { BfnAllocator } from "./bfns.js";
import type { Vm } from "./vm.js";

const PAGE = 0x1000n;

/** What an unmap means while the hypervisor's revocation is told to the shadow (the pages are already out of the table). */
export type Retire = "free" | "quarantine";

export class XenMapper implements ShadowMapper {
  private retiring: Retire | undefined;

  constructor(private readonly mapper: RestrictedMapper, private readonly vm: Vm, private readonly bfns: BfnAllocator) {}

  map(gfn: bigint, pages: number): bigint | undefined {
    const bfn = this.bfns.alloc(pages);
    if (bfn === undefined) return undefined;
    try {
      this.mapper.map({ bfn, vm: this.vm, gfn: Number(gfn), count: pages, write: true });
    } catch (e) {
      if (!(e instanceof IommuError)) throw e;
      // EEXIST: the backend mapped something there itself; that BFN is not ours to offer again (never freed).
      if (e.code !== "EEXIST") this.bfns.free(bfn, pages);
      return undefined;
    }
    return BigInt(bfn) * PAGE;
  }

  unmap(_gfn: bigint, bus: bigint, pages: number): void {
    const bfn = Number(bus / PAGE);
    if (this.retiring !== undefined) {
      // Quarantined BFNs are never freed: entries may still hold them.
      if (this.retiring === "free") this.bfns.free(bfn, pages);
      return;
    }
    try {
      // Pages revoked since (unserve, VM destroy) are holes here: 0 unmapped, no error.
      this.mapper.unmap({ bfn, count: pages });
    } catch (e) {
      // ENODEV: the backend's table is gone with everything in it.
      if (!(e instanceof IommuError)) throw e;
    }
    this.bfns.free(bfn, pages);
  }

  /**
   * Runs `release` (the shadow letting go of a revoked VM's frames) with
   * unmaps that make no call: the hypervisor already took the pages out.
   * 'free': no shadow entry holds their BFNs any more, so they are reused;
   * 'quarantine': entries still do (the GPU faults at the IOMMU there), so
   * the BFNs are never handed out again and cannot alias a later mapping.
   */
  retire(how: Retire, release: () => void): void {
    this.retiring = how;
    try {
      release();
    } finally {
      this.retiring = undefined;
    }
  }

}
