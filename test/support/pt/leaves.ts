// Reading a page table back through the public API only: probe walks find
// every leaf (its input address, size and output address) and skip holes a
// whole missing entry at a time, as the kernel's count_valids walks the
// table. Plus the test's own notion of "the largest pages that fit".
import type { PageTable, PhysicalMemory } from "../../../src/index.js";
import type { Mapping } from "./oracle.js";
import type { Rng } from "./rng.js";

export interface Leaf { iova: bigint; size: bigint; hpa: bigint }

const U64_END = 1n << 64n;
const KiB = 1024n, MiB = KiB * KiB, GiB = MiB * KiB;

export function sizeName(size: bigint): string {
  if (size >= GiB && size % GiB === 0n) return `${size / GiB} GiB`;
  if (size >= MiB && size % MiB === 0n) return `${size / MiB} MiB`;
  if (size % KiB === 0n) return `${size / KiB} KiB`;
  return `${size} B`;
}

export const hex = (v: bigint): string => "0x" + v.toString(16);

/**
 * The input span of one entry at `level` (0 = the level whose entries are
 * the smallest pages). Every format the engine has today uses a 4 KiB
 * granule with 512-entry tables; a granule added later changes this line.
 */
export function levelSpan(level: number): bigint {
  return 1n << BigInt(12 + 9 * level);
}

export interface ScanOptions {
  /** The host's RAM: table pages are read from it to skip runs of empty entries. */
  ram?: PhysicalMemory;
  limit?: number;
}

/** What a walk of a mapped page needs to be allowed (write-only and exec-only leaves exist). */
const ACCESSES = ["read", "write", "exec"] as const;

/**
 * Every leaf that shares an address with [first, last], in address order.
 * A walk that finds no translation must say "not-present" (anything else is
 * thrown: the table is not in a state these tests make); the hole it found
 * is the whole span of the missing entry, and the entries after it in the
 * same table page that are zero (invalid in every format) are holes too:
 * the table page is read once, so an emptied table costs one read, not 512
 * walks (given the host's RAM to read it from). Stops after `limit` leaves.
 */
export function leavesIn(pt: PageTable, first: bigint, last: bigint, { ram, limit = Number.POSITIVE_INFINITY }: ScanOptions = {}): Leaf[] {
  const out: Leaf[] = [];
  const pages = new Map<bigint, BigUint64Array>();
  let a = first;
  while (a <= last && out.length < limit) {
    let w = pt.walk(a);
    for (let i = 1; i < ACCESSES.length && w.fault?.reason === "permission"; i++) w = pt.walk(a, ACCESSES[i]);
    let next: bigint;
    if (w.hpa !== undefined && w.pageSize !== undefined) {
      const start = a - (a % w.pageSize);
      out.push({ iova: start, size: w.pageSize, hpa: w.hpa - (a - start) });
      next = start + w.pageSize;
    } else {
      if (!w.fault || w.fault.reason !== "not-present") throw new Error(`walk(${hex(a)}) did not translate and did not say not-present: ${JSON.stringify(w.fault)}`);
      const span = levelSpan(w.fault.level);
      next = a - (a % span) + span;
      const entry = w.steps[w.steps.length - 1]?.entryAddress;
      if (entry !== undefined && ram) {
        const page = entry - (entry % 4096n);
        let table = pages.get(page);
        if (!table) {
          const bytes = ram.read(page, 4096);
          table = new BigUint64Array(bytes.buffer, bytes.byteOffset, 512);
          pages.set(page, table);
        }
        for (let i = Number((entry % 4096n) / 8n) + 1; i < 512 && table[i] === 0n && next <= last && next + span <= U64_END; i++) next += span;
      }
    }
    if (next >= U64_END) break;
    a = next;
  }
  return out;
}

/** Every leaf in the table: the walk over each of the format's input ranges. */
export function allLeaves(pt: PageTable, { ram, limit = Number.POSITIVE_INFINITY }: ScanOptions = {}): Leaf[] {
  const out: Leaf[] = [];
  for (const [lo, hi] of pt.format.inputRanges) if (out.length < limit) out.push(...leavesIn(pt, lo, hi, { ram, limit: limit - out.length }));
  return out;
}

/** Leaves counted by size, largest first: { "2 MiB": 3, "4 KiB": 12 }. */
export function bySize(leaves: readonly Leaf[]): Record<string, number> {
  const counts = new Map<bigint, number>();
  for (const l of leaves) counts.set(l.size, (counts.get(l.size) ?? 0) + 1);
  return Object.fromEntries([...counts].sort((x, y) => (x[0] < y[0] ? 1 : -1)).map(([s, n]) => [sizeName(s), n]));
}

/**
 * The leaves a map of [start, start + len) → hpa should make: at each
 * address the largest size that both addresses are aligned to and that
 * still fits (what io-pgtable's callers, iommu_pgsize and generic_pt's
 * best-page-size computation, choose).
 */
