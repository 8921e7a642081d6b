// The GPU's own DMA, by graphics memory address: the port of the GPU's
// translation context (its shadow table over the parent's IOMMU domain), with
// each fault's stage named for the GPU: stage 1 is the device's own MMU (the
// shadow GTT), stage 2 the system IOMMU. A PPGTT's requests are privileged
// (the GPU's own, with write protect on): its entries' R/W bit governs writes
// and U/S means nothing.
import type { Address } from "../addr.js";
import { options } from "../args.js";
import type { DmaFault, DmaOptions, DmaReadResult, DmaResult, SgOptions, SgResult, SgSegments } from "../dma.js";

export type GpuFaultStage = "device-mmu" | "iommu";
export interface GpuDmaFault extends Omit<DmaFault, "stage"> { stage: GpuFaultStage }
export interface GpuDmaResult extends Omit<DmaResult, "fault"> { fault?: GpuDmaFault }
export interface GpuDmaReadResult extends GpuDmaResult { data: Uint8Array }
export interface GpuSgResult extends GpuDmaResult { segment: number }

/** The DMA calls of a port (the engine's DmaPort, or the twin's). */
export interface PortCalls {
  read(iova: Address, len: number, opts?: DmaOptions): DmaReadResult;
  readInto(iova: Address, target: Uint8Array, opts?: DmaOptions): DmaResult;
  write(iova: Address, bytes: Uint8Array, opts?: DmaOptions): DmaResult;
  sg(segments: SgSegments, buffer: Uint8Array, opts: SgOptions): SgResult;
}

function named<R extends DmaResult>(r: R): Omit<R, "fault"> & { fault?: GpuDmaFault } {
  if (!r.fault) return r as Omit<R, "fault">;
  return { ...r, fault: { ...r.fault, stage: r.fault.stage === 1 ? "device-mmu" : "iommu" } };
}

const PRIVILEGED: DmaOptions = Object.freeze({ privileged: true });

export class GpuDmaPort {
  private readonly opts: DmaOptions | undefined;

  /** @internal */
  constructor(private readonly port: PortCalls, privileged = false) {
    this.opts = privileged ? PRIVILEGED : undefined;
  }

  /** The GPU reads len bytes at gma. */
  read(gma: Address, len: number): GpuDmaReadResult { return named(this.port.read(gma, len, this.opts)); }
  /** The GPU reads target.length bytes at gma into target. */
  readInto(gma: Address, target: Uint8Array): GpuDmaResult { return named(this.port.readInto(gma, target, this.opts)); }
  /** The GPU writes bytes at gma. */
  write(gma: Address, bytes: Uint8Array): GpuDmaResult { return named(this.port.write(gma, bytes, this.opts)); }
  /** The GPU moves every segment, in order, to or from one packed buffer. */
  sg(segments: SgSegments, buffer: Uint8Array, opts: SgOptions): GpuSgResult {
    // The caller's options are read once, safely, before the privilege is added.
    const given = this.opts ? { ...options(opts, "sg options", ["pasid", "privileged", "direction"] as const), ...this.opts } as SgOptions : opts;
    return named(this.port.sg(segments, buffer, given));
  }
}
