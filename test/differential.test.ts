// Differential tests: the engine (createHost) and its naive twin
// (bench/naive, createNaiveHost) run the same random operation sequences and
// must agree on everything observable — every return value and errno, every
// fault record, the IOTLB counters after each step, and at the end the whole
// RAM image, byte for byte.
//
// The sequences build page tables with map/unmap (4 KiB / 2 MiB / 1 GiB,
// x86-64 4- and 5-level, arm64 stage 1 and stage 2 with several input sizes,
// VT-d second level with 3, 4 and 5 levels, ggtt of 512 to 64 Ki entries), translate through a
// small IOTLB (so sets fill and evict), invalidate at every granularity or not
// at all (stale entries), move data by DMA and scatter-gather, write garbage
// entries and aliases into table pages, and walk the result. Churn maps a
// span in small pieces, unmaps it (whole or in other pieces) and maps it again
// in one call, so a large leaf takes the place of the tables the unmap emptied.
// "again" repeats the last translation or DMA a few bytes on, so most of
// those are hits the facade's memo replays without calling the engine.
//
// FC_SEED=<n> replays a seed, FC_RUNS=<n> sets the number of runs (test/support/runs.ts).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { createHost, PAGE_1G, PAGE_2M, PAGE_4K } from "../src/index.js";
import { createNaiveHost } from "../bench/naive/index.js";
import { pasidSlot } from "../bench/naive/iotlb.js";
import { attempt } from "./support/outcome.js";
import { expectSame, show } from "./support/compare.js";
import { seededBytes } from "./support/bytes.js";
import { mayMiss, params } from "./support/runs.js";


const RAM_SIZE = 8 * 1024 * 1024;
const RAM = BigInt(RAM_SIZE);
const U64_MAX = (1n << 64n) - 1n;
const STAGE_DATA = 1048576 - 4096 * 16;

// ---------------------------------------------------------------- the two sides
// Both hosts are driven by the same code; the twin mirrors the facade's
// surface, but its classes are distinct types (a twin domain takes a twin
// page table), so the driver holds them untyped.
type AnyHost = any; // eslint-disable-line @typescript-eslint/no-explicit-any
type AnyDomain = any; // eslint-disable-line @typescript-eslint/no-explicit-any

interface DomainSpec {
  format: "x86-64" | "arm64" | "vtd-sl" | "ggtt";
  levels?: 3 | 4 | 5;
  /** ggtt: the number of entries. */
  entries?: number;
  inputBits?: number;
  stage?: 1 | 2;
  physAddrWidth: number;
  pageSizes: readonly bigint[];
  nx?: boolean;
  sre?: boolean;
  wpe?: boolean;
  accessedDirty?: boolean;
  /** x86-64: EAFE (extended-accessed bit with A); only drawn with A/D on. */
  eafe?: boolean;
  /** arm64 stage 1: TCR.HD (DBM leaves); only drawn with accessedDirty. */
  hd?: boolean;
  /** Share the page table of an earlier domain (index) instead of creating one. */
  shareWith?: number;
}

interface Side {
  host: AnyHost;
  domains: (AnyDomain | undefined)[];
  frames: bigint[];
}



// ---------------------------------------------------------------- operations
type AccessArg = "read" | "write" | "exec" | { read?: boolean; write?: boolean; exec?: boolean; privileged?: boolean };
type BufKind = "plain" | "arena" | "ram";

type Op =
  | { t: "map"; d: number; iova: bigint; hpa: bigint; size: bigint; prot: { read?: boolean; write?: boolean; exec?: boolean; user?: boolean } }
  | { t: "unmap"; d: number; iova: bigint; size: bigint }
  | { t: "translate"; d: number; iova: bigint; access: AccessArg; pasid?: number }
  | { t: "batch"; d: number; iovas: bigint[]; access: AccessArg; pasid?: number; resident: boolean }
  | { t: "invalidate"; d: number; opts: Record<string, unknown> | "all" }
  | { t: "dma"; d: number; write: boolean; iova: bigint; len: number; pasid?: number; privileged: boolean; buf: BufKind; seed: number }
  | { t: "sg"; d: number; write: boolean; segs: { iova: bigint; length: number }[]; extra: number; pasid?: number; privileged: boolean; buf: BufKind; pairs: "objects" | "plain" | "resident"; seed: number }
  | { t: "garbage"; frame: number; index: number; value: bigint }
  | { t: "corrupt"; d: number; iova: bigint; depth: number; how: Corruption }
  | { t: "alias"; fromFrame: number; fromIndex: number; toFrame: number; toIndex: number }
  | { t: "ramWrite"; hpa: bigint; seed: number; len: number }
  | { t: "walk"; d: number; onTable: boolean; iova: bigint; access: AccessArg }
  | { t: "phys"; d: number; iova: bigint }
  | { t: "alloc"; count: number }
  | { t: "free"; pick: number; count: number }
  | { t: "drain" }
  | { t: "destroy"; d: number }
  | { t: "destroyTable"; d: number }
  | { t: "create"; spec: DomainSpec }
  // The last translate or DMA again, its iova moved by `shift` (mostly within the page): the hit memo replays it (src/hitmemo.ts).
  | { t: "again"; shift: number }
  | { t: "churn"; d: number; iova: bigint; hpa: bigint; pieces: number; unmap: "whole" | "pieces" | "partial"; remap: "span" | "1g"; prot: { write?: boolean } };

