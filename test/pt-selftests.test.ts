// The kernel's own page-table self-tests, restated against this package's
// public API (facts from the kernel, not its code; docs/page-tables.md says
// what was read and how each test maps here):
//
// - drivers/iommu/io-pgtable-arm-selftests.c, arm_lpae_run_tests: stage 1 and
//   stage 2 over every IAS ≤ OAS pair of {32, 36, 40, 42, 44, 48};
// - drivers/iommu/generic_pt/kunit_iommu_pt.h: test_map_simple,
//   test_map_table_to_oa, test_unmap_split, test_random_map,
//   test_pgsize_boundary, test_mixed, and the exit-time leak check
//   (kunit_generic_pt.h / kunit_iommu.h for the fixture's constants);
//
// plus two of this package's own: emptied tables give way to large leaves
// (however the range was unmapped), and 10^4 rounds of random map/unmap
// churn leave no fragmentation and no lost table pages.
//
// Every configuration is found by asking the engine (test/support/pt/
// configs.ts): each format named in src/format.ts, each level count and
// input size it accepts, each page-size set. The page-table state is read
// back with probe walks only (test/support/pt/leaves.ts).
//
// Where the package deliberately differs from the kernel (Linux 7.0/7.1-mw):
// a partial unmap never splits or removes a leaf (0 bytes; io-pgtable-arm
// since 6.13 also refuses), an overlapping map is EEXIST (generic_pt:
// EADDRINUSE), an address beyond the input or output size is EINVAL (both
// kernel libraries: ERANGE).
//
// FC_SEED=<n> replays the random tests with seed n; IOMMU_TEST_QUICK=1
// (npm run test:quick) runs a tenth of their rounds.
import { describe, expect, it } from "vitest";
import { createHost, type PageTable, type PageTableOptions } from "../src/index.js";
import { errno } from "./support/outcome.js";
import { runs } from "./support/runs.js";
import { discoverConfigs, formatNames, leafSizes, setName, widestPerLevels, type TableConfig } from "./support/pt/configs.js";
import { allLeaves, bySize, hex, iovaProblem, largeLeaves, largestFit, leavesIn, leavesProblem, sizeName, tilingProblem, type Leaf } from "./support/pt/leaves.js";
import { MappedRanges, type Mapping } from "./support/pt/oracle.js";
import { Rng } from "./support/pt/rng.js";
import { alignDown, alignUp, freshFrames, withTable } from "./support/pt/table.js";

const MiB = 1n << 20n;
/**
 * A kernel test that does not apply to a configuration (the kernel skips it:
 * too few page sizes, no room for its addresses) is not registered for it,
 * rather than registered and skipped.
 */
const onlyIf = (applies: boolean): typeof it => (applies ? it : ((() => undefined) as unknown as typeof it));
const GiB = 1n << 30n;
const U32_MAX = 0xffffffffn;
const RW = { read: true, write: true } as const;

/** kunit_iommu.h: the fixture's output address, reduced to the output width. */
const KERNEL_TEST_OA = 0x74a71445deadbeefn;
/** io-pgtable-arm-selftests.c: the IAS and OAS values it pairs. */
const KERNEL_ADDRESS_SIZES = [32, 36, 40, 42, 44, 48];
/** The maple tree reserves its first 4 KiB; test_random_map starts above it. */
const MAPLE_RESERVED_RANGE = 4096n;

const host = await createHost({ ramSize: 64 * 1024 * 1024 });
const CONFIGS = discoverConfigs(host);
/** One configuration per format and level count, at its widest input size (the kernel's kunit_fmt_cfgs). */
const MAIN = widestPerLevels(CONFIGS);

interface Case { config: TableConfig; set: bigint[]; label: string }
const CASES: Case[] = MAIN.flatMap((config) => config.pageSizeSets.map((set) => ({ config, set, label: `${config.label}; ${setName(set)}` })));

/**
 * expect(got).toBe(want) for hot loops: vitest's expect costs microseconds a
 * call, so it is only reached (with its message built) when they differ.
 */
function same<T>(got: T, want: T, message: () => string): void {
  if (got !== want) expect(got, message()).toBe(want);
}

/** Expects no problem; a problem (a sentence from the helpers) is shown in full, not cut short as a value would be. */
function noProblem(problem: string | undefined, what = "", soft = false): void {
  if (problem !== undefined) (soft ? expect.soft : expect)(problem, `${what ? what + ": " : ""}${problem}`).toBeUndefined();
}

/** The leaves in [first, last] (probe walks; table pages read from the host's RAM to skip empty entries). */
const scan = (pt: PageTable, first: bigint, last: bigint): Leaf[] => leavesIn(pt, first, last, { ram: host.ram });
/** Every leaf in the table. */
const everything = (pt: PageTable, limit?: number): Leaf[] => allLeaves(pt, { ram: host.ram, limit });

const optionsOf = (c: TableConfig, set: readonly bigint[], physAddrWidth?: number): PageTableOptions =>
  ({ ...c.options, pageSizes: [...set], ...(physAddrWidth !== undefined && { physAddrWidth }) });
