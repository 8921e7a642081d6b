// A ggtt over a stage 2: a GPU reads its global GTT straight from host memory
// (the table is host-physical) and the entries hold IOVAs, which then go
// through the system IOMMU's domain. The combined walk follows the nested
// walk's rules: faults say their stage, permissions are both stages', the
// page size is the smaller one, and the combined IOTLB entries die with any
// stage-2 invalidation. Directed cases first, then engine against twin over
// random mixes of GGTT entry writes (by hand and by the builder), stage-2
// maps and unmaps, invalidations of either stage, translations and DMA.
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { createHost, PAGE_2M, PAGE_4K, type Domain } from "../src/index.js";
import { createNaiveHost } from "../bench/naive/index.js";
import { attempt as outcome, errno } from "./support/outcome.js";
import { mayMiss, params } from "./support/runs.js";
import { lockstep } from "./support/lockstep.js";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;
const RAM = 8 * 1024 * 1024;
/** The device's IOVA space stage 2 maps: 64 pages at IOVA 0, and a 2 MiB page at IOVA 2 MiB. */
const IOVA_PAGES = 64n;
const ENTRIES = 1024;
const RW = { read: true, write: true } as const;
const P = 1n, W = 2n;

interface Side { host: Any; s2: Any; gpu: Any; base: bigint }

/** A stage-2 domain (VT-d second level or Arm stage 2) mapping the IOVA space, and a ggtt over it. */
async function setUp(make: (o: Any) => Promise<Any>, arm: boolean, s2ad = false): Promise<Side> {
  const host = await make({ ramSize: RAM, iotlb: { sets: 16, ways: 2 }, faultRingSize: 16 });
  const s2 = host.createDomain(arm
    ? { format: "arm64", stage: 2, inputBits: 40, physAddrWidth: 40, pageSizes: [PAGE_4K, PAGE_2M], accessedDirty: s2ad }
    : { format: "vtd-sl", inputBits: 48, pageSizes: [PAGE_4K, PAGE_2M], accessedDirty: s2ad });
  const run = host.ram.allocFrames(Number(PAGE_2M * 3n / PAGE_4K));
  const base = (run + PAGE_2M - 1n) & ~(PAGE_2M - 1n);
  s2.pageTable.map(0n, base, IOVA_PAGES * PAGE_4K, RW);
  s2.pageTable.map(PAGE_2M, base + PAGE_2M, PAGE_2M, RW);
  const gpu = host.createDomain({ format: "ggtt", entries: ENTRIES, stage2: s2 });
  return { host, s2, gpu, base };
}

const sides = async (arm: boolean): Promise<[Side, Side]> => [await setUp(createHost, arm), await setUp(createNaiveHost, arm)];