/** How an entry on a walk path is rewritten. */
type Corruption =
  | { k: "flip"; bits: number[] }
  | { k: "point"; to: "root" | "parent" | "self" | "outside" | "far" | "zero" }
  | { k: "raw"; value: bigint };

const ADDR_BITS = 0x000ffffffffff000n;

/** The entry at `depth` on the probe-walk path of iova (its address and the value to store there). */
function corrupt(domain: AnyDomain, iova: bigint, depth: number, how: Corruption): [bigint, bigint] | undefined {
  const steps: { entryAddress: bigint; entry: bigint }[] = domain.walk(iova).steps;
  if (steps.length === 0) return undefined;
  const step = steps[Math.min(depth, steps.length - 1)];
  const tableOf = (k: number): bigint => steps[Math.max(0, Math.min(k, steps.length - 1))].entryAddress & ~0xfffn;
  const old = step.entry;
  switch (how.k) {
    case "flip": return [step.entryAddress, how.bits.reduce((v, b) => v ^ (1n << BigInt(b)), old)];
    case "raw": return [step.entryAddress, how.value];
    case "point": {
      const k = steps.indexOf(step);
      const to = { root: tableOf(0), parent: tableOf(k - 1), self: tableOf(k), outside: RAM, far: 1n << 40n, zero: 0n }[how.to];
      return [step.entryAddress, (old & ~ADDR_BITS) | to];
    }
  }
}

const bytesFrom = seededBytes;

const CHURN_SPAN = 2n * PAGE_2M;

/**
 * Maps a 4 MiB span in `pieces` calls (so its leaves are small), unmaps it,
 * then maps the span (or its whole 1 GiB) in one call; every call's outcome
 * and the page size the remap left at the span's start.
 */
function churn(pt: AnyDomain, op: Extract<Op, { t: "churn" }>): unknown {
  const cuts = (n: number): bigint[] => Array.from({ length: n + 1 }, (_, k) => ((CHURN_SPAN / 4096n) * BigInt(k) / BigInt(n)) * 4096n);
  const mapCuts = cuts(op.pieces);
  const out: unknown[] = [];
  for (let k = 0; k < op.pieces; k++) {
    out.push(attempt(() => pt.map(op.iova + mapCuts[k], op.hpa + mapCuts[k], mapCuts[k + 1] - mapCuts[k], op.prot)));
  }
  if (op.unmap === "whole") out.push(attempt(() => pt.unmap(op.iova, CHURN_SPAN)));
  else {
    // Other cuts than the map's; "partial" leaves the last piece mapped, so its tables stay.
    const unmapCuts = cuts(op.pieces + 1);
    const n = op.unmap === "partial" ? op.pieces : op.pieces + 1;
    for (let k = 0; k < n; k++) out.push(attempt(() => pt.unmap(op.iova + unmapCuts[k], unmapCuts[k + 1] - unmapCuts[k])));
  }
  if (op.remap === "span") out.push(attempt(() => pt.map(op.iova, op.hpa, CHURN_SPAN, op.prot)));
  else out.push(attempt(() => pt.map(op.iova & ~(PAGE_1G - 1n), op.hpa & ~(PAGE_1G - 1n), PAGE_1G, op.prot)));
  const size = pt.walk(op.iova).pageSize;
  if (size !== undefined && size > PAGE_4K) stats.churnLarge++;
  return { out, size };
}

function specOf(specs: DomainSpec[], d: number): DomainSpec {
  const s = specs[d];
  return s.shareWith !== undefined ? specOf(specs, s.shareWith) : s;
}

/** Keeps 1 GiB-sized maps cheap: 2 MiB aligned, and only where 2 MiB leaves exist. */
function clampMap(op: Extract<Op, { t: "map" }>, spec: DomainSpec): Extract<Op, { t: "map" }> {
  if (op.size <= 8n << 20n) return op;
  if (!spec.pageSizes.includes(PAGE_2M)) return { ...op, size: 4n << 20n };
  const mask = ~(PAGE_2M - 1n);
  return { ...op, iova: op.iova & mask, hpa: op.hpa & mask };
}

/** A buffer of the given kind on this side, filled with `data` when given. */
function makeBuffer(side: Side, kind: BufKind, len: number, data?: Uint8Array): Uint8Array {
  let buf: Uint8Array;
  if (kind === "arena" && len > 0) buf = side.host.allocBuffer(len);
  else if (kind === "ram" && len > 0) buf = side.host.ram.view(RAM - 0x180000n - BigInt(len), len);
  else buf = new Uint8Array(len);
  if (data) buf.set(data);
  return buf;
}

function releaseBuffer(side: Side, kind: BufKind, buf: Uint8Array): void {
  if (kind === "arena" && buf.length > 0) side.host.freeBuffer(buf);
}

