// MSI doorbells under a sw-msi window (Arm SMMU): the host maps the
// interrupt controller's doorbell page at an IOVA in the window, so a device
// write there is an interrupt request. Placement is deterministic: the
// window's base when it is free, else the lowest 4 KiB-aligned slot below
// 4 GiB that no reserved region (other than the window) or mapping uses.
import { fail } from "../errors.js";
import { PAGE_SIZE } from "../addr.js";
import type { MappingList } from "./mappings.js";
import type { ReservedRegion } from "./reserved.js";

/**
 * The doorbell's host physical page (an ITS GITS_TRANSLATER in a real
 * system). It lies above every RAM size a host can have (3 GiB), so it never
 * aliases memory; the engine turns device writes that reach it into interrupts.
 */
export const DOORBELL_HPA = 0xffff0000n;
const BELOW_4G = 1n << 32n;

export function placeDoorbell(window: ReservedRegion, reserved: readonly ReservedRegion[], maps: MappingList): bigint {
  const blocked = (iova: bigint): boolean => {
    const last = iova + PAGE_SIZE - 1n;
    if (maps.overlaps(iova, last)) return true;
    return reserved.some((r) => r !== window && r.type !== "sw-msi" && r.type !== "direct-relaxable" && iova <= r.end && last >= r.start);
  };
  if (!blocked(window.start)) return window.start;
  for (let iova = PAGE_SIZE; iova + PAGE_SIZE <= BELOW_4G; iova += PAGE_SIZE) {
    if (!blocked(iova)) return iova;
  }
  fail("ENOSPC", "no free IOVA page below 4 GiB for the MSI doorbell");
}
