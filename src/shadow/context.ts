// A GPU translation context as the shadow drives it: one page at a time in
// the GGTT's table, and the context's IOTLB, through the data plane (the
// operands are the shadow's own, so nothing is parsed on the way). A PPGTT's
// tables are the shadow's own frames: only its invalidations come here.
import * as abi from "../engine/abi.js";
import { fail } from "../errors.js";
import { hex } from "../addr.js";
import type { DataPlane } from "../vfio/plane.js";
import type { GpuDomain } from "./shadow.js";

const PAGE_LAST = 0xfffn;

/** The GPU table a shadow's context walks: a GGTT (host-physical), or a 4-level x86-64 table whose root is a bus address. */
export type GpuTable = { format: "ggtt"; entries: number } | { format: "x86-64"; root: bigint };

/** The domain options of a GPU context of `table` over stage2 (an mdev's parent domain, a Xen backend's IOMMU context). */
export function gpuTableOptions(table: GpuTable, stage2: unknown): Record<string, unknown> {
  // A PPGTT's entries carry no A/D bits for the GPU to set (gen8 PTEs have none).
  return table.format === "ggtt" ? { format: "ggtt", entries: table.entries, stage2 }
    : { format: "x86-64", levels: 4, root: table.root, stage2, accessedDirty: false };
}

/** The domain the context is (the engine's Domain, or the twin's). */
export interface GpuDomainObject {
  readonly id: number;
  readonly dma: GpuDomain["dma"];
  readonly pageTable: { walk(iova: bigint): { steps: readonly { entry: bigint }[] } };
  translate(iova: bigint): { hpa?: bigint; fault?: { reason: string; stage: 1 | 2 } };
  destroy(): void;
}

export function gpuContext(plane: Pick<DataPlane, "mapRange" | "unmapRange" | "flushRange" | "flushDomain">, gpu: GpuDomainObject): GpuDomain {
  const id = gpu.id;
  return {
    map: (gma, bus, write) => {
      const st = plane.mapRange(id, gma, gma + PAGE_LAST, bus, abi.PERM_R | (write ? abi.PERM_W : 0));
      if (st !== abi.ST_OK) fail("ENOMEM", `the GPU's table could not map ${hex(gma)} (status ${st})`);
    },
    unmap: (gma) => { plane.unmapRange(id, gma, gma + PAGE_LAST); },
    invalidate: (gma, pages) => plane.flushRange(id, gma, gma + pages * 0x1000n - 1n),
    invalidateAll: () => plane.flushDomain(id),
    dma: gpu.dma,
    entry: (gma) => gpu.pageTable.walk(gma).steps[0]?.entry ?? 0n,
    translate: (gma) => gpu.translate(gma),
    destroy: () => gpu.destroy(),
  };
}
