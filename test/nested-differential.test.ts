// Nested translation, engine against the naive twin: the same guest (a
// stage-2 domain, a stage-1 table written into guest memory) and the same
// random operations — guest table writes (real entries and garbage), stage-2
// map / unmap (table pages read-only too), invalidations of either stage,
// translations and DMA, and the last of those again a few bytes on (which the
// facade's hit memo replays) — under random switches (stage-1 A/D, EAFE, Arm HA
// and HD, stage-2 dirty tracking) must give the same results, fault records,
// IOTLB counters and RAM image (so every A/D bit either stage wrote).
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { createHost, PAGE_2M, PAGE_4K } from "../src/index.js";
import { createNaiveHost } from "../bench/naive/index.js";
import { attempt as outcome } from "./support/outcome.js";
import { baseStage1 } from "./support/guest.js";
import { mayMiss, params } from "./support/runs.js";
import { lockstep } from "./support/lockstep.js";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;
const RAM = 8 * 1024 * 1024;
const GUEST_PAGES = 64n; // guest RAM: GPA 0 .. 256 KiB, plus a 2 MiB page at GPA 2 MiB

type Op =
  | { t: "put"; page: number; slot: number; value: bigint }
  | { t: "s2unmap"; page: number }
  | { t: "s2map"; page: number; write: boolean }
  | { t: "s2inval"; all: boolean; page: number }
  | { t: "s1inval"; all: boolean; gva: bigint }
  | { t: "translate"; gva: bigint; access: "read" | "write" }
  | { t: "dma"; gva: bigint; len: number; write: boolean }
  // The last translation or DMA again, `shift` bytes on: the hit memo replays it (src/hitmemo.ts).
  | { t: "again"; shift: number };

interface Side { host: Any; s2: Any; nested: Any; base: bigint }

/** The switches of one scenario: stage 1's A/D (x86 with EAFE, Arm HA with HD) and stage 2's dirty tracking. */
interface Switches { s1ad: boolean; extra: boolean; s2ad: boolean }

async function setUp(make: (o: Any) => Promise<Any>, arm: boolean, sw: Switches): Promise<Side> {
  const host = await make({ ramSize: RAM, iotlb: { sets: 16, ways: 2 }, faultRingSize: 16 });
  const s2 = host.createDomain(arm
    ? { format: "arm64", stage: 2, inputBits: 40, physAddrWidth: 40, pageSizes: [PAGE_4K, PAGE_2M], accessedDirty: sw.s2ad }
    : { format: "vtd-sl", inputBits: 48, pageSizes: [PAGE_4K, PAGE_2M], accessedDirty: sw.s2ad });
  const run = host.ram.allocFrames(Number(PAGE_2M * 3n / PAGE_4K));
  const base = (run + PAGE_2M - 1n) & ~(PAGE_2M - 1n);
  s2.pageTable.map(0n, base, GUEST_PAGES * PAGE_4K, { read: true, write: true });
  s2.pageTable.map(PAGE_2M, base + PAGE_2M, PAGE_2M, { read: true, write: true });
  baseStage1((gpa, v) => host.ram.writeU64(base + gpa, v), arm);
  const extra = sw.s1ad && sw.extra;
  const nested = host.createDomain(arm
    ? { stage2: s2, format: "arm64", inputBits: 39, root: 0x1000n, accessedDirty: sw.s1ad, hd: extra }
    : { stage2: s2, format: "x86-64", root: 0x1000n, accessedDirty: sw.s1ad, eafe: extra });
  return { host, s2, nested, base };
}


function apply(side: Side, op: Op): unknown {
  const { host, s2, nested, base } = side;
  switch (op.t) {
    case "put": {
      // Written where the guest's page lives (through stage 2 as it is now; skipped if unmapped).
      const hpa = s2.pageTable.iovaToPhys(BigInt(op.page) * PAGE_4K + BigInt(op.slot) * 8n);
      if (hpa !== undefined) host.ram.writeU64(hpa, op.value);
      return hpa !== undefined;
    }
    case "s2unmap": return s2.pageTable.unmap(BigInt(op.page) * PAGE_4K, PAGE_4K);
    case "s2map": {
      // A remap with new rights: the page keeps its frame.
      const gpa = BigInt(op.page) * PAGE_4K;
      const bytes = s2.pageTable.unmap(gpa, PAGE_4K);
      return [bytes, outcome(() => s2.pageTable.map(gpa, base + gpa, PAGE_4K, { read: true, write: op.write }))];
    }
    case "s2inval": return op.all ? s2.invalidate() : s2.invalidate({ iova: BigInt(op.page) * PAGE_4K });
    case "s1inval": return op.all ? nested.invalidate() : nested.invalidate({ iova: op.gva & ~0xfffn });
    case "translate": return nested.translate(op.gva, op.access);
    case "dma": {
      if (!op.write) return nested.dma.read(op.gva, op.len);
      return nested.dma.write(op.gva, new Uint8Array(op.len).map((_, i) => (i * 13 + op.len) & 0xff));
    }
  }
}

