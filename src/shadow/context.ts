// A GPU translation context as the shadow drives it: one page at a time in
// the context's table, and its IOTLB, through the data plane (the operands
// are the shadow's own, so nothing is parsed on the way).
import * as abi from "../engine/abi.js";
import { fail } from "../errors.js";
import type { DataPlane } from "../vfio/plane.js";
import type { GpuDomain } from "./shadow.js";

const PAGE_LAST = 0xfffn;

export function gpuContext(plane: Pick<DataPlane, "mapRange" | "unmapRange" | "flushRange">, gpu: { id: number; dma: GpuDomain["dma"]; destroy(): void }): GpuDomain {
  const id = gpu.id;
  return {
    map: (gma, bus, write) => {
      const st = plane.mapRange(id, gma, gma + PAGE_LAST, bus, abi.PERM_R | (write ? abi.PERM_W : 0));
      if (st !== abi.ST_OK) fail("ENOMEM", `the GPU's table could not map ${gma} (status ${st})`);
    },
    unmap: (gma) => { plane.unmapRange(id, gma, gma + PAGE_LAST); },
    invalidate: (gma, pages) => plane.flushRange(id, gma, gma + pages * 0x1000n - 1n),
    dma: gpu.dma,
    destroy: () => gpu.destroy(),
  };
}
