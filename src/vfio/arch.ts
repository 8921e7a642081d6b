// IOMMU architecture presets: what a group gets from its IOMMU driver before
// any firmware or device region — the DMA aperture, the page sizes and the
// MSI window. Variants are data, not code.
import { show } from "../args.js";
import { fail } from "../errors.js";
import { PAGE_1G, PAGE_2M, PAGE_4K, type PageTableOptions } from "../format.js";
import type { IovaRange, ReservedRegion } from "./reserved.js";

export type Arch = "vtd" | "smmuv3";

export interface ArchPreset {
  readonly arch: Arch;
  /** Input-address bits of the IOMMU page table; the aperture is [0, 2^addressWidth - 1]. */
  readonly addressWidth: number;
  readonly aperture: Readonly<IovaRange>;
  /** Bitmask of supported page sizes, as iova_pgsizes reports it. */
  readonly pgsizes: bigint;
  /** Regions the IOMMU driver adds to every device it manages. */
  readonly hardwareReserved: readonly Readonly<ReservedRegion>[];
  /** Interrupt remapping (VT-d) or an ITS with isolated MSIs (SMMUv3) is the common case. */
  readonly msiIsolatedDefault: boolean;
}

export const DEFAULT_ADDRESS_WIDTH = 48;

interface ArchData {
  /** Widths the hardware can be configured for. */
  validWidth(width: number): boolean;
  widths: string;
  hardwareReserved: ReservedRegion;
}

const ARCHES: Record<Arch, ArchData> = {
  // VT-d second-level tables walk 3, 4 or 5 levels (SAGAW): 39, 48 or 57 bits.
  // intel_iommu_get_resv_regions gives every device the interrupt window
  // (IOAPIC_RANGE_START..END): writes there are interrupt requests, never translated.
  vtd: {
    validWidth: (w) => w === 39 || w === 48 || w === 57,
    widths: "39, 48 or 57",
    hardwareReserved: { start: 0xfee00000n, end: 0xfeefffffn, type: "msi" },
  },
  // SMMUv3 input sizes run from 32 to 52 bits. arm_smmu_get_resv_regions
  // gives every device a software-managed window (MSI_IOVA_BASE, 1 MiB) in
  // which the host maps the ITS doorbell.
  smmuv3: {
    // The stage-2 format modelled is the 4 KiB granule, whose input is at most 48 bits.
    validWidth: (w) => w >= 32 && w <= 48,
    widths: "32..48",
    hardwareReserved: { start: 0x8000000n, end: 0x80fffffn, type: "sw-msi" },
  },
};

export function archPreset(arch: Arch, addressWidth: number = DEFAULT_ADDRESS_WIDTH): ArchPreset {
  if (typeof arch !== "string" || !Object.hasOwn(ARCHES, arch)) fail("EINVAL", `unknown IOMMU architecture ${show(arch)} (vtd or smmuv3)`);
  const data = ARCHES[arch];
  if (!Number.isInteger(addressWidth) || !data.validWidth(addressWidth)) {
    fail("EINVAL", `${arch} address width must be ${data.widths}, got ${show(addressWidth)}`);
  }
  return Object.freeze({
    arch,
    addressWidth,
    aperture: Object.freeze({ start: 0n, end: (1n << BigInt(addressWidth)) - 1n }),
    pgsizes: PAGE_4K | PAGE_2M | PAGE_1G,
    hardwareReserved: Object.freeze([Object.freeze({ ...data.hardwareReserved })]),
    msiIsolatedDefault: true,
  });
}

/** The stage-2 page-table format of an arch's containers: VT-d second level, or Arm stage 2 (at most 48 bits). */
export function stage2Options(p: ArchPreset): PageTableOptions {
  if (p.arch === "vtd") return { format: "vtd-sl", inputBits: p.addressWidth, physAddrWidth: 52 };
  return { format: "arm64", stage: 2, inputBits: Math.min(p.addressWidth, 48), physAddrWidth: 48 };
}