const mask = (bits: number): bigint => (1n << BigInt(bits)) - 1n;
const min = (a: bigint, b: bigint): bigint => (a < b ? a : b);
const testOa = (pt: PageTable): bigint => KERNEL_TEST_OA & mask(pt.format.physAddrWidth);
/** The full set: every size the configuration accepts. */
const fullSet = (c: TableConfig): bigint[] => c.pageSizeSets[c.pageSizeSets.length - 1];

/**
 * A window of the first input range for the tests that churn one region: 1 GiB
 * at 1 GiB where the range has room, else the upper half of a smaller range.
 */
function churnWindow(c: TableConfig): Mapping {
  const [lo, hi] = c.inputRanges[0];
  const span = hi - lo + 1n;
  const size = span >= 2n * GiB ? GiB : span / 2n;
  return { start: alignUp(lo + 1n, size), end: alignUp(lo + 1n, size) + size, hpa: 0n };
}

/**
 * The leaves of a mapping made of `len` pieces, to check against it: the
 * whole table when it has at most 4096 (so a leaf anywhere else shows too),
 * else 64 pieces' worth at its start, middle and end.
 */
function sample(pt: PageTable, m: Mapping, len: bigint): { sub: Mapping; leaves: Leaf[]; note: string }[] {
  const count = (m.end - m.start) / len;
  // A scan stops one leaf past what is expected: a fragmented table shows without walking all of it.
  const look = (sub: Mapping, leaves: Leaf[], expected: bigint) =>
    ({ sub, leaves, note: BigInt(leaves.length) > expected ? ` (the scan stopped at ${leaves.length} leaves)` : "" });
  if (count <= 4096n) return [look(m, everything(pt, Number(count) + 1), count)];
  return [0n, count / 2n, count - 64n].map((i) => {
    const sub = { start: m.start + i * len, end: m.start + (i + 64n) * len, hpa: m.hpa + i * len };
    return look(sub, leavesIn(pt, sub.start, sub.end - 1n, { ram: host.ram, limit: 65 }), 64n);
  });
}

// ---------------------------------------------------------------------------
describe("configurations the self-tests run on", () => {
  it("every format in src/format.ts is found, with its page-size sets and output widths", () => {
    const names = formatNames();
    for (const name of names) expect(CONFIGS.some((c) => c.name === name), `no configuration of ${name} was accepted`).toBe(true);
    // A floor, so a discovery that silently finds less fails: what the README says the engine has.
    const has = (name: string, levels: number, inputBits?: number, stage?: number) =>
      CONFIGS.some((c) => c.name === name && c.levels === levels && (inputBits === undefined || c.inputBits === inputBits) && (stage === undefined || (c.options.stage ?? 1) === stage));
    for (const [name, levels, bits, stage] of [["x86-64", 4], ["x86-64", 5], ["vtd-sl", 3], ["vtd-sl", 4], ["vtd-sl", 5], ["arm64", 4, 48, 1], ["arm64", 4, 48, 2], ["arm64", 3, 39, 1], ["ggtt", 1, 21], ["ggtt", 1, 32]] as const) {
      expect(has(name, levels, bits, stage), `${name} ${levels} levels ${bits ?? ""} stage ${stage ?? ""}`).toBe(true);
    }
    for (const c of CONFIGS) {
      expect(c.pageSizeSets.length, c.label).toBeGreaterThan(0);
      expect(fullSet(c), c.label).toEqual(c.pageSizes);
      expect(c.physAddrWidths, c.label).toContain(c.defaultPhysAddrWidth);
      expect(leafSizes(c, fullSet(c)).length, `${c.label}: some page size can be a leaf`).toBeGreaterThan(0);
    }
    console.log(`page-table self-tests: ${CONFIGS.length} configurations, ${MAIN.length} at their widest input size, ${CASES.length} with each page-size set:\n  ` +
      MAIN.map((c) => `${c.label}: ${c.pageSizeSets.map(setName).join(" | ")}`).join("\n  "));
  });
});

// ---------------------------------------------------------------------------
// io-pgtable-arm-selftests.c, arm_lpae_run_tests, per page-size set and
// IAS ≤ OAS pair. Run on each format whose input and output sizes take the
// kernel's values (Arm stage 1 and 2 at all six; the others where they match).
interface SweepCase { config: TableConfig; set: bigint[]; ias: number; oas: number; label: string }
const SWEEP: SweepCase[] = [];
for (const config of CONFIGS) {
  if (!KERNEL_ADDRESS_SIZES.includes(config.inputBits)) continue;
  for (const oas of KERNEL_ADDRESS_SIZES) {
    if (oas < config.inputBits || !config.physAddrWidths.includes(oas)) continue;
    for (const set of config.pageSizeSets) {
      SWEEP.push({ config, set, ias: config.inputBits, oas, label: `${config.label}, OAS ${oas}; ${setName(set)}` });
    }
  }
}