function apply(side: Side, specs: DomainSpec[], op: Op): unknown {
  const host = side.host;
  const dom = (d: number): AnyDomain => side.domains[d % side.domains.length];
  switch (op.t) {
    case "map": {
      const d = op.d % side.domains.length;
      const o = clampMap(op, specOf(specs, d));
      return dom(d) ? dom(d).pageTable.map(o.iova, o.hpa, o.size, o.prot) : "no domain";
    }
    case "unmap": return dom(op.d)?.pageTable.unmap(op.iova, op.size);
    case "churn": return dom(op.d) ? churn(dom(op.d).pageTable, op) : "no domain";
    case "translate": return dom(op.d)?.translate(op.iova, op.access, { pasid: op.pasid });
    case "batch": {
      const n = op.iovas.length;
      if (!dom(op.d)) return "no domain";
      if (op.resident) {
        const b = host.createTranslationBatch(n);
        b.iovas.set(op.iovas);
        const faults = dom(op.d).translateBatch(b.iovas, op.access, b.hpas, b.status, { pasid: op.pasid });
        const r = { faults, hpas: Array.from(b.hpas), status: Array.from(b.status) };
        host.freeTranslationBatch(b);
        return r;
      }
      const out = new BigUint64Array(n), status = new Uint8Array(n);
      const faults = dom(op.d).translateBatch(BigUint64Array.from(op.iovas), op.access, out, status, { pasid: op.pasid });
      return { faults, hpas: Array.from(out), status: Array.from(status) };
    }
    case "invalidate":
      if (op.opts === "all") return host.iotlb.invalidateAll();
      return dom(op.d)?.invalidate(op.opts);
    case "dma": {
      if (!dom(op.d)) return "no domain";
      const opts = { pasid: op.pasid, privileged: op.privileged };
      const data = op.write ? bytesFrom(op.seed, op.len) : undefined;
      const buf = makeBuffer(side, op.buf, op.len, data);
      try {
        if (op.write) return dom(op.d).dma.write(op.iova, buf, opts);
        if (op.buf === "plain") return dom(op.d).dma.read(op.iova, op.len, opts);
        const r = dom(op.d).dma.readInto(op.iova, buf, opts);
        return { ...r, target: buf.slice() };
      } finally {
        releaseBuffer(side, op.buf, buf);
      }
    }
    case "sg": {
      if (!dom(op.d)) return "no domain";
      const total = op.segs.reduce((n, s) => n + s.length, 0);
      const len = Math.max(0, total + op.extra);
      const buf = makeBuffer(side, op.buf, len, op.write ? bytesFrom(op.seed, len) : undefined);
      let pairs: unknown = op.segs;
      let pairMem: Uint8Array | undefined;
      if (op.pairs !== "objects") {
        const flat = op.segs.flatMap((s) => [s.iova, BigInt(s.length)]);
        if (op.pairs === "resident" && flat.length > 0) {
          const mem: Uint8Array = host.allocBuffer(flat.length * 8);
          pairMem = mem;
          const arr = new BigUint64Array(mem.buffer, mem.byteOffset, flat.length);
          arr.set(flat);
          pairs = arr;
        } else {
          pairs = BigUint64Array.from(flat);
        }
      }
      try {
        const r = dom(op.d).dma.sg(pairs, buf, { direction: op.write ? "write" : "read", pasid: op.pasid, privileged: op.privileged });
        return { ...r, buffer: buf.slice() };
      } finally {
        releaseBuffer(side, op.buf, buf);
        if (pairMem) host.freeBuffer(pairMem);
      }
    }
    case "corrupt": {
      const target = corrupt(dom(op.d), op.iova, op.depth, op.how);
      if (target) host.ram.writeU64(target[0], target[1]);
      return target;
    }
    case "garbage": return host.ram.writeU64(BigInt(op.frame) * 4096n + BigInt(op.index) * 8n, op.value);
    case "alias": {
      const value = host.ram.readU64(BigInt(op.fromFrame) * 4096n + BigInt(op.fromIndex) * 8n);
      host.ram.writeU64(BigInt(op.toFrame) * 4096n + BigInt(op.toIndex) * 8n, value);
      return value;
    }
    case "ramWrite": return host.ram.write(op.hpa, bytesFrom(op.seed, op.len));
    case "walk":
      if (!dom(op.d)) return "no domain";
      return op.onTable ? dom(op.d).pageTable.walk(op.iova, op.access) : dom(op.d).walk(op.iova, op.access);
    case "phys": return dom(op.d)?.pageTable.iovaToPhys(op.iova);
    case "alloc": {
      const hpa = host.ram.allocFrames(op.count);
      side.frames.push(hpa, BigInt(op.count));
      return hpa;
    }
    case "free": {
      if (side.frames.length === 0) return host.ram.freeFrames(BigInt(op.pick) * 4096n, op.count);
      const k = (op.pick % (side.frames.length / 2)) * 2;
      const hpa = side.frames[k];
      // count 0 frees the whole run allocated there; others may be refused (EINVAL).
      const count = op.count === 0 ? Number(side.frames[k + 1]) : op.count;
      host.ram.freeFrames(hpa, count);
      side.frames.splice(k, 2);
      return count;
    }
    case "drain": return host.faults.drain();
    case "destroy": return dom(op.d)?.destroy();
    case "destroyTable": return dom(op.d)?.pageTable.destroy();
    case "create": {
      const { shareWith, ...rest } = op.spec;
      const owner = shareWith !== undefined ? side.domains[shareWith] : undefined;
      const domain = owner ? host.createDomain({ ...rest, pageTable: owner.pageTable }) : host.createDomain(rest);
      side.domains.push(domain);
      return domain.id;
    }
  }
}




