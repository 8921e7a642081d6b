// type1's attach rules for a group joining a container's domain: reserved
// regions against existing mappings, the IOVA list, MSI isolation, allowed
// IOVAs; then the sw-msi doorbell (SMMUv3) and VT-d's interrupt window.
import { hex, PAGE_SIZE } from "../addr.js";
import { fail } from "../errors.js";
import { isRelaxable, overlaps, subtractRanges, type IovaRange, type ReservedRegion } from "./reserved.js";
import { placeDoorbell, DOORBELL_HPA } from "./msi.js";
import type { ContainerCore, ContainerDomain } from "./core.js";

/**
 * The checks for group g joining `others` (already attached). Returns the
 * IOVA list with g attached.
 */
export function attachChecks(core: ContainerCore, g: number, others: readonly number[]): IovaRange[] {
  const topo = core.host.topology;
  const regions = topo.reservedRegions(g).filter((r) => !isRelaxable(r.type));
  for (const r of regions) {
    if (core.maps.overlaps(r.start, r.end)) fail("EINVAL", `group ${g}: reserved region [${hex(r.start)}, ${hex(r.end)}] (${r.type}) overlaps an existing DMA mapping`);
  }
  const list = topo.iovaList([...others, g]);
  if (list.length === 0) fail("EINVAL", `group ${g}: no valid IOVA range would be left`);
  if (!core.host.allowUnsafeInterrupts && !topo.msiIsolated(g)) {
    fail("EPERM", `group ${g}: no MSI isolation (interrupt remapping); allowUnsafeInterrupts is off`);
  }
  if (core.allowed) {
    for (const r of regions) {
      if (core.allowed.some((a) => overlaps(a, r))) fail("EADDRINUSE", `group ${g}: reserved region [${hex(r.start)}, ${hex(r.end)}] lies in an allowed IOVA range`);
    }
  }
  return list;
}

/** After a group joined the domain: its sw-msi doorbell (SMMUv3), when it has sw-msi and no msi region. */
export function afterAttach(core: ContainerCore, g: number): void {
  const regions = core.host.topology.reservedRegions(g);
  const swMsi = regions.filter((r) => r.type === "sw-msi");
  if (swMsi.length === 0 || regions.some((r) => r.type === "msi") || core.doorbell !== undefined) return;
  const window = swMsi[swMsi.length - 1];
  const iova = placeDoorbell(window, allReserved(core), core.maps);
  // Write-only, like the kernel's doorbell mapping; it leads to the doorbell's HPA, outside RAM.
  core.domain!.pageTable.map(iova, DOORBELL_HPA, PAGE_SIZE, { read: false, write: true });
  core.doorbell = iova;
  core.iovas = withoutDoorbell(core, core.iovas);
}

/** A doorbell placed outside its sw-msi window is taken out of the valid IOVA list (no MAP may land on it). */
export function withoutDoorbell(core: ContainerCore, list: IovaRange[]): IovaRange[] {
  const bell = core.doorbell;
  return bell === undefined ? list : subtractRanges(list, [{ start: bell, end: bell + PAGE_SIZE - 1n }]);
}

export function configureDomain(core: ContainerCore, domain: ContainerDomain): void {
  // VT-d: the interrupt window is decoded before translation.
  const msi = core.host.topology.preset.hardwareReserved.find((r) => r.type === "msi");
  if (msi) core.host.plane.setMsiWindow(domain.id, msi.start, msi.end);
}

export function allReserved(core: ContainerCore): ReservedRegion[] {
  return core.groupIds.flatMap((g) => core.host.topology.reservedRegions(g));
}

/** The reserved regions no mapping may use (relaxable ones left out). */
export function allReservedHoles(core: ContainerCore): IovaRange[] {
  return allReserved(core).filter((r) => !isRelaxable(r.type)).map((r) => ({ start: r.start, end: r.end }));
}