describe("io-pgtable-arm selftest (arm_lpae_run_tests)", () => {
  it("covers Arm stage 1 and stage 2 at every IAS ≤ OAS pair the engine accepts", () => {
    for (const id of new Set(CONFIGS.filter((c) => c.name === "arm64").map((c) => c.formatId))) {
      const pairs = SWEEP.filter((s) => s.config.formatId === id && s.set === fullSet(s.config)).map((s) => `${s.ias}/${s.oas}`);
      const expected = KERNEL_ADDRESS_SIZES.flatMap((ias, i) => KERNEL_ADDRESS_SIZES.slice(i).map((oas) => `${ias}/${oas}`));
      expect(pairs.sort()).toEqual(expected.sort());
    }
  });

  it.each(SWEEP)("$label", ({ config, set, ias, oas }) => {
    withTable(host, optionsOf(config, set, oas), (pt) => {
      const sizes = leafSizes(config, set);
      // An empty table translates nothing.
      for (const a of [42n, GiB + 42n, 2n * GiB + 42n]) expect(pt.iovaToPhys(a), `empty table at ${hex(a)}`).toBeUndefined();

      // Distinct mappings of each size, 1 GiB apart, identity; an overlapping map is refused.
      let iova = 0n;
      for (const size of sizes) {
        pt.map(iova, iova, size, RW);
        expect(errno(() => pt.map(iova, iova + size, size, { read: true })), `overlapping map of ${sizeName(size)} at ${hex(iova)}`).toBe("EEXIST");
        expect(pt.iovaToPhys(iova + 42n)).toBe(iova + 42n);
        expect(pt.walk(iova + 42n).pageSize, "one leaf of the mapped size").toBe(size);
        iova += GiB;
      }

      // Full unmap, then remap of the full block (write-only, as the kernel does).
      iova = 0n;
      for (const size of sizes) {
        expect(pt.unmap(iova, size), `unmap ${sizeName(size)} at ${hex(iova)}`).toBe(size);
        expect(pt.iovaToPhys(iova + 42n)).toBeUndefined();
        pt.map(iova, iova, size, { read: false, write: true });
        expect(pt.iovaToPhys(iova + 42n)).toBe(iova + 42n);
        iova += GiB;
      }

      // The last largest page of the input range maps as one leaf and unmaps whole.
      const largest = sizes[sizes.length - 1];
      const last = config.inputRanges[0][1] + 1n - largest;
      pt.map(last, last, largest, RW);
      const w = pt.walk(last);
      expect([w.hpa, w.pageSize], `last ${sizeName(largest)} of the ${ias}-bit input`).toEqual([last, largest]);
      expect(pt.unmap(last, largest)).toBe(largest);

      // Beyond the input or output size: EINVAL here (io-pgtable-arm: ERANGE).
      const beyond = config.inputRanges[0][1] + 1n;
      expect(errno(() => pt.map(beyond, 0n, set[0], RW)), "map past the input size").toBe("EINVAL");
      expect(errno(() => pt.map(0x10000n, 1n << BigInt(oas), set[0], RW)), "map past the output size").toBe("EINVAL");
      expect(everything(pt).map((l) => l.size), "what is left: the remapped blocks").toEqual(sizes);
    });
  });
});