/** What a side looks like after every step, besides the step's own result. */
function observe(side: Side): unknown {
  const h = side.host;
  return { stats: h.iotlb.stats(), pending: h.faults.pending, overflow: h.faults.overflow, framesFree: h.ram.framesFree };
}

function expectSameRam(engine: Side, twin: Side): void {
  const a = engine.host.ram.view(0, RAM_SIZE) as Uint8Array;
  const b = twin.host.ram.view(0, RAM_SIZE) as Uint8Array;
  if (Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length))) return;
  let i = 0;
  while (a[i] === b[i]) i++;
  const at = i & ~7;
  expect.fail(`RAM differs first at 0x${i.toString(16)}: engine u64 0x${engine.host.ram.readU64(at).toString(16)}, twin 0x${twin.host.ram.readU64(at).toString(16)}`);
}

const stats = { runs: 0, ops: 0, errors: 0, faults: 0, evictions: 0, churnLarge: 0, seen: new Map<string, number>() };

/** Counts every fault reason and errno an engine outcome carries. */
function tally(value: unknown): void {
  if (!value || typeof value !== "object" || ArrayBuffer.isView(value)) return;
  const v = value as Record<string, unknown>;
  if (typeof v.reason === "string") stats.seen.set(v.reason, (stats.seen.get(v.reason) ?? 0) + 1);
  if (typeof v.error === "string") stats.seen.set(v.error, (stats.seen.get(v.error) ?? 0) + 1);
  for (const x of Object.values(v)) tally(x);
}

/** Runs one scenario on both sides, comparing after every step and at the end. */
async function runScenario(specs: DomainSpec[], ops: Op[], tlb: { sets: number; ways: number }): Promise<void> {
  const options = { ramSize: RAM_SIZE, iotlb: tlb, faultRingSize: 16, bufferArenaSize: 8 << 20 };
  const engine: Side = { host: await createHost(options), domains: [], frames: [] };
  const twin: Side = { host: await createNaiveHost(options), domains: [], frames: [] };
  const allSpecs: DomainSpec[] = [];
  const steps: Op[] = [...specs.map((spec): Op => ({ t: "create", spec })), ...ops];
  stats.runs++;
  let lastAccess: Extract<Op, { t: "translate" | "dma" }> | undefined;
  for (let n = 0; n < steps.length; n++) {
    let op = steps[n];
    if (op.t === "again") {
      if (!lastAccess) continue;
      op = { ...lastAccess, iova: (lastAccess.iova + BigInt(op.shift)) & U64_MAX };
    }
    if (op.t === "translate" || op.t === "dma") lastAccess = op;
    if (op.t === "create") {
      const spec = { ...op.spec };
      if (spec.shareWith !== undefined) spec.shareWith = allSpecs.length === 0 ? undefined : spec.shareWith % allSpecs.length;
      if (spec.shareWith !== undefined && !engine.domains[spec.shareWith]) spec.shareWith = undefined;
      op = { t: "create", spec };
      if (engine.domains.length >= 6) continue;
    } else if (engine.domains.length === 0) {
      if (op.t !== "garbage" && op.t !== "alias" && op.t !== "ramWrite" && op.t !== "alloc" && op.t !== "free" && op.t !== "drain") continue;
    }
    // A BuilderDivergence from the twin is its own assertion failing: it propagates and fails the run.
    const twinOut = attempt(() => apply(twin, allSpecs, op));
    const engineOut = attempt(() => apply(engine, allSpecs, op));
    stats.ops++;
    if ("error" in engineOut) stats.errors++;
    tally(engineOut);
    const where = `step ${n} ${show(op)}`;
    expectSame(twinOut, engineOut, where);
    if (op.t === "create" && "ok" in engineOut) allSpecs.push(op.spec);
    expectSame(observe(twin), observe(engine), `${where}: counters`);
  }
  const engineFaults = engine.host.faults.drain();
  stats.faults += engineFaults.length;
  tally(engineFaults);
  stats.evictions += engine.host.iotlb.stats().evictions;
  expectSame(twin.host.faults.drain(), engineFaults, "final fault records");
  expectSameRam(engine, twin);
}

// ---------------------------------------------------------------- generators
const pageSizesArb = fc.constantFrom([PAGE_4K], [PAGE_4K, PAGE_2M], [PAGE_4K, PAGE_2M, PAGE_1G], [PAGE_4K, PAGE_1G]);
const maybeBool = fc.option(fc.boolean(), { nil: undefined });

