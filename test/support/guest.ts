// A guest for nested-translation tests: a host, a stage-2 domain mapping
// 16 MiB of guest RAM at GPA 0, and the guest's way of writing its tables.
import { createHost, PAGE_2M, PAGE_4K, type Domain, type Host, type Translation } from "../../src/index.js";

const GUEST_RAM = 16n << 20n;

/** x86-64 entry bits. */
export const P = 1n, RW = 2n, US = 4n, A = 1n << 5n, D = 1n << 6n, PS = 1n << 7n, EA = 1n << 10n;
/** Arm descriptor bits. */
export const VALID = 1n, TABLE = 2n, AF = 1n << 10n, AP_EL0 = 1n << 6n, AP_RO = 1n << 7n, DBM = 1n << 51n;

export interface Guest {
  h: Host;
  s2: Domain;
  /** HPA of guest RAM's GPA 0 (guest RAM is contiguous in host memory). */
  base: bigint;
  /** Writes a 64-bit entry at a GPA, the way the guest would. */
  put(gpa: bigint, value: bigint): void;
  /** Reads a 64-bit entry at a GPA. */
  get(gpa: bigint): bigint;
}

/** The success branch of a translation (a fault fails the test). */
export function ok(t: Translation): Extract<Translation, { fault?: undefined }> {
  if (t.fault) throw new Error(`unexpected fault: ${JSON.stringify(t.fault, (_, v) => (typeof v === "bigint" ? v.toString(16) : v))}`);
  return t;
}

/** A host, a stage-2 domain (s2ad: with its own A/D, i.e. dirty tracking) mapping 16 MiB of guest RAM at GPA 0. */
export async function guest(s2format: "vtd-sl" | "arm64" = "vtd-sl", s2pages: bigint[] = [PAGE_4K, PAGE_2M], s2ad = false): Promise<Guest> {
  const h = await createHost({ ramSize: 64 * 1024 * 1024 });
  const s2 = h.createDomain(s2format === "vtd-sl"
    ? { format: "vtd-sl", inputBits: 48, pageSizes: s2pages, accessedDirty: s2ad }
    : { format: "arm64", stage: 2, inputBits: 40, physAddrWidth: 40, pageSizes: s2pages, accessedDirty: s2ad });
  // 2 MiB aligned so stage 2 can use 2 MiB leaves when it may.
  const run = h.ram.allocFrames(Number((GUEST_RAM + PAGE_2M) / PAGE_4K));
  const base = (run + PAGE_2M - 1n) & ~(PAGE_2M - 1n);
  s2.pageTable.map(0n, base, GUEST_RAM, { read: true, write: true });
  // Where stage 2 maps the GPA now (a test may move a guest page).
  const hpaOf = (gpa: bigint) => s2.pageTable.iovaToPhys(gpa)!;
  const put = (gpa: bigint, value: bigint) => h.ram.writeU64(hpaOf(gpa), value);
  const get = (gpa: bigint) => h.ram.readU64(hpaOf(gpa));
  return { h, s2, base, put, get };
}

/**
 * A 4-level x86-64 stage 1 in guest RAM: root at GPA 0x1000, PDPT 0x2000,
 * PD 0x3000, PT 0x4000. Maps GVA 0x40000000 → GPA 0x200000 (4 KiB, rw) and
 * GVA 0x40200000 → GPA 0x400000 (2 MiB, read-only).
 */
export function x86Stage1(g: Guest): bigint {
  g.put(0x1000n, 0x2000n | P | RW | US);
  g.put(0x2000n + 1n * 8n, 0x3000n | P | RW | US);
  g.put(0x3000n, 0x4000n | P | RW | US);
  g.put(0x4000n, 0x200000n | P | RW | US);
  g.put(0x3000n + 8n, 0x400000n | P | US | PS);
  return 0x1000n;
}

/**
 * A 48-bit Arm stage 1: L0 0x1000, L1 0x2000, L2 0x3000, L3 0x4000; VA
 * 0x40000000 → IPA 0x200000 with the given leaf attributes.
 */
export function armStage1(g: Guest, leafBits: bigint): bigint {
  g.put(0x1000n, 0x2000n | VALID | TABLE);
  g.put(0x2000n + 8n, 0x3000n | VALID | TABLE);
  g.put(0x3000n, 0x4000n | VALID | TABLE);
  g.put(0x4000n, 0x200000n | VALID | TABLE | leafBits);
  return 0x1000n;
}

/**
 * A valid stage 1 for random operations to perturb, written with put(gpa,
 * value): root 0x1000 → 0x3000 (x86: via a PDPT at 0x2000; Arm: a 39-bit
 * table starting at L1) → a last-level table at 0x4000 mapping GVA pages
 * 0..15 to GPA pages 16..31, and GVA 2 MiB to a 2 MiB leaf at GPA 2 MiB
 * (x86 read-only). Arm: every fourth page is writable-clean (DBM, AP[2]),
 * so writable only under TCR.HD.
 */
export function baseStage1(put: (gpa: bigint, value: bigint) => void, arm: boolean): void {
  if (arm) {
    put(0x1000n, 0x3000n | 0x3n);
    put(0x1008n, 0x3000n | 0x3n);
    put(0x3000n, 0x4000n | 0x3n);
    put(0x3008n, PAGE_2M | 0x441n);
    for (let i = 0n; i < 16n; i++) put(0x4000n + i * 8n, ((16n + i) * PAGE_4K) | (i % 4n === 3n ? 0x80000000004c3n : 0x443n));
  } else {
    put(0x1000n, 0x2000n | 0x7n);
    put(0x2000n, 0x3000n | 0x7n);
    put(0x2008n, 0x3000n | 0x7n);
    put(0x3000n, 0x4000n | 0x7n);
    put(0x3008n, PAGE_2M | 0x87n);
    for (let i = 0n; i < 16n; i++) put(0x4000n + i * 8n, ((16n + i) * PAGE_4K) | 0x7n);
  }
}