// ---------------------------------------------------------------------------
// generic_pt's kunit_iommu_pt.h, per format (widest input size per level
// count) and page-size set.
describe.each(CASES)("generic_pt iommu tests: $label", ({ config, set }) => {
  const sizes = leafSizes(config, set);
  const smallest = set[0];
  const va0 = config.inputRanges[0][0];
  /** kunit_iommu.h: safe_pgsize_bitmap, the sizes below half the input space. */
  const safe = sizes.filter((s) => s < 1n << BigInt(config.inputBits - 1));

  it("test_map_simple: one leaf of each size, translated, then unmapped", () => {
    withTable(host, optionsOf(config, set), (pt) => {
      const rng = new Rng(1);
      const made: Mapping[] = [];
      let cur = va0 + smallest * 256n;
      for (const size of safe) {
        cur = alignUp(cur, size);
        const m = { start: cur, end: cur + size, hpa: alignDown(testOa(pt), size) };
        pt.map(m.start, m.hpa, size, RW);
        noProblem(tilingProblem(scan(pt, m.start, m.end - 1n), m), `${sizeName(size)} at ${hex(m.start)}`);
        noProblem(iovaProblem(pt, m, rng));
        made.push(m);
        cur += size;
      }
      expect(bySize(everything(pt)), "every size exactly once").toEqual(bySize(made.map((m) => ({ iova: m.start, size: m.end - m.start, hpa: m.hpa }))));
      for (const m of made) expect(pt.unmap(m.start, m.end - m.start)).toBe(m.end - m.start);
      expect(everything(pt)).toEqual([]);
    });
  });

  // Map the largest size's range with each size in turn, unmapping each time
  // half in one call and half piece by piece: a size larger than the last
  // must replace the tables the last one left (the kernel converts the table
  // entry to an output address); the leaves are all of the new size and the
  // table holds no more pages than a fresh one would.
  it("test_map_table_to_oa: a larger size replaces the tables a smaller one left", () => {
    const max = sizes.filter((s) => s < 16n * GiB).at(-1)!;
    withTable(host, optionsOf(config, set), (pt, held) => {
      const cur = alignUp(va0 + smallest * 256n, max);
      const rng = new Rng(2);
      for (const len of sizes.filter((s) => s <= max)) {
        const paddr = alignDown(testOa(pt), len);
        const m = { start: cur, end: cur + max, hpa: paddr };
        const pieces = (t: PageTable) => { for (let off = 0n; off < max; off += len) t.map(cur + off, paddr + off, len, RW); };
        // The smallest pieces in one call where the output address is aligned to
        // no larger size: the same leaves, a 1000th of the time.
        if (len === smallest && max / len > 4096n && largeLeaves(cur, paddr, max, sizes).length === 0) pt.map(cur, paddr, max, RW);
        else pieces(pt);
        // check_iova and count_valids_single: the leaves tile the range and are all of this size.
        for (const { sub, leaves, note } of sample(pt, m, len)) {
          if (!note) noProblem(tilingProblem(leaves, sub), `${sizeName(max)} mapped in ${sizeName(len)} pieces`);
          expect.soft(bySize(leaves), `leaves of ${hex(sub.start)}..${hex(sub.end)} after mapping ${sizeName(max)} in ${sizeName(len)} pieces over what the last size left${note}`)
            .toEqual({ [sizeName(len)]: Number((sub.end - sub.start) / len) });
        }
        noProblem(iovaProblem(pt, m, rng, 64));
        if (len !== smallest) {
          const fresh = freshFrames(host, optionsOf(config, set), pieces);
          expect.soft(held(), `table pages held after mapping in ${sizeName(len)} pieces (a fresh table holds ${fresh})`).toBe(fresh);
        }
        if (len === max) {
          expect(pt.unmap(cur, max)).toBe(max);
        } else {
          expect(pt.unmap(cur, max / 2n)).toBe(max / 2n);
          for (let off = max / 2n; off < max; off += len) same(pt.unmap(cur + off, len), len, () => `unmap ${hex(cur + off)} +${sizeName(len)}`);
        }
        expect(everything(pt), `nothing mapped after unmapping the ${sizeName(len)} pieces`).toEqual([]);
      }
    });
  });

  // The kernel unmaps the whole leaf and reports its size; here a partial
  // unmap leaves the leaf and reports 0 (io-pgtable-arm since 6.13 refuses too).
  onlyIf(!(safe.length < 2))("test_unmap_split: unmapping part of a leaf leaves it; unmap stops at the leaf's end", () => {
    withTable(host, optionsOf(config, set), (pt) => {
      for (const base of safe) for (const next of safe.filter((s) => s > base)) {
        const at = `${sizeName(base)} of a ${sizeName(next)} leaf`;
        pt.map(va0, 0n, next, RW);
        // The earlier pairs left emptied tables here: the leaf must still be one leaf.
        expect(pt.walk(va0).pageSize, `a ${sizeName(next)} map where an earlier pair's tables were emptied`).toBe(next);
        expect(pt.unmap(va0, base), `unmap the first ${at}`).toBe(0n);
        expect(pt.unmap(va0 + next - base, base), `unmap the last ${at}`).toBe(0n);
        expect(pt.walk(va0 + next - 1n).pageSize, `the leaf stays whole after unmapping part of it`).toBe(next);
        expect(pt.iovaToPhys(va0 + next - 1n)).toBe(next - 1n);
        expect(errno(() => pt.map(va0, 0n, next, RW)), "it is still mapped").toBe("EEXIST");
        // Make sure unmap doesn't keep going into the next leaf.
        pt.map(va0 + next, 0n, next, RW);
        expect(pt.unmap(va0, next)).toBe(next);
        expect(pt.iovaToPhys(va0)).toBeUndefined();
        expect(pt.walk(va0 + next).pageSize, "the neighbour is untouched").toBe(next);
        expect(pt.iovaToPhys(va0 + next + 42n)).toBe(42n);
        expect(pt.unmap(va0 + next, base)).toBe(0n);
        expect(pt.unmap(va0 + next, next)).toBe(next);
        expect(everything(pt), `nothing left after ${at}`).toEqual([]);
      }
    });
  });

  // Random ranges in a window at the start of each input range (the kernel
  // clamps to 1 GiB past its first page); an overlap is refused, the ranges
  // it hit are checked and unmapped, and the map then succeeds.
  it("test_random_map: random maps against an interval oracle; overlaps refused and cleared", () => {
    // Without a size between the smallest and 1 GiB, ranges are mostly small
    // pages: a window of 16 Ki such pages keeps the run short.
    const mid = sizes.find((s) => s > smallest && s < GiB) ?? smallest;
    const width = min(GiB, mid << 14n);
    const windows = config.inputRanges.map(([lo, hi]) => {
      const last = hi - lo > width ? lo + width : hi;
      return { va: lo <= MAPLE_RESERVED_RANGE ? alignUp(MAPLE_RESERVED_RANGE, smallest) : lo, last };
    });
    const rng = new Rng(0x5eed);
    const seed = `(seed ${rng.seed})`;
    withTable(host, optionsOf(config, set), (pt) => {
      const oas = mask(pt.format.physAddrWidth);
      const oracle = new MappedRanges();
      const clear = (m: Mapping) => {
        same(iovaProblem(pt, m, rng, 4), undefined, () => `before unmapping ${hex(m.start)} ${seed}`);
        same(pt.unmap(m.start, m.end - m.start), m.end - m.start, () => `unmap ${hex(m.start)}..${hex(m.end)} ${seed}`);
        oracle.remove(m);
      };
      let refused = 0;
      // The kernel's 1000 rounds with every page size; a quarter with the subsets.
      const rounds = runs(set.length === fullSet(config).length ? 1000 : 250);
      for (let iter = 0; iter < rounds; iter++) {
        const w = rng.pick(windows);
        // As the kernel draws them: a start in the window, then a length below
        // what is left past the start's offset (ranges running out are skipped).
        let start = rng.below(min(U32_MAX, w.last - w.va));
        let end = rng.below(min(U32_MAX, w.last - start) || 1n);
        start = alignDown(start, smallest) + w.va;
        end = alignUp(end, smallest) + start;
        if (start < w.va || end > w.last + 1n || start >= end) continue;
        const m = { start, end, hpa: start & oas };
        const hits = oracle.overlapping(start, end);
        const code = errno(() => pt.map(start, m.hpa, end - start, RW));
        if (hits.length) {
          refused++;
          same(code, "EEXIST", () => `map ${hex(start)}..${hex(end)} over ${hits.length} mappings ${seed}`);
          for (const hit of hits) clear(hit);
          pt.map(start, m.hpa, end - start, RW);
        } else {
          same(code, "no error", () => `map ${hex(start)}..${hex(end)} over nothing ${seed}`);
        }
        oracle.add(m);
        same(iovaProblem(pt, m, rng), undefined, () => `after map ${hex(start)}..${hex(end)} ${seed}`);
      }
      // The whole state against the oracle: each mapping tiled by its leaves, nothing else mapped.
      for (const w of windows) {
        const leaves = scan(pt, w.va, w.last);
        for (const m of oracle.all().filter((x) => x.start >= w.va && x.start <= w.last)) {
          noProblem(tilingProblem(leaves.filter((l) => l.iova >= m.start && l.iova < m.end), m), `${hex(m.start)}..${hex(m.end)} ${seed}`);
        }
        const stray = leaves.filter((l) => oracle.overlapping(l.iova, l.iova + l.size).length === 0);
        expect(stray, `leaves outside every mapping ${seed}`).toEqual([]);
      }
      expect(refused, "overlaps were met").toBeGreaterThan(0);
      for (const m of [...oracle.all()]) clear(m);
      expect(everything(pt), `count_valids after unmapping everything ${seed}`).toEqual([]);
    });
  });

  // https://lore.kernel.org/r/b9b18a03-63a2-4065-a27e-d92dd5c860bc@amd.com:
  // 128 KiB at 0xfef80000 → 0x208b95d000.
  const boundary = { start: 0xfef80000n, end: 0xfefa0000n, hpa: 0x208b95d000n };
  // The kernel's skip rule, plus room for the output address in the default output width.
  const noBoundary = va0 !== 0n || config.inputRanges[0][1] < boundary.end - 1n || smallest !== 0x1000n || boundary.hpa + 0x20000n > 1n << BigInt(config.defaultPhysAddrWidth);
  onlyIf(!noBoundary)(
    "test_pgsize_boundary: 0xfef80000 +128 KiB → 0x208b95d000", () => {
      withTable(host, optionsOf(config, set), (pt) => {
        const len = boundary.end - boundary.start;
        pt.map(boundary.start, boundary.hpa, len, RW);
        noProblem(leavesProblem(scan(pt, boundary.start, boundary.end - 1n), largestFit(boundary.start, boundary.hpa, len, sizes)));
        for (let off = 0n; off < len; off += smallest) same(pt.iovaToPhys(boundary.start + off), boundary.hpa + off, () => `iovaToPhys(${hex(boundary.start + off)})`);
        expect(pt.unmap(boundary.start, len)).toBe(len);
      });
    });

  // https://lore.kernel.org/r/20250826143816.38686-1-eugkoira@amazon.com:
  // [0x3fe400000, 0x4c0600000) identity is 14 × 2 MiB, 3 × 1 GiB, 3 × 2 MiB.
  const mixed = { start: 0x3fe400n << 12n, end: 0x4c0600n << 12n, hpa: 0x3fe400n << 12n };
  const twoAndOne = safe.filter((s) => s >= 2n * MiB && s <= GiB).map(sizeName).join() === "2 MiB,1 GiB";
  onlyIf(!(config.inputRanges[0][1] <= mixed.start || !twoAndOne))("test_mixed: 2 MiB up to a 1 GiB boundary, 1 GiB pages, 2 MiB after", () => {
    withTable(host, optionsOf(config, set), (pt) => {
      const len = mixed.end - mixed.start;
      pt.map(mixed.start, mixed.hpa, len, RW);
      const leaves = scan(pt, mixed.start, mixed.end - 1n);
      noProblem(leavesProblem(leaves, largestFit(mixed.start, mixed.hpa, len, sizes)));
      expect(leaves.length, "the kernel's count: 14 + 3 + 3").toBe(20);
      expect(bySize(leaves)).toEqual({ "1 GiB": 3, "2 MiB": 17 });
      noProblem(iovaProblem(pt, mixed, new Rng(3), 64));
      expect(pt.unmap(mixed.start, len)).toBe(len);
    });
  });

  it("deliberate differences: EEXIST on overlap, EINVAL beyond the input or output size; a refusal changes nothing", () => {
    withTable(host, optionsOf(config, set), (pt, held) => {
      const big = sizes[sizes.length - 1] <= GiB ? sizes[sizes.length - 1] : smallest;
      const at = alignUp(va0 + 1n, big);
      pt.map(at, 0n, big, RW);
      const before = everything(pt), frames = held();
      // generic_pt: EADDRINUSE. However little the overlap, from below or above.
      expect(errno(() => pt.map(at - smallest, 0n, 2n * smallest, RW)), "overlap from below").toBe("EEXIST");
      expect(errno(() => pt.map(at + big - smallest, 0n, 2n * smallest, RW)), "overlap from above").toBe("EEXIST");
      expect(errno(() => pt.map(at, 0x1000000n, smallest, RW)), "the same first page").toBe("EEXIST");
      // io-pgtable-arm and generic_pt: ERANGE.
      for (const [lo, hi] of config.inputRanges) {
        if (hi + 1n < 1n << 64n) {
          expect(errno(() => pt.map(hi + 1n, 0n, smallest, RW)), `map just past ${hex(hi)}`).toBe("EINVAL");
          expect(errno(() => pt.map(hi + 1n - smallest, 0n, 2n * smallest, RW)), `map across ${hex(hi)}`).toBe("EINVAL");
          expect(errno(() => pt.unmap(hi + 1n - smallest, 2n * smallest)), `unmap across ${hex(hi)}`).toBe("EINVAL");
        }
        if (lo > 0n) expect(errno(() => pt.map(lo - smallest, 0n, smallest, RW)), `map just below ${hex(lo)}`).toBe("EINVAL");
      }
      const width = pt.format.physAddrWidth, free = at + big;
      expect(errno(() => pt.map(free, 1n << BigInt(width), smallest, RW)), `output at 2^${width}`).toBe("EINVAL");
      expect(errno(() => pt.map(free, (1n << BigInt(width)) - smallest, 2n * smallest, RW)), `output across 2^${width}`).toBe("EINVAL");
      expect(everything(pt), "the refusals changed no leaf").toEqual(before);
      expect(held(), "and took no table page").toBe(frames);
      // A table that still holds a leaf is never replaced by a larger leaf (io-pgtable-arm frees it, leaves and all).
      for (const large of sizes.filter((z) => z > smallest && z <= GiB)) {
        const slot = alignUp(at + big, large) + large;
        pt.map(slot + large - smallest, 0n, smallest, RW);
        const tables = held();
        expect(errno(() => pt.map(slot, 0n, large, RW)), `a ${sizeName(large)} map over a table holding one leaf`).toBe("EEXIST");
        expect(pt.iovaToPhys(slot + large - smallest), "the leaf stays").toBe(0n);
        expect(held(), "and its table").toBe(tables);
        expect(pt.unmap(slot + large - smallest, smallest)).toBe(smallest);
      }
    });
  });
});