const x86Spec: fc.Arbitrary<DomainSpec> = fc.record({
  format: fc.constant("x86-64" as const),
  levels: fc.constantFrom(4 as const, 5 as const),
  physAddrWidth: fc.constantFrom(52, 46, 39, 36, 32),
  pageSizes: pageSizesArb,
  nx: fc.boolean(),
  sre: maybeBool, wpe: maybeBool, accessedDirty: maybeBool, eafe: fc.boolean(),
  shareWith: fc.option(fc.nat(5), { nil: undefined, freq: 4 }),
}).map((spec) => ({ ...spec, eafe: spec.eafe && spec.accessedDirty !== false }));

const armSpec: fc.Arbitrary<DomainSpec> = fc.record({
  format: fc.constant("arm64" as const),
  inputBits: fc.constantFrom(48, 42, 39, 36, 30, 25),
  physAddrWidth: fc.constantFrom(48, 44, 40, 36, 32),
  pageSizes: pageSizesArb,
  sre: maybeBool, wpe: maybeBool, accessedDirty: maybeBool, hd: fc.boolean(),
  shareWith: fc.option(fc.nat(5), { nil: undefined, freq: 4 }),
}).map((spec) => ({ ...spec, hd: spec.hd && spec.accessedDirty === true }));

const armS2Spec: fc.Arbitrary<DomainSpec> = armSpec.map(({ hd: _hd, ...spec }) => ({ ...spec, stage: 2 as const }));

const vtdSlSpec: fc.Arbitrary<DomainSpec> = fc.record({
  format: fc.constant("vtd-sl" as const),
  levels: fc.constantFrom(3 as const, 4 as const, 5 as const),
  physAddrWidth: fc.constantFrom(52, 46, 39, 36, 32),
  pageSizes: pageSizesArb,
  sre: maybeBool, wpe: maybeBool, accessedDirty: maybeBool,
  shareWith: fc.option(fc.nat(5), { nil: undefined, freq: 4 }),
});

// One level of 4 KiB entries, 39-bit output; from one page of entries to
// 64 Ki of them (half a MiB of the 8 MiB RAM), so maps past the end and
// input-range faults come up at the low anchors too.
const ggttSpec: fc.Arbitrary<DomainSpec> = fc.record({
  format: fc.constant("ggtt" as const),
  entries: fc.constantFrom(512, 1024, 4096, 1 << 16),
  physAddrWidth: fc.constant(39),
  pageSizes: fc.constant([PAGE_4K]),
  sre: maybeBool, wpe: maybeBool, accessedDirty: maybeBool,
  shareWith: fc.option(fc.nat(5), { nil: undefined, freq: 4 }),
});

const specArb = fc.oneof(x86Spec, armSpec, armS2Spec, vtdSlSpec, ggttSpec);

// Regions where maps land and translations look: low memory, 1 GiB and 4 GiB
// boundaries, the top of each input size, both x86 canonical halves.
const IOVA_ANCHORS = [
  0n, 0x200000n, 0x40000000n, 0x100000000n,
  (1n << 25n) - 0x400000n, (1n << 30n) - 0x400000n, (1n << 36n) - 0x400000n, (1n << 39n) - 0x400000n,
  (1n << 47n) - 0x400000n, 1n << 47n, (1n << 48n) - 0x400000n, (1n << 56n) - 0x400000n, (1n << 57n) - 0x400000n,
  0xffff800000000000n, 0xff00000000000000n, U64_MAX + 1n - 0x4000000n,
];
const pageOffsetArb = fc.oneof(
  { weight: 4, arbitrary: fc.nat(8) },
  { weight: 2, arbitrary: fc.nat(1100) },
  { weight: 1, arbitrary: fc.constantFrom(511, 512, 513, 1023, 1024) },
);
const iovaAnchorArb = fc.oneof(
  { weight: 5, arbitrary: fc.constantFrom(...IOVA_ANCHORS.slice(0, 3)) },
  { weight: 3, arbitrary: fc.constantFrom(...IOVA_ANCHORS) },
);
const pageIovaArb = fc.tuple(iovaAnchorArb, pageOffsetArb).map(([a, p]) => (a + BigInt(p) * 4096n) & U64_MAX);
const iovaArb = fc.oneof(
  { weight: 10, arbitrary: fc.tuple(pageIovaArb, fc.nat(4095)).map(([a, b]) => a + BigInt(b)) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: U64_MAX }) },
);

const HPA_ANCHORS = [
  0n, 0x100000n, 0x200000n, 0x400000n, 0x600000n, RAM - 0x2000n, RAM, 0x40000000n, 0x80000000n,
  1n << 32n, 1n << 36n, 1n << 40n, 1n << 47n, 1n << 51n,
];
const hpaArb = fc.oneof(
  { weight: 20, arbitrary: fc.tuple(fc.constantFrom(...HPA_ANCHORS), fc.oneof(fc.nat(16), fc.constantFrom(511, 512))).map(([a, p]) => a + BigInt(p) * 4096n) },
  { weight: 1, arbitrary: fc.constantFrom(0x1001n, U64_MAX + 1n - 0x1000n) },
);
const sizeArb = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(1, 2, 3, 8, 511, 512, 513, 1024).map((n) => BigInt(n) * 4096n) },
  { weight: 2, arbitrary: fc.constantFrom(PAGE_2M, 2n * PAGE_2M, PAGE_1G) },
  { weight: 1, arbitrary: fc.constantFrom(0n, 0x800n, U64_MAX + 1n - 0x1000n) },
);
// Unmap is cheap however wide the range (it only descends into present entries).
const unmapSizeArb = fc.oneof(
  { weight: 6, arbitrary: sizeArb },
  { weight: 1, arbitrary: fc.constantFrom(1n << 39n, 1n << 47n, 1n << 56n) },
);
const protArb = fc.record({ read: maybeBool, write: fc.boolean(), exec: fc.boolean(), user: maybeBool });
const accessArb: fc.Arbitrary<AccessArg> = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom<AccessArg>("read", "write", "exec") },
  { weight: 4, arbitrary: fc.record({ read: fc.boolean(), write: fc.boolean(), exec: fc.boolean(), privileged: fc.boolean() }) },
);