describe.each([false, true])("ggtt over a stage 2 (arm64 stage 2: %s), engine and twin", (arm) => {
  it("translates GMA → IOVA → HPA with both stages' rights and the smaller page; faults name their stage", async () => {
    for (const { host, s2, gpu, base } of await sides(arm)) {
      const d = gpu as Domain;
      d.pageTable.map(0x5000n, 0x3000n, PAGE_4K, RW);
      d.pageTable.map(0x6000n, 0x4000n, PAGE_4K, { write: false });
      d.pageTable.map(0x7000n, PAGE_2M + 0x1000n, PAGE_4K, RW);
      // The GTT entry holds the IOVA; the walk reads it at its HPA (root + 8n), not through stage 2.
      expect(host.ram.readU64(d.root + 5n * 8n)).toBe(0x3000n | P | W);
      const w = d.walk(0x5abcn, "write");
      expect(w.hpa).toBe(base + 0x3abcn);
      expect(w.steps).toEqual([{ level: 0, entryAddress: d.root + 0x28n, entry: 0x3003n }]);
      expect(d.translate(0x5abcn, "write")).toMatchObject({ hpa: base + 0x3abcn, pageSize: PAGE_4K });
      // A 2 MiB stage-2 leaf under a 4 KiB GTT entry: 4 KiB.
      expect(s2.walk(PAGE_2M + 0x1000n).pageSize).toBe(PAGE_2M);
      expect(d.translate(0x7010n)).toMatchObject({ hpa: base + PAGE_2M + 0x1010n, pageSize: PAGE_4K });
      // Read-only in the GTT: a write faults in stage 1.
      expect(d.translate(0x6000n, "write").fault).toEqual({ reason: "permission", level: 0, address: 0x6000n, stage: 1 });
      // Read-only in stage 2: a write faults in stage 2, and the permissions are the AND.
      s2.pageTable.unmap(0x3000n, PAGE_4K);
      s2.pageTable.map(0x3000n, base + 0x3000n, PAGE_4K, { write: false });
      s2.invalidate({ iova: 0x3000n });
      expect(d.translate(0x5000n)).toMatchObject({ perms: { read: true, write: false } });
      expect(d.translate(0x5000n, "write").fault).toMatchObject({ reason: "permission", level: 0, stage: 2 });
      // An IOVA stage 2 does not map: stage 2, not present. A GMA past the GTT: stage 1, input range.
      d.pageTable.map(0x8000n, 0x80000n, PAGE_4K, RW);
      expect(d.translate(0x8000n).fault).toMatchObject({ reason: "not-present", stage: 2 });
      expect(d.translate(BigInt(ENTRIES) * PAGE_4K).fault).toMatchObject({ reason: "input-range", stage: 1 });
      expect(d.translate(0x9000n).fault).toMatchObject({ reason: "not-present", level: 0, stage: 1 });
      expect(host.faults.drain().map((f: Any) => f.stage)).toEqual([1, 2, 2, 1, 1]);
    }
  });

  it("a stage-2 unmap and invalidation makes the combined translation fault at stage 2, with no stale hit", async () => {
    for (const { host, s2, gpu } of await sides(arm)) {
      const d = gpu as Domain;
      d.pageTable.map(0x1000n, 0x2000n, PAGE_4K, RW);
      const hpa = d.translateHpa(0x1010n);
      expect(hpa).toBeGreaterThan(0);
      // Hits, in the engine and again from the facade's memo.
      expect(d.translateHpa(0x1020n)).toBe(hpa + 0x10);
      expect(d.dma.read(0x1010n, 16).bytes).toBe(16);
      s2.pageTable.unmap(0x2000n, PAGE_4K);
      // Until stage 2 is invalidated, the combined entry may still hit (as a real IOTLB's would).
      expect(d.translateHpa(0x1010n)).toBe(hpa);
      s2.invalidate({ iova: 0x2000n });
      const hits = host.iotlb.stats().hits;
      expect(d.translateHpa(0x1010n)).toBe(-1);
      expect(d.translate(0x1018n, "write").fault).toMatchObject({ reason: "not-present", level: 0, stage: 2 });
      const r = d.dma.read(0x1000n, 64);
      expect([r.bytes, r.fault?.stage, r.fault?.reason]).toEqual([0, 2, "not-present"]);
      const into = new Uint8Array(32);
      expect(d.dma.readInto(0x1000n, into).fault).toMatchObject({ stage: 2, address: 0x1000n });
      expect(d.dma.write(0x1000n, into).fault).toMatchObject({ stage: 2, address: 0x1000n });
      expect(host.iotlb.stats().hits, "no hit after the stage-2 invalidation").toBe(hits);
    }
  });

  it("a GTT entry changed and its GMA invalidated: the old translation is unreachable, others still hit", async () => {
    for (const { host, gpu, base } of await sides(arm)) {
      const d = gpu as Domain;
      d.pageTable.map(0x1000n, 0x2000n, 2n * PAGE_4K, RW);
      const buf = new Uint8Array(8);
      expect(d.dma.readInto(0x1000n, buf).bytes).toBe(8);
      expect(d.translateHpa(0x2000n)).toBe(Number(base + 0x3000n));
      // The driver rewrites entry 1 by hand (the GPU's GTT is plain host memory), then invalidates that GMA.
      host.ram.writeU64(d.root + 8n, 0x9000n | P);
      d.invalidate({ iova: 0x1000n });
      const hits = host.iotlb.stats().hits;
      expect(d.translateHpa(0x1008n)).toBe(Number(base + 0x9008n));
      expect(d.translate(0x1000n, "write").fault).toMatchObject({ reason: "permission", stage: 1 });
      expect(d.dma.write(0x1000n, new Uint8Array([1, 2, 3])).fault).toMatchObject({ stage: 1, reason: "permission" });
      expect(host.iotlb.stats().hits).toBe(hits);
      // Page 2 was not invalidated: still a hit.
      expect(d.translateHpa(0x2010n)).toBe(Number(base + 0x3010n));
      expect(host.iotlb.stats().hits).toBe(hits + 1);
      // Through the builder: unmap, invalidate, and the GMA faults in stage 1.
      expect(d.pageTable.unmap(0x2000n, PAGE_4K)).toBe(PAGE_4K);
      d.invalidate({ iova: 0x2000n });
      expect(d.translate(0x2010n).fault).toMatchObject({ reason: "not-present", stage: 1 });
    }
  });

  it("DMA crosses GMA pages mapped to scattered IOVAs, and stops where either stage refuses", async () => {
    for (const { host, s2, gpu, base } of await sides(arm)) {
      const d = gpu as Domain;
      // GMA pages 0x10..0x12 → IOVA pages 7, 3, 9 (read-only at stage 2).
      d.pageTable.map(0x10000n, 0x7000n, PAGE_4K, RW);
      d.pageTable.map(0x11000n, 0x3000n, PAGE_4K, RW);
      d.pageTable.map(0x12000n, 0x9000n, PAGE_4K, RW);
      s2.pageTable.unmap(0x9000n, PAGE_4K);
      s2.pageTable.map(0x9000n, base + 0x9000n, PAGE_4K, { write: false });
      const data = new Uint8Array(0x2800).map((_, i) => i & 0xff);
      const w = d.dma.write(0x10800n, data);
      expect([w.bytes, w.fault?.stage, w.fault?.reason, w.fault?.address]).toEqual([0x1800, 2, "permission", 0x12000n]);
      expect(host.ram.read(base + 0x7800n, 0x800)).toEqual(data.subarray(0, 0x800));
      expect(host.ram.read(base + 0x3000n, 0x1000)).toEqual(data.subarray(0x800, 0x1800));
      const r = d.dma.read(0x10800n, 0x2000);
      expect([r.bytes, r.fault]).toEqual([0x2000, undefined]);
      expect(r.data.subarray(0, 0x1800)).toEqual(data.subarray(0, 0x1800));
    }
  });

  it("refuses what cannot be a GPU's stage 2, and keeps the stage 2 while the GPU uses it", async () => {
    for (const { host, s2, gpu } of await sides(arm)) {
      const free = host.ram.framesFree;
      const single = host.createDomain({ format: "ggtt", entries: 512 });
      const cases: [() => unknown, string][] = [
        [() => host.createDomain({ format: "ggtt", entries: 512, stage2: single }), "EINVAL"],
        [() => host.createDomain({ format: "ggtt", entries: 512, stage2: gpu }), "EINVAL"],
        [() => host.createDomain({ format: "ggtt", entries: 1000, stage2: s2 }), "EINVAL"],
        [() => host.createDomain({ format: "ggtt", stage2: s2 }), "EINVAL"],
        [() => host.createDomain({ format: "ggtt", entries: 512, stage2: s2, eafe: true }), "EINVAL"],
        [() => host.createDomain({ format: "vtd-sl", stage2: s2, root: 0n }), "EINVAL"],
        [() => s2.destroy(), "EBUSY"],
      ];
      const before = host.ram.framesFree;
      for (const [call, code] of cases) {
        expect(errno(call)).toBe(code);
        expect(host.ram.framesFree).toBe(before);
      }
      single.destroy();
      gpu.destroy();
      // The GPU's GTT went back with it (its 2 frames); now the stage 2 may go.
      expect(host.ram.framesFree).toBe(free + 2);
      s2.destroy();
      expect(errno(() => host.createDomain({ format: "ggtt", entries: 512, stage2: s2 }))).toBe("ENODEV");
    }
  });
});

