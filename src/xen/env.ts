// What the Xen model asks of its host: the data plane (the same calls the
// VFIO and DMA API code use), domains of the arch's stage-2 format (for p2ms
// and IOMMU tables), frames of RAM, the topology's devices, and DMA ports
// over a context id. VfioHost wires it once for the engine host and the twin.
import type { DataPlane } from "../vfio/plane.js";
import type { Topology } from "../vfio/topology.js";
import type { GpuDomain } from "../shadow/shadow.js";
import type { GpuTable } from "../shadow/context.js";

/** A stage-2 context the hypervisor owns (a p2m, or a driver domain's IOMMU table). */
export interface XenContext {
  readonly id: number;
  readonly pageTable: { iovaToPhys(iova: bigint): bigint | undefined };
  destroy(): void;
}

export interface XenEnv<Port> {
  plane: Pick<DataPlane, "mapRange" | "unmapRange" | "flushRange">;
  /** A new, empty context of the arch's stage-2 format (its tables take frames of RAM: ENOMEM with nothing made). */
  createContext(): XenContext;
  /** Input-address bits of that format: BFNs lie below 2^(bits - 12). */
  inputBits: number;
  ram: {
    readonly size: bigint;
    allocFrames(count?: number): bigint;
    freeFrames(hpa: bigint, count?: number): void;
    read(hpa: bigint, len: number): Uint8Array;
    write(hpa: bigint, bytes: Uint8Array): void;
  };
  topology: Topology;
  /** A GPU's translation context for a shadow GTT: `table` over stage2 (a context createContext made), walked as one. */
  gpuContext(stage2: XenContext, table: GpuTable): GpuDomain;
  /** A device's DMA port: its requests (tagged with its requester id) go through context domainId() (0: every access faults). */
  makePort(domainId: () => number, bdf: string): Port;
}