// PASIDs that share a flush slot with (context, 1) for the first few contexts,
// so a PASID flush of one also kills the other's entries in the engine.
const COLLIDING_PASIDS: number[] = [];
for (let ctx = 1; ctx <= 8; ctx++) {
  const slot = pasidSlot(ctx, 1);
  for (let p = 2, found = 0; p <= 0xfffff && found < 1; p++) if (pasidSlot(ctx, p) === slot) { COLLIDING_PASIDS.push(p); found++; }
  for (let other = 1; other <= 8; other++) {
    if (other === ctx) continue;
    for (let p = 0; p <= 0xfffff; p++) if (pasidSlot(other, p) === slot) { COLLIDING_PASIDS.push(p); break; }
  }
}
const pasidArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(undefined, 0, 1, 2) },
  { weight: 3, arbitrary: fc.constantFrom(...COLLIDING_PASIDS) },
  { weight: 1, arbitrary: fc.constantFrom(0xfffff, 0x100000, -1, 1.5) },
);

const frameArb = fc.oneof({ weight: 3, arbitrary: fc.nat(15) }, { weight: 1, arbitrary: fc.nat(80) });
const indexArb = fc.oneof(fc.constantFrom(0, 1, 255, 256, 511), fc.nat(511));
const FLAG_BITS = [0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 51, 52, 53, 54, 55, 59, 60, 61, 62, 63];
const entryArb = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(
    fc.oneof(fc.nat(40).map((f) => BigInt(f) << 12n), fc.constantFrom(RAM, RAM - 4096n, 1n << 36n, 1n << 40n, 1n << 47n, 1n << 51n, 0x40000000n)),
    fc.subarray(FLAG_BITS),
  ).map(([addr, bits]) => bits.reduce((v, b) => v | (1n << BigInt(b)), addr)) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: U64_MAX }) },
  { weight: 1, arbitrary: fc.constant(0n) },
);
const corruptionArb: fc.Arbitrary<Corruption> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ k: fc.constant("flip" as const), bits: fc.subarray([...FLAG_BITS, 12, 13, 20, 21, 29, 30, 32, 36, 40, 44, 47, 48, 51], { minLength: 1, maxLength: 3 }) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant("point" as const), to: fc.constantFrom("root" as const, "parent" as const, "self" as const, "outside" as const, "far" as const, "zero" as const) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("raw" as const), value: entryArb }) },
);
const bufArb = fc.constantFrom<BufKind>("plain", "arena", "ram");
const lenArb = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom(0, 1, 8, 100, 4095, 4096, 4097, 8192, 12288 + 5) },
  { weight: 1, arbitrary: fc.constantFrom(STAGE_DATA - 5, STAGE_DATA + 4097) },
);