// ---------------------------------------------------------------------------
// test_map_simple on every configuration the engine accepts (every input size,
// not only the widest), with every page-size set.
describe("test_map_simple at every input size", () => {
  it.each(CONFIGS.map((config) => ({ config, label: config.label })))("$label", ({ config }) => {
    for (const set of config.pageSizeSets) {
      const sizes = leafSizes(config, set);
      const safe = sizes.filter((s) => s < 1n << BigInt(config.inputBits - 1));
      withTable(host, optionsOf(config, set), (pt) => {
        let cur = config.inputRanges[0][0] + set[0] * 256n;
        const made: Leaf[] = [];
        for (const size of safe) {
          cur = alignUp(cur, size);
          const hpa = alignDown(testOa(pt), size);
          pt.map(cur, hpa, size, RW);
          made.push({ iova: cur, size, hpa });
          cur += size;
        }
        expect(everything(pt), setName(set)).toEqual(made);
        for (const l of made) expect(pt.unmap(l.iova, l.size), `${setName(set)}: unmap ${sizeName(l.size)}`).toBe(l.size);
        expect(everything(pt)).toEqual([]);
      });
    }
  });
});

// ---------------------------------------------------------------------------
// This package's own: whatever way a range of small pages was unmapped (one
// call, page by page, random pieces), mapping it again with a larger size
// gives leaves of that size and holds the table pages a fresh map would.
type UnmapMode = "in one call" | "page by page" | "in random pieces";
const MODES: UnmapMode[] = ["in one call", "page by page", "in random pieces"];