export function largestFit(start: bigint, hpa: bigint, len: bigint, sizes: readonly bigint[]): Leaf[] {
  const desc = [...sizes].sort((x, y) => (x < y ? 1 : -1));
  const out: Leaf[] = [];
  const end = start + len;
  let a = start;
  while (a < end) {
    const h = hpa + (a - start);
    const size = desc.find((s) => a % s === 0n && h % s === 0n && a + s <= end);
    if (size === undefined) throw new Error(`largestFit: no size fits at ${hex(a)} → ${hex(h)}`);
    out.push({ iova: a, size, hpa: h });
    a += size;
  }
  return out;
}

/**
 * The leaves of largestFit larger than the smallest size, found without
 * stepping through the runs of smallest pages between them: the ones a
 * fragmenting table would get wrong, cheap enough to check after every map.
 */
export function largeLeaves(start: bigint, hpa: bigint, len: bigint, sizes: readonly bigint[]): Leaf[] {
  const asc = [...sizes].sort((x, y) => (x < y ? -1 : 1));
  const smallest = asc[0];
  // Only sizes the input and output addresses can both be aligned to.
  const usable = asc.slice(1).filter((s) => (hpa - start) % s === 0n).reverse();
  const out: Leaf[] = [];
  const end = start + len;
  let a = start;
  while (a < end) {
    const size = usable.find((s) => a % s === 0n && a + s <= end);
    if (size !== undefined) {
      out.push({ iova: a, size, hpa: hpa + (a - start) });
      a += size;
      continue;
    }
    // Smallest pages up to the next boundary a larger size could start at.
    let next = end;
    for (const s of usable) {
      const b = a - (a % s) + s;
      if (b + s <= end && b < next) next = b;
    }
    a = next > a ? next : a + smallest;
  }
  return out;
}

/**
 * Whether `leaves` tile the mapping exactly: contiguous from its start to
 * its end, each with the output address the mapping gives its start.
 * Returns what is wrong, or undefined.
 */
export function tilingProblem(leaves: readonly Leaf[], m: Mapping): string | undefined {
  let a = m.start;
  for (const l of leaves) {
    if (l.iova !== a) return `expected a leaf at ${hex(a)}, found ${l.iova < a ? "one overlapping it" : "a hole"} (next leaf ${hex(l.iova)} +${sizeName(l.size)})`;
    if (l.iova + l.size > m.end) return `leaf ${hex(l.iova)} +${sizeName(l.size)} runs past the mapping's end ${hex(m.end)}`;
    const want = m.hpa + (l.iova - m.start);
    if (l.hpa !== want) return `leaf ${hex(l.iova)} +${sizeName(l.size)} translates to ${hex(l.hpa)}, expected ${hex(want)}`;
    a += l.size;
  }
  return a === m.end ? undefined : `no leaf from ${hex(a)} to the mapping's end ${hex(m.end)}`;
}

/** Whether the leaves are exactly `expected` (same addresses, sizes, outputs); what differs, or undefined. */
export function leavesProblem(actual: readonly Leaf[], expected: readonly Leaf[]): string | undefined {
  const n = Math.min(actual.length, expected.length);
  for (let i = 0; i < n; i++) {
    const a = actual[i], e = expected[i];
    if (a.iova !== e.iova || a.size !== e.size || a.hpa !== e.hpa) {
      return `${actual.length} leaves ${JSON.stringify(bySize(actual))}, expected ${expected.length} ${JSON.stringify(bySize(expected))}; ` +
        `first difference at leaf ${i}: ${hex(a.iova)} +${sizeName(a.size)} → ${hex(a.hpa)}, expected ${hex(e.iova)} +${sizeName(e.size)} → ${hex(e.hpa)}`;
    }
  }
  if (actual.length !== expected.length) return `${actual.length} leaves ${JSON.stringify(bySize(actual))}, expected ${expected.length} ${JSON.stringify(bySize(expected))}`;
  return undefined;
}

/**
 * The kernel's check_iova, by sample: iovaToPhys (a different engine path
 * from walk) at the first and last byte and at `count` random bytes of the
 * mapping. Returns what is wrong, or undefined.
 */
export function iovaProblem(pt: PageTable, m: Mapping, rng: Rng, count = 16): string | undefined {
  const len = m.end - m.start;
  const offsets = [0n, len - 1n];
  for (let i = 0; i < count; i++) offsets.push(rng.below(len));
  for (const off of offsets) {
    const got = pt.iovaToPhys(m.start + off);
    if (got !== m.hpa + off) return `iovaToPhys(${hex(m.start + off)}) = ${got === undefined ? "nothing" : hex(got)}, expected ${hex(m.hpa + off)}`;
  }
  return undefined;
}