const d = fc.nat(5);
const againArb: fc.Arbitrary<Op> = fc.record({ t: fc.constant("again" as const), shift: fc.oneof({ weight: 6, arbitrary: fc.nat(64) }, { weight: 1, arbitrary: fc.constantFrom(-8, 4000, 4096) }) });
const opArb = (w: { build: number; garbage: number }): fc.Arbitrary<Op> => fc.oneof(
  { weight: 6 * w.build, arbitrary: fc.record({ t: fc.constant("map" as const), d, iova: pageIovaArb, hpa: hpaArb, size: sizeArb, prot: protArb }) },
  { weight: 2 * w.build, arbitrary: fc.record({ t: fc.constant("unmap" as const), d, iova: pageIovaArb, size: unmapSizeArb }) },
  { weight: 1 * w.build, arbitrary: fc.record({
    t: fc.constant("churn" as const), d, iova: iovaAnchorArb, hpa: fc.constantFrom(0n, 0x200000n, 0x400000n, 0x40000000n, 0x80000000n),
    pieces: fc.constantFrom(1, 2, 3, 7, 16), unmap: fc.constantFrom("whole" as const, "pieces" as const, "partial" as const),
    remap: fc.constantFrom("span" as const, "span" as const, "1g" as const), prot: fc.record({ write: fc.boolean() }),
  }) },
  { weight: 100, arbitrary: fc.record({ t: fc.constant("translate" as const), d, iova: iovaArb, access: accessArb, pasid: pasidArb }) },
  { weight: 30, arbitrary: fc.record({ t: fc.constant("batch" as const), d, iovas: fc.array(iovaArb, { maxLength: 40 }), access: accessArb, pasid: pasidArb, resident: fc.boolean() }) },
  { weight: 40, arbitrary: fc.record({
    t: fc.constant("invalidate" as const), d,
    opts: fc.oneof(
      fc.constant("all" as const),
      fc.constant({}),
      fc.record({ pasid: pasidArb }),
      fc.record({ iova: pageIovaArb, npages: fc.option(fc.constantFrom(1n, 2n, 511n, 512n, 513n, 1n << 18n, 1n << 40n), { nil: undefined }), pasid: pasidArb, leaf: maybeBool }),
      fc.constantFrom<Record<string, unknown>>({ npages: 1 }, { iova: 0x1001n }, { iova: 0n, npages: 0n }, { iova: U64_MAX + 1n - 0x1000n, npages: 2n }, { iova: 0n, npages: 1n << 53n }),
    ),
  }) },
  { weight: 40, arbitrary: fc.record({ t: fc.constant("dma" as const), d, write: fc.boolean(), iova: iovaArb, len: lenArb, pasid: pasidArb, privileged: fc.boolean(), buf: bufArb, seed: fc.nat() }) },
  { weight: 40, arbitrary: againArb },
  { weight: 30, arbitrary: fc.record({
    t: fc.constant("sg" as const), d, write: fc.boolean(),
    segs: fc.array(fc.record({ iova: iovaArb, length: fc.oneof(fc.nat(9000), fc.constantFrom(0, 4096)) }), { maxLength: 5 }),
    extra: fc.oneof({ weight: 50, arbitrary: fc.nat(16) }, { weight: 10, arbitrary: fc.constant(-1) }),
    pasid: pasidArb, privileged: fc.boolean(), buf: bufArb, pairs: fc.constantFrom("objects" as const, "plain" as const, "resident" as const), seed: fc.nat(),
  }) },
  { weight: 3 * w.garbage, arbitrary: fc.record({ t: fc.constant("garbage" as const), frame: frameArb, index: indexArb, value: entryArb }) },
  { weight: 4 * w.garbage, arbitrary: fc.record({ t: fc.constant("corrupt" as const), d, iova: pageIovaArb, depth: fc.nat(4), how: corruptionArb }) },
  { weight: 1 * w.garbage, arbitrary: fc.record({ t: fc.constant("alias" as const), fromFrame: frameArb, fromIndex: indexArb, toFrame: frameArb, toIndex: indexArb }) },
  { weight: 10, arbitrary: fc.record({ t: fc.constant("ramWrite" as const), hpa: fc.oneof(fc.nat(0x40000).map(BigInt), fc.constantFrom(RAM - 8n, RAM - 4n, RAM)), seed: fc.nat(), len: fc.nat(64) }) },
  { weight: 30, arbitrary: fc.record({ t: fc.constant("walk" as const), d, onTable: fc.boolean(), iova: iovaArb, access: accessArb }) },
  { weight: 10, arbitrary: fc.record({ t: fc.constant("phys" as const), d, iova: iovaArb }) },
  { weight: 10, arbitrary: fc.record({ t: fc.constant("alloc" as const), count: fc.constantFrom(1, 2, 16, 300, 1500, 3000) }) },
  { weight: 10, arbitrary: fc.record({ t: fc.constant("free" as const), pick: fc.nat(100), count: fc.constantFrom(0, 0, 1, 2) }) },
  { weight: 20, arbitrary: fc.constant({ t: "drain" as const }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("destroy" as const), d }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("destroyTable" as const), d }) },
  { weight: 10, arbitrary: fc.record({ t: fc.constant("create" as const), spec: specArb }) },
);

const tlbArb = fc.record({ sets: fc.constantFrom(16, 32), ways: fc.constantFrom(1, 2, 2, 4) });

// ---------------------------------------------------------------- properties
/** Maps at IOVA 0 and 2 MiB in the first domains, so walks and corruptions meet real tables. */
function basicMaps(domains: number): Op[] {
  const ops: Op[] = [];
  for (let dd = 0; dd < domains; dd++) {
    ops.push({ t: "map", d: dd, iova: 0n, hpa: 0x100000n + BigInt(dd) * 0x40000n, size: 64n * 4096n, prot: { write: dd !== 1, user: true, exec: dd === 2 } });
    ops.push({ t: "map", d: dd, iova: 0x200000n, hpa: 0x200000n * BigInt(dd + 1), size: 2n * PAGE_2M, prot: { write: true, user: dd !== 2 } });
  }
  return ops;
}