describe("nested domains keep their guest-memory stage 1", () => {
  it("an x86-64 stage 1 over stage 2 still needs a GPA root and has no host page table", async () => {
    const { host, s2 } = await setUp(createHost, false);
    expect(errno(() => host.createDomain({ format: "x86-64", stage2: s2 }))).toBe("EINVAL");
    const nested = host.createDomain({ format: "x86-64", stage2: s2, root: 0x1000n });
    expect(errno(() => nested.pageTable)).toBe("EOPNOTSUPP");
    // Its tables are read through stage 2: GPA 0x1000 is zero there, so nothing is present, in stage 1.
    expect(nested.walk(0x1000n).fault).toMatchObject({ reason: "not-present", stage: 1, level: 3 });
  });
});

// ---------------------------------------------------------------- engine against twin
type Op =
  | { t: "put"; index: number; value: bigint }
  | { t: "gmap"; index: number; iovaPage: number; pages: number; write: boolean }
  | { t: "gunmap"; index: number; pages: number }
  | { t: "s2unmap"; page: number }
  | { t: "s2map"; page: number; write: boolean }
  | { t: "s2inval"; all: boolean; page: number }
  | { t: "s1inval"; all: boolean; gma: bigint }
  | { t: "translate"; gma: bigint; access: "read" | "write" }
  | { t: "dma"; gma: bigint; len: number; write: boolean; into: boolean }
  | { t: "again"; shift: number };