// Entries: table pointers and leaves at guest pages, with x86 or Arm bits, and garbage.
const pageGpa = fc.integer({ min: 0, max: Number(GUEST_PAGES) + 8 }).map((p) => BigInt(p) * PAGE_4K);
// x86: with A, A/D, EA set already or not. Arm: with DBM (bit 51) over AP[2] read-only, with AF or without.
const x86Bits = fc.constantFrom(0x7n, 0x5n, 0x3n, 0x1n, 0x87n, 0x85n, 0x0n, 0x8000000000000007n, 0x67n, 0x427n, 0xa5n);
const armBits = fc.constantFrom(0x403n, 0x443n, 0x4c3n, 0x401n, 0x441n, 0x3n, 0x1n, 0x0n, 0x20000000000403n, 0x80000000004c3n, 0x80000000000c3n, 0x80000000004c1n);
const entry = (arm: boolean) => fc.oneof(
  { weight: 6, arbitrary: fc.tuple(pageGpa, arm ? armBits : x86Bits).map(([gpa, bits]) => gpa | bits) },
  { weight: 1, arbitrary: fc.constant(PAGE_2M | (arm ? 0x401n : 0x87n)) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) },
);
const gva = fc.oneof(
  // Mostly the 16 GVA pages the base table maps (to GPA pages 16..31).
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 0xffff }).map(BigInt) },
  fc.integer({ min: 0, max: 0x3ffff }).map(BigInt),
  fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 0x1fffff })).map(([hi, lo]) => (BigInt(hi) << 30n) | (BigInt(hi) << 21n) | BigInt(lo)),
);

const opArb = (arm: boolean): fc.Arbitrary<Op> => fc.oneof(
  { weight: 8, arbitrary: fc.record({ t: fc.constant("put" as const), page: fc.integer({ min: 1, max: 8 }), slot: fc.integer({ min: 0, max: 3 }), value: entry(arm) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("s2unmap" as const), page: fc.integer({ min: 0, max: Number(GUEST_PAGES) - 1 }) }) },
  // Data pages 16..31 and table pages 1..4 (read-only: no stage-1 A/D write there).
  { weight: 2, arbitrary: fc.record({ t: fc.constant("s2map" as const), page: fc.oneof(fc.integer({ min: 16, max: 31 }), fc.integer({ min: 1, max: 4 })), write: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("s2inval" as const), all: fc.boolean(), page: fc.integer({ min: 0, max: Number(GUEST_PAGES) - 1 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("s1inval" as const), all: fc.boolean(), gva }) },
  { weight: 8, arbitrary: fc.record({ t: fc.constant("translate" as const), gva, access: fc.constantFrom("read" as const, "write" as const) }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("dma" as const), gva, len: fc.integer({ min: 1, max: 5000 }), write: fc.boolean() }) },
  { weight: 6, arbitrary: fc.record({ t: fc.constant("again" as const), shift: fc.oneof({ weight: 6, arbitrary: fc.nat(64) }, { weight: 1, arbitrary: fc.constantFrom(4000, 4096) }) }) },
);

const seen = new Set<string>();

async function scenario(arm: boolean, sw: Switches, ops: Op[]): Promise<void> {
  const engine = await setUp(createHost, arm, sw);
  const twin = await setUp(createNaiveHost, arm, sw);
  lockstep(engine, twin, ops, apply, {
    again: (last, shift) => ({ ...(last as Extract<Op, { t: "translate" | "dma" }>), gva: (last as Extract<Op, { t: "translate" | "dma" }>).gva + BigInt(shift) }),
    repeatable: (op) => op.t === "translate" || op.t === "dma",
    seen, ramSize: RAM,
  });
}

describe("nested translation, engine vs twin", () => {
  for (const arm of [false, true]) {
    it(`${arm ? "arm64 stage 1 over stage 2" : "x86-64 over VT-d second level"}: random guest tables, stage-2 changes, invalidations, translations and DMA`, async () => {
      const switches = fc.record({ s1ad: fc.boolean(), extra: fc.boolean(), s2ad: fc.boolean() });
      await fc.assert(fc.asyncProperty(switches, fc.array(opArb(arm), { minLength: 10, maxLength: 60 }), (sw, ops) => scenario(arm, sw, ops)), params(60));
    }, 60_000);
  }

  it("exercised both stages' faults and translations", () => {
    const missed = ["translated", "not-present:1", "not-present:2", "permission:2"].filter((k) => !seen.has(k));
    expect(missed.length, `never met: ${missed.join(", ")}`).toBeLessThanOrEqual(mayMiss(4));
  });
});