/** Unmaps [m.start, m.end) the given way, `grain` at a time; expects each call to report its bytes. */
function unmapAll(pt: PageTable, m: Mapping, mode: UnmapMode, grain: bigint, rng: Rng): void {
  if (mode === "in one call") {
    expect(pt.unmap(m.start, m.end - m.start)).toBe(m.end - m.start);
    return;
  }
  for (let a = m.start; a < m.end;) {
    const n = mode === "page by page" ? grain : min(m.end - a, grain * (1n + rng.below(64n)));
    same(pt.unmap(a, n), n, () => `unmap ${hex(a)} +${sizeName(n)} ${mode}`);
    a += n;
  }
}

const EMPTIED = MAIN.filter((c) => leafSizes(c, fullSet(c)).length > 1).flatMap((config) => MODES.map((mode) => ({ config, mode, label: `${config.label}: unmapped ${mode}` })));

describe("emptied tables give way to large leaves", () => {
  it.each(EMPTIED)("$label", ({ config, mode }) => {
    const set = fullSet(config);
    const sizes = leafSizes(config, set);
    const smallest = sizes[0];
    const w = churnWindow(config);
    const size = w.end - w.start;
    const rng = new Rng(7);
    withTable(host, optionsOf(config, set), (pt, held) => {
      const base = alignDown(testOa(pt), GiB);
      // The smallest pages over the whole window: an output address aligned to nothing larger.
      pt.map(w.start, base + smallest, size, RW);
      for (const { sub, leaves } of sample(pt, { start: w.start, end: w.end, hpa: base + smallest }, smallest)) {
        noProblem(tilingProblem(leaves, sub));
        expect(bySize(leaves), `${sizeName(size)} in ${sizeName(smallest)} pages`).toEqual({ [sizeName(smallest)]: Number((sub.end - sub.start) / smallest) });
      }
      unmapAll(pt, w, mode, smallest, rng);
      expect(scan(pt, w.start, w.end - 1n)).toEqual([]);
      for (const len of sizes.filter((s) => s > smallest && s <= size)) {
        const remap = (t: PageTable) => { for (let off = 0n; off < size; off += len) t.map(w.start + off, base + off, len, RW); };
        remap(pt);
        const m = { start: w.start, end: w.end, hpa: base };
        for (const { sub, leaves, note } of sample(pt, m, len)) {
          if (!note) noProblem(tilingProblem(leaves, sub));
          expect.soft(bySize(leaves), `${sizeName(size)} mapped again in ${sizeName(len)} pieces${note}`).toEqual({ [sizeName(len)]: Number((sub.end - sub.start) / len) });
        }
        noProblem(iovaProblem(pt, m, rng, 64));
        expect.soft(pt.walk(w.start + size / 2n).pageSize, `walk(${hex(w.start + size / 2n)}).pageSize`).toBe(len);
        const fresh = freshFrames(host, optionsOf(config, set), remap);
        expect.soft(held(), `table pages held after the ${sizeName(len)} map (a fresh table holds ${fresh})`).toBe(fresh);
        unmapAll(pt, w, mode, len, rng);
        expect(scan(pt, w.start, w.end - 1n)).toEqual([]);
      }
    });
  });
});