function apply(side: Side, op: Op): unknown {
  const { host, s2, gpu, base } = side;
  switch (op.t) {
    case "put": return host.ram.writeU64(gpu.root + BigInt(op.index) * 8n, op.value);
    case "gmap": return outcome(() => gpu.pageTable.map(BigInt(op.index) * PAGE_4K, BigInt(op.iovaPage) * PAGE_4K, BigInt(op.pages) * PAGE_4K, { write: op.write }));
    case "gunmap": return outcome(() => gpu.pageTable.unmap(BigInt(op.index) * PAGE_4K, BigInt(op.pages) * PAGE_4K));
    case "s2unmap": return s2.pageTable.unmap(BigInt(op.page) * PAGE_4K, PAGE_4K);
    case "s2map": {
      const iova = BigInt(op.page) * PAGE_4K;
      const bytes = s2.pageTable.unmap(iova, PAGE_4K);
      return [bytes, outcome(() => s2.pageTable.map(iova, base + iova, PAGE_4K, { read: true, write: op.write }))];
    }
    case "s2inval": return op.all ? s2.invalidate() : s2.invalidate({ iova: BigInt(op.page) * PAGE_4K });
    case "s1inval": return op.all ? gpu.invalidate() : gpu.invalidate({ iova: op.gma & ~0xfffn });
    case "translate": return gpu.translate(op.gma, op.access);
    case "dma": {
      if (op.write) return gpu.dma.write(op.gma, new Uint8Array(op.len).map((_, i) => (i * 7 + op.len) & 0xff));
      if (!op.into) return gpu.dma.read(op.gma, op.len);
      const into = new Uint8Array(op.len);
      return { ...gpu.dma.readInto(op.gma, into), into };
    }
    case "again": return undefined;
  }
}

