// createHost()'s options, checked once for the engine host and the naive
// twin: sizes and geometry, and the VFIO settings (arch, widths, limits).
import { toU64, hex, type Address } from "./addr.js";
import { fail } from "./errors.js";
import { bool, integer, list, options, show } from "./args.js";
import { PASID_NODES_DEFAULT, PASID_NODES_MAX } from "./engine/abi.js";
import { archPreset, type Arch } from "./vfio/arch.js";
import type { ReservedRegionSpec } from "./vfio/reserved.js";
import { Topology } from "./vfio/topology.js";
import type { VfioSettings } from "./vfio/vfiohost.js";

export interface HostOptions {
  /** Bytes of physical RAM at HPA 0 (4 KiB multiple). Default 256 MiB. */
  ramSize?: Address;
  /** IOTLB geometry: sets (power of two, 16..65536) × ways (1..16). Default 512 × 4. */
  iotlb?: { sets?: number; ways?: number };
  /** Fault ring capacity (power of two, 16..65536). Default 1024. */
  faultRingSize?: number;
  /** Bytes of engine memory for allocBuffer() / createTranslationBatch(). Default 4 MiB. */
  bufferArenaSize?: number;
  /** The IOMMU: Intel VT-d (default) or Arm SMMUv3. Decides the stage-2 format, reserved regions and MSI handling. */
  arch?: Arch;
  /** IOMMU input address width (the aperture is 0 .. 2^width - 1). Default 48. */
  addressWidth?: number;
  /** MAP_DMA entries per container (type1's dma_entry_limit). Default 65535. */
  dmaEntryLimit?: number;
  /** Accept groups without MSI isolation (type1's allow_unsafe_interrupts). Default false. */
  allowUnsafeInterrupts?: boolean;
  /** Reserved regions every group has (e.g. RMRRs, bridge windows). */
  platformReserved?: ReservedRegionSpec[];
  /** Nodes in the pool every PASID tree (allocator, device PASID tables) takes from: 272 bytes each, 1..2^20. Default 16384. */
  pasidNodes?: number;
}

export interface HostConfig {
  ramSize: bigint;
  iotlbSets: number;
  iotlbWays: number;
  faultRingSize: number;
  arenaSize: number;
  pasidNodes: number;
  vfio: VfioSettings;
}

const isPow2 = (n: number, lo: number, hi: number): boolean => Number.isInteger(n) && n >= lo && n <= hi && (n & (n - 1)) === 0;

const HOST_KEYS = ["ramSize", "iotlb", "faultRingSize", "bufferArenaSize", "arch", "addressWidth", "dmaEntryLimit", "allowUnsafeInterrupts", "platformReserved", "pasidNodes"] as const;

/** The options with their defaults, each checked (EINVAL naming the option). */
export function hostConfig(given: HostOptions): HostConfig {
  const o = options(given, "createHost options", HOST_KEYS);
  const ramSize = toU64((o.ramSize ?? 256 * 1024 * 1024) as Address, "ramSize");
  if (ramSize === 0n || ramSize % 4096n !== 0n) fail("EINVAL", `ramSize ${hex(ramSize)} must be a non-zero multiple of 4 KiB`);
  if (ramSize > 0xC0000000n) fail("EINVAL", `ramSize ${hex(ramSize)} is above the 3 GiB a 32-bit WebAssembly.Memory can hold with engine state`);
  const iotlb = options(o.iotlb, "iotlb", ["sets", "ways"] as const);
  const iotlbSets = iotlb.sets ?? 512;
  const iotlbWays = integer(iotlb.ways ?? 4, "iotlb.ways", 1, 16);
  if (!isPow2(iotlbSets as number, 16, 65536)) fail("EINVAL", `iotlb.sets must be a power of two in 16..65536, got ${show(iotlbSets)}`);
  const faultRingSize = o.faultRingSize ?? 1024;
  if (!isPow2(faultRingSize as number, 16, 65536)) fail("EINVAL", `faultRingSize must be a power of two in 16..65536, got ${show(faultRingSize)}`);
  const arenaSize = integer(o.bufferArenaSize ?? 4 * 1024 * 1024, "bufferArenaSize", 0, 0x10000000);
  const dmaEntryLimit = integer(o.dmaEntryLimit ?? 65535, "dmaEntryLimit", 0, Number.MAX_SAFE_INTEGER);
  const pasidNodes = integer(o.pasidNodes ?? PASID_NODES_DEFAULT, "pasidNodes", 1, PASID_NODES_MAX);
  const allowUnsafeInterrupts = bool(o.allowUnsafeInterrupts, "allowUnsafeInterrupts", false);
  const platformReserved = o.platformReserved === undefined ? [] : list(o.platformReserved, "platformReserved") as ReservedRegionSpec[];
  const topology = new Topology(archPreset((o.arch ?? "vtd") as Arch, o.addressWidth as number | undefined), platformReserved);
  return {
    ramSize, iotlbSets: iotlbSets as number, iotlbWays, faultRingSize: faultRingSize as number, arenaSize, pasidNodes,
    vfio: { topology, dmaEntryLimit, allowUnsafeInterrupts },
  };
}