describe("engine and naive twin agree", () => {
  it("on page tables built by map/unmap, translations, invalidations and DMA", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(specArb, { minLength: 1, maxLength: 3 }), fc.array(opArb({ build: 10, garbage: 0 }), { maxLength: 90, size: "max" }), tlbArb,
        (specs, ops, tlb) => runScenario(specs, ops, tlb)),
      params(300),
    );
  });

  it("on tables with garbage entries, aliases and cycles", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(specArb, { minLength: 1, maxLength: 3 }), fc.array(opArb({ build: 6, garbage: 20 }), { maxLength: 90, size: "max" }), tlbArb,
        (specs, ops, tlb) => runScenario(specs, [...basicMaps(specs.length), ...ops], tlb)),
      params(350),
    );
  });

  it("on an IOTLB under pressure: dense mappings, many PASIDs, stale entries", async () => {
    const hotIova = fc.tuple(fc.constantFrom(0n, 0x200000n, 0x400000n), fc.nat(70), fc.nat(4095)).map(([a, p, o]) => a + BigInt(p) * 4096n + BigInt(o));
    const hotOp: fc.Arbitrary<Op> = fc.oneof(
      { weight: 10, arbitrary: fc.record({ t: fc.constant("translate" as const), d, iova: hotIova, access: accessArb, pasid: pasidArb }) },
      { weight: 3, arbitrary: fc.record({ t: fc.constant("batch" as const), d, iovas: fc.array(hotIova, { maxLength: 64 }), access: accessArb, pasid: pasidArb, resident: fc.boolean() }) },
      { weight: 2, arbitrary: fc.record({ t: fc.constant("unmap" as const), d, iova: hotIova.map((a) => a & ~0xfffn), size: fc.constantFrom(4096n, 8192n, PAGE_2M) }) },
      { weight: 2, arbitrary: fc.record({ t: fc.constant("map" as const), d, iova: hotIova.map((a) => a & ~0xfffn), hpa: hpaArb, size: fc.constantFrom(4096n, 8192n), prot: protArb }) },
      { weight: 3, arbitrary: opArb({ build: 0, garbage: 0 }).filter((o) => o.t === "invalidate") },
      { weight: 2, arbitrary: fc.record({ t: fc.constant("dma" as const), d, write: fc.boolean(), iova: hotIova, len: lenArb, pasid: pasidArb, privileged: fc.boolean(), buf: bufArb, seed: fc.nat() }) },
      { weight: 1, arbitrary: fc.record({ t: fc.constant("sg" as const), d, write: fc.boolean(), segs: fc.array(fc.record({ iova: hotIova, length: fc.nat(6000) }), { maxLength: 6 }), extra: fc.nat(8), pasid: pasidArb, privileged: fc.boolean(), buf: bufArb, pairs: fc.constantFrom("objects" as const, "plain" as const, "resident" as const), seed: fc.nat() }) },
      { weight: 1, arbitrary: fc.constant({ t: "drain" as const }) },
      { weight: 8, arbitrary: againArb },
    );
    // Only well-formed tables with every page size, so most translations succeed and compete for ways.
    const x86Plain = fc.record({
      format: fc.constant("x86-64" as const), levels: fc.constantFrom(4 as const, 5 as const), physAddrWidth: fc.constant(52),
      pageSizes: fc.constant([PAGE_4K, PAGE_2M, PAGE_1G]), nx: fc.boolean(), sre: maybeBool, wpe: maybeBool, accessedDirty: maybeBool, eafe: fc.boolean(),
    }).map((spec) => ({ ...spec, eafe: spec.eafe && spec.accessedDirty !== false }));
    const armPlain = fc.record({
      format: fc.constant("arm64" as const), inputBits: fc.constant(48), stage: fc.constantFrom(1 as const, 2 as const), physAddrWidth: fc.constant(48),
      pageSizes: fc.constant([PAGE_4K, PAGE_2M, PAGE_1G]), sre: maybeBool, wpe: maybeBool, accessedDirty: maybeBool,
    });
    const vtdPlain = fc.record({
      format: fc.constant("vtd-sl" as const), levels: fc.constantFrom(3 as const, 4 as const, 5 as const), physAddrWidth: fc.constant(52),
      pageSizes: fc.constant([PAGE_4K, PAGE_2M, PAGE_1G]), sre: maybeBool, wpe: maybeBool, accessedDirty: maybeBool,
    });
    await fc.assert(
      fc.asyncProperty(fc.array(fc.oneof(x86Plain, armPlain, vtdPlain), { minLength: 3, maxLength: 3 }), fc.array(hotOp, { maxLength: 120, size: "max" }), tlbArb,
        (specs, ops, tlb) => runScenario(specs, [...basicMaps(3), ...ops], tlb)),
      params(120),
    );
  });

  it("exercised what it claims to", () => {
    // The properties above ran long sequences and met every fault reason a
    // stage-1 walk or DMA can report, every errno of the calls, and evictions.
    if (process.env.DIFF_STATS) console.log(stats);
    expect(stats.ops).toBeGreaterThan(stats.runs * 20);
    expect(stats.evictions).toBeGreaterThan(0);
    // Churn remapped over emptied tables with a large leaf.
    expect(stats.churnLarge).toBeGreaterThan(0);
    const reasons = ["not-present", "permission", "reserved-bit", "non-canonical", "table-outside-ram", "table-cycle",
      "output-outside-ram", "access-flag", "address-size", "input-range"];
    const errnos = ["EINVAL", "EEXIST", "ENOMEM", "EFAULT", "EOVERFLOW", "ENODEV"];
    const missed = [...reasons, ...errnos].filter((r) => !stats.seen.has(r));
    expect(missed.length, `never met: ${missed.join(", ")}`).toBeLessThanOrEqual(mayMiss(reasons.length + errnos.length));
  });
});