// GTT entries: an IOVA page (mapped by stage 2, or just past it, or in the
// 2 MiB page) with present / writable bits, ignored bits, or garbage.
// Mostly the first 8 IOVA pages, where the stage-2 changes below mostly land too.
const hotPage = fc.integer({ min: 0, max: 7 });
const s2Page = fc.oneof({ weight: 3, arbitrary: hotPage }, { weight: 1, arbitrary: fc.integer({ min: 0, max: Number(IOVA_PAGES) - 1 }) });
const iovaPage = fc.oneof(
  { weight: 4, arbitrary: hotPage },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: Number(IOVA_PAGES) + 8 }) },
  { weight: 1, arbitrary: fc.integer({ min: 512, max: 1023 }) },
);
const entry = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(iovaPage, fc.constantFrom(0x1n, 0x3n, 0x2n, 0x0n, 0xffdn, 0xffffff8000000003n)).map(([p, bits]) => (BigInt(p) << 12n) | bits) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) },
);
// GMAs: mostly the first 8 GTT entries (where entries are mostly written),
// some in the first 32, some anywhere in the 1024 or past them.
const gma = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 8 * 4096 - 1 }).map(BigInt) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 32 * 4096 - 1 }).map(BigInt) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: ENTRIES * 4096 + 8191 }).map(BigInt) },
);
const slot = fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 0, max: 7 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 31 }) });

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ t: fc.constant("put" as const), index: slot, value: entry }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("gmap" as const), index: slot, iovaPage, pages: fc.integer({ min: 1, max: 4 }), write: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("gunmap" as const), index: slot, pages: fc.integer({ min: 1, max: 4 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("s2unmap" as const), page: s2Page }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("s2map" as const), page: s2Page, write: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("s2inval" as const), all: fc.boolean(), page: s2Page }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("s1inval" as const), all: fc.boolean(), gma }) },
  { weight: 8, arbitrary: fc.record({ t: fc.constant("translate" as const), gma, access: fc.constantFrom("read" as const, "write" as const) }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("dma" as const), gma, len: fc.integer({ min: 1, max: 9000 }), write: fc.boolean(), into: fc.boolean() }) },
  { weight: 6, arbitrary: fc.record({ t: fc.constant("again" as const), shift: fc.oneof({ weight: 6, arbitrary: fc.nat(64) }, { weight: 1, arbitrary: fc.constantFrom(4000, 4096) }) }) },
);

const seen = new Set<string>();

async function scenario(arm: boolean, s2ad: boolean, ops: Op[]): Promise<void> {
  const engine = await setUp(createHost, arm, s2ad);
  const twin = await setUp(createNaiveHost, arm, s2ad);
  // The first 8 GMA pages start mapped to the first 8 IOVA pages, writable: the ops then change a live GTT.
  for (const side of [engine, twin]) side.gpu.pageTable.map(0n, 0n, 8n * PAGE_4K, RW);
  lockstep(engine, twin, ops, apply, {
    again: (last, shift) => ({ ...(last as Extract<Op, { t: "translate" | "dma" }>), gma: (last as Extract<Op, { t: "translate" | "dma" }>).gma + BigInt(shift) }),
    repeatable: (op) => op.t === "translate" || op.t === "dma",
    seen, ramSize: RAM,
  });
}

describe("ggtt over a stage 2, engine vs twin", () => {
  for (const arm of [false, true]) {
    it(`over ${arm ? "arm64 stage 2" : "VT-d second level"}: random GTT entries, stage-2 changes, invalidations of either stage, translations and DMA`, async () => {
      await fc.assert(fc.asyncProperty(fc.boolean(), fc.array(opArb, { minLength: 10, maxLength: 60 }), (s2ad, ops) => scenario(arm, s2ad, ops)), params(60));
    }, 60_000);
  }

  it("met both stages' faults and translations", () => {
    const must = ["translated", "not-present:1", "input-range:1", "permission:1", "not-present:2", "permission:2"];
    const missed = must.filter((k) => !seen.has(k));
    console.log([...seen]);
    expect(missed.length, `never met: ${missed.join(", ")}`).toBeLessThanOrEqual(mayMiss(must.length));
  });
});