// ---------------------------------------------------------------------------
// This package's own: 10^4 rounds of random map/unmap in one window (a
// thousand in quick mode). Every map is checked as it is made: it translates
// as the oracle says, and its leaves larger than the smallest size are there
// (no fragmentation from tables that earlier mappings emptied). The table
// pages held never exceed what the window can need; at the end every mapping
// is checked leaf by leaf, unmapping everything leaves an empty table's
// frames, and a map of the whole window gets the largest leaves and the
// table pages of a fresh map.
const CHURN = MAIN.filter((c) => leafSizes(c, fullSet(c)).length > 1);

/** The first way a mapping's leaves differ from the largest that fit (its leaf counts, actual and expected), or undefined. */
function largeLeafProblem(pt: PageTable, m: Mapping, sizes: readonly bigint[], detail = true): string | undefined {
  for (const l of largeLeaves(m.start, m.hpa, m.end - m.start, sizes)) {
    const w = pt.walk(l.iova);
    if (w.pageSize !== l.size || w.hpa !== l.hpa) {
      if (!detail) return "fragmented";
      const actual = scan(pt, m.start, m.end - 1n), expected = largestFit(m.start, m.hpa, m.end - m.start, sizes);
      return `map(${hex(m.start)} → ${hex(m.hpa)}, ${hex(m.end - m.start)}) made ${actual.length} leaves ${JSON.stringify(bySize(actual))} where ${expected.length} ${JSON.stringify(bySize(expected))} fit: ` +
        `walk(${hex(l.iova)}) gives ${w.pageSize === undefined ? "no leaf" : sizeName(w.pageSize)}, expected ${sizeName(l.size)}`;
    }
  }
  return undefined;
}

