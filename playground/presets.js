// The playground's choices as plain data: page-table formats, IOTLB sizes and
// mapping presets. No DOM here, so the test can import the same presets and
// replay them against the library in Node.

/** RAM of every playground host. Small, so HPAs stay readable; mappings may point beyond it (DMA there faults). */
export const RAM_SIZE = 64 * 1024 * 1024;

const X86_LEVELS = ["PTE", "PDE", "PDPTE", "PML4E", "PML5E"];
const VTD_SL_LEVELS = ["SL-PTE", "SL-PDE", "SL-PDPE", "SL-PML4E", "SL-PML5E"];
// Arm numbers its levels from the top (L0) down to the page (L3); ours count up from the leaf.
const ARM_LEVELS = ["L3", "L2", "L1", "L0"];

/**
 * Formats the page offers: the options for createDomain, and what each
 * level's entry is called (index = our level number, leaf = 0).
 */
export const FORMATS = {
  "x86-64-4": { label: "x86-64, 4-level (VT-d first level)", options: { format: "x86-64", levels: 4 }, family: "x86-64", levelNames: X86_LEVELS },
  "x86-64-5": { label: "x86-64, 5-level", options: { format: "x86-64", levels: 5 }, family: "x86-64", levelNames: X86_LEVELS },
  "vtd-sl-4": { label: "VT-d second level, 4-level", options: { format: "vtd-sl", levels: 4 }, family: "vtd-sl", levelNames: VTD_SL_LEVELS },
  "arm64-s1": { label: "Arm64 stage 1, 4K granule, 48-bit", options: { format: "arm64", inputBits: 48 }, family: "arm64", levelNames: ARM_LEVELS },
};

/** IOTLB geometries: small ones make evictions visible with a few hundred pages. */
export const IOTLB_SIZES = {
  "16x4": { sets: 16, ways: 4 },
  "64x4": { sets: 64, ways: 4 },
  "512x4": { sets: 512, ways: 4 },
};

const KiB = 0x400n;
const MiB = 0x100000n;
const GiB = 0x40000000n;
const RW = { read: true, write: true, exec: false, user: true };
const RO = { read: true, write: false, exec: false, user: true };

/**
 * Mapping presets: each mapping is { iova, hpa, size, perms } (bigints); the
 * builder picks the largest pages that fit. HPAs sit at 32 MiB and up, clear
 * of the page-table frames, which the allocator hands out from HPA 0.
 */
export const PRESETS = {
  mixed: {
    label: "mixed page sizes (as in the demo)",
    walkAt: 0x40312345n,
    mappings: [
      { iova: 0x1000n, hpa: 0x2000000n, size: 12n * KiB, perms: RW },             // three 4 KiB pages
      { iova: 0x40200000n, hpa: 0x2200000n, size: 2n * MiB, perms: RW },          // one 2 MiB page
      { iova: 0x80000000n, hpa: 0x100000000n, size: GiB, perms: RO },             // one 1 GiB page, beyond RAM
      { iova: 0x3ffff000n, hpa: 0x2003000n, size: 4n * KiB, perms: { ...RW, user: false } }, // supervisor only
    ],
  },
  small: {
    label: "4 MiB of 4 KiB pages (IOTLB pressure)",
    walkAt: 0x10123a80n,
    // IOVA and HPA disagree modulo 2 MiB, so no 2 MiB page fits: 1024 leaves of 4 KiB.
    mappings: [{ iova: 0x10001000n, hpa: 0x2000000n, size: 4n * MiB, perms: RW }],
  },
  huge: {
    label: "2 MiB and 1 GiB pages",
    walkAt: 0x40a00040n,
    mappings: [
      { iova: 0x40000000n, hpa: 0x2000000n, size: 16n * MiB, perms: RW },         // eight 2 MiB pages
      { iova: 0x1_0000_0000n, hpa: 0x1_0000_0000n, size: GiB, perms: RO },        // identity 1 GiB, beyond RAM
    ],
  },
  empty: {
    label: "empty (add your own)",
    walkAt: 0x1000n,
    mappings: [],
  },
};

export const DEFAULTS = { format: "x86-64-4", iotlb: "16x4", preset: "mixed" };