describe("map/unmap churn", () => {
  it.each(CHURN.map((config) => ({ config, label: config.label })))("$label", ({ config }) => {
    const set = fullSet(config);
    const sizes = leafSizes(config, set);
    const smallest = sizes[0];
    const w = churnWindow(config);
    const size = w.end - w.start;
    const rng = new Rng(0xc4a2);
    const seed = `(seed ${rng.seed})`;
    const options = optionsOf(config, set);
    // The most a table can hold for this window: every smallest page in it mapped.
    const ceiling = freshFrames(host, { ...options, pageSizes: [smallest] }, (t) => t.map(w.start, 0n, size, RW));
    withTable(host, options, (pt, held) => {
      const empty = held();
      const delta = alignDown(testOa(pt), GiB) - w.start; // output = input + delta: large pages fit where the input allows
      const oracle = new MappedRanges();
      let peak = 0, mapped = 0, refused = 0;
      const fragmented: string[] = [];
      const rounds = runs(10_000);
      for (let round = 0; round < rounds; round++) {
        if (oracle.size === 0 || rng.chance(0.55)) {
          const pages = rng.chance(0.6) ? 1n + rng.below(64n) : rng.chance(0.75) ? 1n + rng.below(1024n) : 1n + rng.below(16384n);
          const start = w.start + alignDown(rng.below(size), smallest);
          const end = min(w.end, start + pages * smallest);
          const m = { start, end, hpa: start + delta + (rng.chance(0.9) ? 0n : smallest) };
          const hits = oracle.overlapping(start, end);
          const code = errno(() => pt.map(start, m.hpa, end - start, RW));
          if (hits.length) {
            refused++;
            same(code, "EEXIST", () => `round ${round}: map ${hex(start)}..${hex(end)} over ${hits.length} mappings ${seed}`);
            if (rng.chance(0.5)) continue;
            for (const h of hits) {
              same(pt.unmap(h.start, h.end - h.start), h.end - h.start, () => `round ${round}: unmap ${hex(h.start)} ${seed}`);
              oracle.remove(h);
            }
            pt.map(start, m.hpa, end - start, RW);
          } else {
            same(code, "no error", () => `round ${round}: map ${hex(start)}..${hex(end)} ${seed}`);
          }
          oracle.add(m);
          mapped++;
          same(iovaProblem(pt, m, rng, 2), undefined, () => `round ${round} ${seed}`);
          const problem = largeLeafProblem(pt, m, sizes, fragmented.length === 0);
          if (problem) fragmented.push(`round ${round}: ${problem}`);
        } else {
          // One mapping, or a run of neighbours in one call (the holes between them unmap nothing).
          const list = oracle.all();
          const i = rng.int(list.length);
          const run = list.slice(i, i + (rng.chance(0.8) ? 1 : 1 + rng.int(4)));
          const first = run[0].start, end = run[run.length - 1].end;
          const bytes = run.reduce((n, x) => n + (x.end - x.start), 0n);
          same(pt.unmap(first, end - first), bytes, () => `round ${round}: unmap ${hex(first)}..${hex(end)} ${seed}`);
          for (const x of run) oracle.remove(x);
        }
        if (held() > peak) peak = held();
      }
      expect(mapped, "maps made").toBeGreaterThan(rounds / 4);
      expect(refused, "overlapping maps refused").toBeGreaterThan(0);
      noProblem(fragmented.length === 0 ? undefined : `${fragmented.length} of ${mapped} maps; the first: ${fragmented[0]}`,
        `maps not made of the largest leaves that fit during ${rounds} rounds ${seed}`, true);
      expect(peak, `table pages held never exceed what the window can need (${ceiling})`).toBeLessThanOrEqual(ceiling);
      // Every surviving mapping, leaf by leaf; nothing else mapped.
      const leaves = scan(pt, w.start, w.end - 1n);
      const atEnd: string[] = [];
      for (const m of oracle.all()) {
        const own = leaves.filter((l) => l.iova >= m.start && l.iova < m.end);
        noProblem(tilingProblem(own, m), `${hex(m.start)}..${hex(m.end)} ${seed}`);
        const problem = leavesProblem(own, largestFit(m.start, m.hpa, m.end - m.start, sizes));
        if (problem) atEnd.push(`${hex(m.start)}..${hex(m.end)}: ${problem}`);
      }
      noProblem(atEnd.length === 0 ? undefined : `${atEnd.length} of ${oracle.size}; the first: ${atEnd[0]}`, `mappings at the end not made of the largest leaves that fit ${seed}`, true);
      expect(leaves.filter((l) => oracle.overlapping(l.iova, l.iova + l.size).length === 0), `leaves outside every mapping ${seed}`).toEqual([]);
      // Unmap everything, mapping by mapping.
      for (const m of [...oracle.all()]) {
        expect(pt.unmap(m.start, m.end - m.start)).toBe(m.end - m.start);
        oracle.remove(m);
      }
      expect(scan(pt, w.start, w.end - 1n)).toEqual([]);
      // The whole window again, as one map: the largest leaves, the table pages of a fresh map.
      const whole = { start: w.start, end: w.end, hpa: w.start + delta };
      pt.map(whole.start, whole.hpa, size, RW);
      noProblem(largeLeafProblem(pt, whole, sizes), `the whole window mapped again after the churn ${seed}`, true);
      const fresh = freshFrames(host, options, (t) => t.map(whole.start, whole.hpa, size, RW));
      expect.soft(held(), `table pages held by the window's map after the churn (a fresh table holds ${fresh}) ${seed}`).toBe(fresh);
      expect(pt.unmap(whole.start, size)).toBe(size);
      // Unmapping the whole input space leaves an empty table: no table page lost on the way.
      for (const [lo, hi] of config.inputRanges) expect(pt.unmap(lo, hi - lo + 1n)).toBe(0n);
      expect(held(), `frames held after unmapping everything (an empty table holds ${empty}) ${seed}`).toBe(empty);
    });
  });
});
