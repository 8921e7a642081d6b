// The IOVA allocator (src/dmaapi/iova.ts) and its rcache (src/dmaapi/rcache.ts)
// against Linux v6.17-rc4 iova.c: hand-checked examples worked out from the
// kernel's code (the top-down walk from the cached node, its retry, the
// max32_alloc_size hint, reserve_iova's merge, alloc_iova_fast's rounding, the
// magazines), then the naive twin (bench/naive/iova.ts, the kernel's walk
// transcribed over a sorted array) over random programs — every result, errno,
// node, magazine and hint must be the twin's — with the invariants checked
// after every step (no overlap, within the limit, aligned, never below the
// start pfn or in a reserved range, refusals change nothing) and the tree's
// own (checkTree: order, balance, links, gaps, rooms). Deep trees (thousands
// of ranges) against the twin, and 20,000 ranges churned against the tree's
// own invariants, reach every rebalancing path.
//
// FC_SEED=<n> replays a seed, FC_RUNS=<n> sets the number of runs (test/support/runs.ts).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DMA_32BIT_PFN, IOVA_MAX_PFN, IovaDomain, type IovaSnapshot } from "../src/dmaapi/iova.js";
import { IOVA_MAG_SIZE, IovaRcache, orderBase2 } from "../src/dmaapi/rcache.js";
import { NaiveIovaDomain } from "../bench/naive/iova.js";
import { attempt, errno } from "./support/outcome.js";
import { atLeast, params } from "./support/runs.js";

const TOP32 = DMA_32BIT_PFN - 1; // the highest pfn below 4 GiB: a 32-bit DMA mask's limit
const pow2 = (n: number): number => 2 ** orderBase2(n);
const fastLength = (n: number): number => (n < 32 ? pow2(n) : n);

describe("IOVA allocator: the kernel's addresses (iova.c, worked by hand)", () => {
  it("hands out the top of the space below the limit first, aligned to the size's power of two", () => {
    const d = new IovaDomain();
    expect(d.alloc(1, TOP32, true)).toBe(0xfffffn);
    const e = new IovaDomain();
    // (0x100000 − 3) & ~3: three granules aligned to four; the length stays three.
    expect(e.alloc(3, TOP32, true)).toBe(0xffffcn);
    expect(e.find(0xffffe)).toEqual({ lo: 0xffffcn, hi: 0xffffen, state: "allocated" });
    expect(e.find(0xfffff)).toBeUndefined();
    // Below the cached node (the last allocation): (0xffffc − 8) & ~7.
    expect(e.alloc(8, TOP32, true)).toBe(0xffff0n);
    // 64-bit limits use the other cached node: the top of the 64-bit space.
    expect(e.alloc(1, IOVA_MAX_PFN, true)).toBe(BigInt(IOVA_MAX_PFN));
    expect(e.alloc(2, IOVA_MAX_PFN, true)).toBe(BigInt(IOVA_MAX_PFN - 3)); // (2^52 − 3) & ~1
  });

  it("walks down from the cached node: a hole above it waits for the retry", () => {
    const d = new IovaDomain();
    expect(d.alloc(3, TOP32, true)).toBe(0xffffcn);
    expect(d.alloc(8, TOP32, true)).toBe(0xffff0n);
    // Free are 0xffff8..0xffffb and 0xfffff, above the cached node; the walk
    // starts below it (the highest fit would be 0xffff9).
    expect(d.alloc(3, TOP32, false)).toBe(0xfffedn);
    expect(d.hints().cached32Node).toBe(0xfffedn);

    // The retry: nothing fits below the cached node, so the part above it is searched.
    const r = new IovaDomain({ startPfn: 0xfffe0 });
    for (const want of [0xfffff, 0xffffe, 0xffffd, 0xffffc]) expect(r.alloc(1, TOP32, true)).toBe(BigInt(want));
    r.free(0xffffe); // above the cached node: cached32 moves to rb_next(freed), 0xfffff
    expect(r.hints().cached32Node).toBe(0xfffffn);
    expect(r.alloc(2, TOP32, true)).toBe(0xffffan); // one granule free at 0xffffe: too small
    expect(r.alloc(1, TOP32, true)).toBe(0xffff9n); // below the new cached node, not 0xffffe
    for (let p = 0xffff8; p >= 0xfffe0; p--) expect(r.alloc(1, TOP32, true)).toBe(BigInt(p));
    expect(r.alloc(1, TOP32, true)).toBe(0xffffen); // the retry finds the hole
    expect(r.alloc(1, TOP32, true)).toBeUndefined();
    expect(r.hints().max32AllocSize).toBe(1n);
  });

  it("max32_alloc_size: a failed size fails at once for 32-bit limits until a free below 4 GiB", () => {
    const d = new IovaDomain({ startPfn: 0xffff0 });
    for (let i = 0; i < 4; i++) expect(d.alloc(4, TOP32, true)).toBe(BigInt(0xffffc - 4 * i));
    expect(d.alloc(2, TOP32, true)).toBeUndefined();
    expect(d.hints().max32AllocSize).toBe(2n);
    // A 64-bit limit is not held back, and its failure sets the hint too.
    expect(d.alloc(2, IOVA_MAX_PFN, true)).toBe(BigInt(IOVA_MAX_PFN - 1));
    d.free(0xffff4); // pfn_lo below 4 GiB: the hint resets
    expect(d.hints().max32AllocSize).toBe(BigInt(DMA_32BIT_PFN));
    expect(d.alloc(2, TOP32, true)).toBe(0xffff6n);
  });

  it("never hands out page 0 nor anything below the start pfn; an exhausted space returns nothing and changes no range", () => {
    expect(errno(() => new IovaDomain({ startPfn: 0 }))).toBe("EINVAL");
    const d = new IovaDomain();
    expect(d.alloc(1, 1, false)).toBe(1n);
    expect(d.alloc(1, 1, false)).toBeUndefined();
    // The kernel's max32_alloc_size at work: a failed one-granule request below
    // 4 GiB (limit 0) makes every later one fail at once, although pfn 1 is free,
    // until something below 4 GiB is freed.
    const z = new IovaDomain();
    expect(z.alloc(1, 0, false)).toBeUndefined();
    expect(z.alloc(1, 1, false)).toBeUndefined();
    expect(z.alloc(1, TOP32, false)).toBeUndefined();
    expect(z.alloc(1, IOVA_MAX_PFN, false)).toBe(BigInt(IOVA_MAX_PFN));
    const e = new IovaDomain();
    expect(e.alloc(7, 7, false)).toBe(1n);
    const before = e.ranges();
    expect(e.alloc(1, 7, false)).toBeUndefined();
    expect(e.alloc(8, 7, false)).toBeUndefined();
    expect(e.allocFast(1, 7, true)).toBeUndefined();
    expect(e.ranges()).toEqual(before);
    // Sizes and pfns past the 64-bit space are refused.
    expect(errno(() => e.alloc(0, 7, false))).toBe("EINVAL");
    expect(errno(() => e.alloc(1, IOVA_MAX_PFN + 1, false))).toBe("EINVAL");
    expect(errno(() => e.alloc(1.5, 7, false))).toBe("EINVAL");
  });

  it("reserve: never handed out; overlapping reservations merge as reserve_iova merges them", () => {
    const d = new IovaDomain();
    d.reserve(0xfee00, 0xfeeff); // the x86 MSI window, 0xfee00000..0xfeefffff
    const got: bigint[] = [];
    for (let i = 0; i < 18; i++) got.push(d.alloc(0x100, TOP32, true)!);
    expect(got[16]).toBe(0xfef00n);
    expect(got[17]).toBe(0xfed00n);
    for (const p of got) expect(p + 0xffn < 0xfee00n || p > 0xfeeffn).toBe(true);
    expect(errno(() => d.free(0xfee10))).toBe("EINVAL");

    const m = new IovaDomain();
    m.reserve(10, 19);
    m.reserve(30, 39);
    m.reserve(5, 45);
    expect(m.ranges().map((r) => [r.lo, r.hi])).toEqual([[5n, 19n], [20n, 39n], [40n, 45n]]);
    m.reserve(21, 22); // inside one: nothing new
    expect(m.ranges()).toHaveLength(3);
    // Over an allocated range: EBUSY, nothing changed; lo > hi: EINVAL.
    const p = m.alloc(4, 100, true)!;
    const before = m.snapshot();
    expect(errno(() => m.reserve(p + 1n, p + 10n))).toBe("EBUSY");
    expect(errno(() => m.reserve(60, 50))).toBe("EINVAL");
    expect(m.snapshot()).toEqual(before);
  });

  it("free of anything not handed out is EINVAL with nothing changed", () => {
    const d = new IovaDomain();
    const a = d.alloc(4, TOP32, true)!;
    const b = d.allocFast(1, TOP32, false)!;
    d.freeFast(b, 1);
    const before = d.snapshot();
    expect(errno(() => d.free(0x1234))).toBe("EINVAL"); // free space
    expect(errno(() => d.free(b))).toBe("EINVAL"); // in the rcache
    expect(errno(() => d.freeFast(b, 1))).toBe("EINVAL"); // twice
    expect(errno(() => d.freeFast(a + 1n, 4))).toBe("EINVAL"); // not its first pfn
    expect(errno(() => d.freeFast(a, 2))).toBe("EINVAL"); // not its size
    expect(d.snapshot()).toEqual(before);
    d.free(a + 3n); // free_iova takes any pfn of the range
    expect(d.find(a)).toBeUndefined();
  });
});

describe("IOVA allocator: alloc_iova_fast, free_iova_fast and the rcache", () => {
  it("the most recently freed range of a size comes back first, within the limit", () => {
    const d = new IovaDomain();
    const a = d.allocFast(1, TOP32, true)!;
    const b = d.allocFast(1, TOP32, true)!;
    expect([a, b]).toEqual([0xfffffn, 0xffffen]);
    d.freeFast(a, 1);
    d.freeFast(b, 1);
    expect(d.stats()).toMatchObject({ allocated: 0, cached: 2 });
    expect(d.ranges()).toHaveLength(2); // cached ranges stay in the tree
    expect(d.allocFast(1, TOP32, true)).toBe(b);
    expect(d.allocFast(1, TOP32, true)).toBe(a);
    d.freeFast(a, 1);
    d.freeFast(b, 1);
    // The search goes down from the top of `loaded` for a pfn within the limit.
    expect(d.allocFast(1, 0xffffe, true)).toBe(b);
    // Only a is left, above the limit: a miss, and the tree gives the next free granule.
    expect(d.allocFast(1, 0xffffe, true)).toBe(0xffffdn);
    expect(d.stats()).toMatchObject({ rcacheHits: 3, rcacheMisses: 3, cached: 1 });
  });

  it("rounds sizes below 32 up to a power of two, aligns every size, and caches orders 0..5 only", () => {
    const d = new IovaDomain();
    const p = d.allocFast(3, TOP32, false)!;
    expect(p).toBe(0xffffcn);
    expect(d.find(p)).toEqual({ lo: 0xffffcn, hi: 0xfffffn, state: "allocated" });
    d.freeFast(p, 3); // the caller's size: order_base_2(3) = 2, the same order
    expect(d.allocFast(4, TOP32, false)).toBe(p);
    // 33 granules: not rounded, aligned to 64, below the cached node (the tree's
    // last placement, 0xffffc: the rcache hit did not move it): (0xffffc − 33) & ~63.
    const q = d.allocFast(33, TOP32, false)!;
    expect(q).toBe(0xfffc0n);
    expect(d.find(q)!.hi).toBe(q + 32n);
    d.freeFast(q, 33); // order 6: straight back to the tree
    expect(d.find(q)).toBeUndefined();
    expect(d.stats().cached).toBe(0);
  });

  it("a failed allocation with flush_rcache gives the cached ranges back and tries once more", () => {
    const d = new IovaDomain({ startPfn: 0xffff8 });
    expect(d.allocFast(4, TOP32, false)).toBe(0xffffcn);
    expect(d.allocFast(4, TOP32, false)).toBe(0xffff8n);
    d.freeFast(0xffffc, 4);
    expect(d.allocFast(2, TOP32, false)).toBeUndefined();
    expect(d.stats()).toMatchObject({ allocated: 1, cached: 1 });
    expect(d.allocFast(2, TOP32, true)).toBe(0xffffen);
    expect(d.stats()).toMatchObject({ allocated: 2, cached: 0 });
  });

  it("magazines: 127 pfns, loaded then prev then the depot; the depot is trimmed to one magazine from its head", () => {
    const released: number[] = [];
    const rc = new IovaRcache((pfn) => released.push(pfn));
    const M = IOVA_MAG_SIZE;
    for (let i = 1; i <= 2 * M; i++) rc.insert(i, 1);
    let c = rc.contents()[0]!;
    expect([c.loaded.length, c.prev.length, c.depot.length]).toEqual([M, M, 0]);
    expect(c.loaded[0]).toBe(M + 1); // the first full magazine was swapped into prev
    rc.insert(1000, 1); // both full: loaded goes to the depot
    c = rc.contents()[0]!;
    expect([c.loaded, c.prev.length, c.depot.length]).toEqual([[1000], M, 1]);
    for (let i = 1; i < M; i++) rc.insert(1000 + i, 1);
    rc.insert(2000, 1); // a second depot magazine: the trim frees the head, the one just pushed
    expect(released).toEqual(Array.from({ length: M }, (_, i) => 1000 + i));
    c = rc.contents()[0]!;
    expect([c.loaded, c.depot.length]).toEqual([[2000], 1]);
    expect(rc.count()).toBe(1 + 2 * M);
    // get: top of loaded first; an empty loaded takes prev, then the depot's head.
    expect(rc.get(1, 1e9)).toBe(2000);
    expect(rc.get(1, 1e9)).toBe(M);
    expect(rc.get(1, 0)).toBe(0);
    expect(rc.insert(5, 64)).toBe(false); // order 6
    // flush: per order loaded, prev; then the depots.
    released.length = 0;
    rc.flush();
    expect(released).toHaveLength(2 * M - 1);
    expect(rc.count()).toBe(0);
  });
});

// ---------------------------------------------------------------- differential

type Op =
  | { kind: "alloc"; size: number; limit: number; aligned: boolean }
  | { kind: "allocFast"; size: number; limit: number; flush: boolean }
  | { kind: "free"; pick: number; bogus: number | null; offset: number }
  | { kind: "freeFast"; pick: number; bogus: number | null; sizeDelta: number }
  | { kind: "reserve"; lo: number; len: number }
  | { kind: "flush" }
  | { kind: "find"; pfn: number }
  | { kind: "burst"; count: number; size: number; order: number };

/** A small space around `base`: limits just below, across and above it (or the 64-bit top). */
interface World {
  start: number;
  base: number;
  span: number;
  /** Reservations made before the program (confining the space). */
  fence: [number, number][];
}

const worlds: fc.Arbitrary<World> = fc.oneof(
  // Near zero: 32-bit limits only, start pfn 1..4; the 64-bit space is wide open.
  fc.record({ start: fc.integer({ min: 1, max: 4 }), base: fc.constant(0), span: fc.constant(300), fence: fc.constant([] as [number, number][]) }),
  // Across 4 GiB: 256 granules straddling DMA_32BIT_PFN, the rest reserved, so
  // both cached nodes, max32_alloc_size and exhaustion all come into play.
  fc.integer({ min: 1, max: 4 }).map((start) => {
    const base = DMA_32BIT_PFN - 128;
    return { start, base, span: 256, fence: [[start, base - 1], [DMA_32BIT_PFN + 128, IOVA_MAX_PFN]] as [number, number][] };
  }),
);

function ops(world: World): fc.Arbitrary<Op[]> {
  const limit = fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: -8, max: world.span + 8 }).map((r) => Math.max(0, world.base + r)) },
    { weight: 1, arbitrary: fc.constantFrom(TOP32, TOP32 + 1, IOVA_MAX_PFN) },
  );
  const size = fc.oneof({ weight: 5, arbitrary: fc.integer({ min: 1, max: 8 }) }, { weight: 2, arbitrary: fc.integer({ min: 1, max: 70 }) });
  const pfn = fc.integer({ min: 0, max: world.span + 16 }).map((r) => world.base + r);
  const rarely = (a: fc.Arbitrary<number>): fc.Arbitrary<number | null> => fc.oneof({ weight: 7, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: a });
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 6, arbitrary: fc.record({ kind: fc.constant("alloc" as const), size, limit, aligned: fc.boolean() }) },
    { weight: 8, arbitrary: fc.record({ kind: fc.constant("allocFast" as const), size, limit, flush: fc.boolean() }) },
    { weight: 4, arbitrary: fc.record({ kind: fc.constant("free" as const), pick: fc.nat(), bogus: rarely(pfn), offset: fc.nat({ max: 3 }) }) },
    { weight: 6, arbitrary: fc.record({ kind: fc.constant("freeFast" as const), pick: fc.nat(), bogus: rarely(pfn), sizeDelta: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -2, max: 2 }) }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("reserve" as const), lo: pfn, len: fc.integer({ min: 1, max: 24 }) }) },
    { weight: 1, arbitrary: fc.constant({ kind: "flush" as const }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("find" as const), pfn }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("burst" as const), count: fc.integer({ min: 1, max: 420 }), size: fc.constantFrom(1, 2, 3), order: fc.nat() }) },
  );
  return fc.array(op, { minLength: 1, maxLength: 80, size: "max" });
}

/** What the test remembers of a live allocation, to check its invariants. */
interface Held { pfn: bigint; asked: number; length: number; limit: number; align: number }

type Side = IovaDomain | NaiveIovaDomain;

/** Snapshots compared as text first (fast), structurally on a difference (a readable diff). */
const text = (v: unknown): string => JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? `${x}n` : x));
function expectSameState(a: IovaSnapshot, b: IovaSnapshot, what: string): void {
  if (text(a) !== text(b)) expect(a, what).toEqual(b);
}

const seen = { refused: 0, exhausted: 0, rcacheHits: 0, depotTrims: 0, retries: 0, max32Fast: 0, reservedMerges: 0 };

function checkInvariants(snap: IovaSnapshot, held: Held[], reserved: [number, number][], start: number): void {
  // Plain checks, expect() only on a failure: this runs after every step.
  const bad = (msg: string): never => expect.fail(msg);
  const r = snap.ranges;
  for (let i = 0; i < r.length; i++) {
    if (r[i]!.lo > r[i]!.hi) bad(`node ${r[i]!.lo}..${r[i]!.hi} is empty`);
    if (i > 0 && r[i - 1]!.hi >= r[i]!.lo) bad(`nodes overlap: ..${r[i - 1]!.hi} / ${r[i]!.lo}..`);
  }
  let pfns = 0n;
  for (const h of held) {
    const end = h.pfn + BigInt(h.length) - 1n;
    if (h.pfn < BigInt(start) || h.pfn < 1n) bad(`0x${h.pfn.toString(16)} is below the start pfn`);
    if (end > BigInt(h.limit)) bad(`0x${end.toString(16)} is above its limit 0x${h.limit.toString(16)}`);
    if (h.pfn % BigInt(h.align) !== 0n) bad(`0x${h.pfn.toString(16)} is not aligned to ${h.align}`);
    for (const [lo, hi] of reserved) if (end >= BigInt(lo) && h.pfn <= BigInt(hi)) bad(`0x${h.pfn.toString(16)} is in the reserved 0x${lo.toString(16)}..`);
    pfns += BigInt(h.length);
  }
  if (snap.stats.allocated !== held.length || snap.stats.allocatedPfns !== pfns) {
    expect([snap.stats.allocated, snap.stats.allocatedPfns]).toEqual([held.length, pfns]);
  }
}

function runProgram(world: World, program: Op[]): void {
  const fast = new IovaDomain({ startPfn: world.start });
  const twin = new NaiveIovaDomain({ startPfn: world.start });
  const sides: Side[] = [fast, twin];
  const reserved: [number, number][] = [];
  for (const [lo, hi] of world.fence) {
    for (const s of sides) s.reserve(lo, hi);
    reserved.push([lo, hi]);
  }
  let held: Held[] = [];

  const both = <T>(what: string, fn: (s: Side) => T, mayRefuse = true): { ok: unknown } | { error: string } => {
    const before = mayRefuse ? fast.snapshot() : undefined;
    const a = attempt(() => fn(fast));
    const b = attempt(() => fn(twin));
    expect(a, what).toEqual(b);
    if ("error" in a) {
      seen.refused++;
      expectSameState(fast.snapshot(), before!, `${what}: refused, yet something changed`);
    }
    return a;
  };

  const allocated = (pfn: bigint, asked: number, length: number, limit: number, align: number): void => {
    held.push({ pfn, asked, length, limit, align });
    expect(fast.find(pfn)).toEqual({ lo: pfn, hi: pfn + BigInt(length) - 1n, state: "allocated" });
  };

  for (const op of program) {
    const what = JSON.stringify(op);
    const hitsBefore = fast.stats().rcacheHits;
    const freesBefore = fast.stats().treeFrees;
    switch (op.kind) {
      case "alloc": {
        const before = fast.ranges();
        const hintsBefore = fast.hints();
        const out = both(what, (s) => s.alloc(op.size, op.limit, op.aligned));
        const pfn = (out as { ok: bigint | undefined }).ok;
        if (pfn === undefined) {
          seen.exhausted++;
          if (op.limit < DMA_32BIT_PFN && BigInt(op.size) >= hintsBefore.max32AllocSize) seen.max32Fast++;
          expect(fast.ranges(), "a failed alloc changed the ranges").toEqual(before);
        } else {
          allocated(pfn, op.size, op.size, op.limit, op.aligned ? pow2(op.size) : 1);
          const c = op.limit < DMA_32BIT_PFN ? hintsBefore.cached32Node : hintsBefore.cachedNode;
          if (c !== null && pfn > c) seen.retries++;
        }
        break;
      }
      case "allocFast": {
        const before = fast.ranges();
        const cachedBefore = fast.stats().cached;
        const out = both(what, (s) => s.allocFast(op.size, op.limit, op.flush));
        const pfn = (out as { ok: bigint | undefined }).ok;
        const length = fastLength(op.size);
        if (pfn === undefined) {
          seen.exhausted++;
          if (!op.flush || cachedBefore === 0) expect(fast.ranges(), "a failed allocFast changed the ranges").toEqual(before);
        } else {
          allocated(pfn, op.size, length, op.limit, pow2(length));
        }
        break;
      }
      case "free": {
        const h = op.bogus === null && held.length ? held[op.pick % held.length]! : undefined;
        const pfn = h ? h.pfn + BigInt(op.offset % h.length) : BigInt(op.bogus ?? world.base);
        const out = both(what, (s) => s.free(pfn));
        if ("ok" in out) held = held.filter((x) => !(x.pfn <= pfn && pfn < x.pfn + BigInt(x.length)));
        break;
      }
      case "freeFast": {
        const h = op.bogus === null && held.length ? held[op.pick % held.length]! : undefined;
        const pfn = h ? h.pfn : BigInt(op.bogus ?? world.base);
        const size = Math.max(1, (h ? h.asked : 1) + op.sizeDelta);
        const out = both(what, (s) => s.freeFast(pfn, size));
        if ("ok" in out) held = held.filter((x) => x.pfn !== pfn);
        break;
      }
      case "reserve": {
        const hi = op.lo + op.len - 1;
        const nodesBefore = fast.stats().reserved;
        const out = both(what, (s) => s.reserve(op.lo, hi));
        if ("ok" in out) {
          reserved.push([op.lo, hi]);
          if (fast.stats().reserved === nodesBefore) seen.reservedMerges++;
        }
        break;
      }
      case "flush":
        both(what, (s) => s.flushRcache());
        expect(fast.stats().cached).toBe(0);
        break;
      case "find":
        both(what, (s) => s.find(op.pfn));
        break;
      case "burst": {
        // Many allocFast of one size on the 64-bit space, then freeFast of all
        // of them in a shuffled order: magazines fill, swap, go to the depot and
        // are trimmed.
        const got: bigint[] = [];
        for (let i = 0; i < op.count; i++) {
          const out = both(`${what} #${i}`, (s) => s.allocFast(op.size, IOVA_MAX_PFN, false), false);
          const pfn = (out as { ok: bigint | undefined }).ok;
          if (pfn === undefined) break;
          got.push(pfn);
          allocated(pfn, op.size, fastLength(op.size), IOVA_MAX_PFN, pow2(fastLength(op.size)));
        }
        let x = op.order | 1;
        for (let i = got.length - 1; i > 0; i--) {
          x = (Math.imul(x, 0x2c1b3c6d) + 0x297a2d39) >>> 0;
          const j = x % (i + 1);
          [got[i], got[j]] = [got[j]!, got[i]!];
        }
        for (const pfn of got) {
          const out = both(`${what} free`, (s) => s.freeFast(pfn, op.size), false);
          expect("ok" in out).toBe(true);
        }
        held = held.filter((h) => !got.includes(h.pfn));
        if (fast.stats().treeFrees > freesBefore) seen.depotTrims++;
        break;
      }
    }
    if (fast.stats().rcacheHits > hitsBefore) seen.rcacheHits++;
    const snap = fast.snapshot();
    expectSameState(snap, twin.snapshot(), `${what}: the twin's state differs`);
    const bad = fast.checkTree();
    if (bad) expect.fail(`${what}: ${bad}`);
    checkInvariants(snap, held, reserved, world.start);
  }
}

describe("IOVA allocator vs the naive twin (the kernel's walk, transcribed)", () => {
  it("every result, errno, node, magazine and hint is the twin's; no overlap, within limits, aligned, clear of reserved ranges", () => {
    fc.assert(fc.property(worlds.chain((w) => fc.tuple(fc.constant(w), ops(w))), ([world, program]) => runProgram(world, program)), params(250));
    // The program met what it is for.
    expect(seen.refused).toBeGreaterThan(atLeast(200));
    expect(seen.exhausted).toBeGreaterThan(atLeast(200));
    expect(seen.rcacheHits).toBeGreaterThan(atLeast(100));
    expect(seen.retries).toBeGreaterThan(atLeast(5));
    expect(seen.max32Fast).toBeGreaterThan(atLeast(20));
    expect(seen.depotTrims).toBeGreaterThan(atLeast(5));
    expect(seen.reservedMerges).toBeGreaterThan(atLeast(5));
  });

  it("deep trees: thousands of ranges grown, freed by address from either end, shrunk and regrown (every rotation, every erase case)", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 31 }), fc.integer({ min: 1500, max: 4000 }), (seed, peak) => {
        let x = seed;
        const rnd = (n: number): number => {
          x = (Math.imul(x, 1103515245) + 12345) >>> 0;
          return Math.floor((x / 2 ** 32) * n);
        };
        const fast = new IovaDomain();
        const twin = new NaiveIovaDomain();
        const sides: Side[] = [fast, twin];
        for (const s of sides) s.reserve(0xfee00, 0xfeeff);
        const held: { pfn: bigint; asked: number; fast: boolean }[] = [];
        const limits = [TOP32, 0xfff00, IOVA_MAX_PFN, DMA_32BIT_PFN + 0x3ff];
        let step = 0;
        const compare = (): void => {
          expectSameState(fast.snapshot(), twin.snapshot(), `step ${step}`);
          const bad = fast.checkTree();
          if (bad) expect.fail(`step ${step}: ${bad}`);
        };
        // Up to the peak, then a third freed in address order from the bottom
        // and from the top (one side of the tree empties: long rebalancing
        // chains), down to a handful, then up again.
        for (const phase of [peak, "low", "high", 5, peak >> 1, 0] as const) {
          let target: number;
          if (phase === "low" || phase === "high") {
            held.sort((p, q) => (p.pfn < q.pfn ? -1 : 1));
            if (phase === "high") held.reverse();
            target = held.length - Math.floor(held.length / 3);
          } else {
            target = phase;
          }
          const ordered = phase === "low" || phase === "high";
          while (held.length !== target && step < 40 * peak) {
            step++;
            const grow = ordered ? false : held.length < target ? rnd(10) < 8 : rnd(10) < 2;
            let a: unknown, b: unknown;
            if (grow) {
              const asked = 1 + rnd(rnd(4) === 0 ? 70 : 6);
              const limit = limits[rnd(limits.length)]!;
              const useFast = rnd(2) === 0;
              const call = (s: Side): bigint | undefined => (useFast ? s.allocFast(asked, limit, rnd(2) === 0) : s.alloc(asked, limit, rnd(2) === 0));
              const r0 = x;
              a = attempt(() => call(fast));
              x = r0; // the same random choices for the twin
              b = attempt(() => call(twin));
              const pfn = (a as { ok?: bigint }).ok;
              if (pfn !== undefined) held.push({ pfn, asked, fast: useFast });
            } else if (held.length) {
              const h = held.splice(ordered ? 0 : rnd(held.length), 1)[0]!;
              const viaFast = h.fast && rnd(3) !== 0;
              a = attempt(() => (viaFast ? fast.freeFast(h.pfn, h.asked) : fast.free(h.pfn)));
              b = attempt(() => (viaFast ? twin.freeFast(h.pfn, h.asked) : twin.free(h.pfn)));
            }
            expect(a, `step ${step}`).toEqual(b);
            if (step % 500 === 0) compare();
          }
          compare();
          if (rnd(2) === 0) {
            for (const s of sides) s.flushRcache();
            compare();
          }
        }
      }),
      params(8),
    );
  });

  it("the tree's own invariants under heavy churn: runs of neighbours freed from random points, refilled (20,000 ranges)", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 31 }), (seed) => {
        let x = seed;
        const rnd = (n: number): number => {
          x = (Math.imul(x, 1103515245) + 12345) >>> 0;
          return Math.floor((x / 2 ** 32) * n);
        };
        const d = new IovaDomain();
        const live: bigint[] = [];
        const refill = (count: number): void => {
          for (let i = 0; i < count; i++) {
            const p = d.alloc(1 + rnd(3), IOVA_MAX_PFN, rnd(2) === 0);
            if (p === undefined) throw new Error("64-bit space exhausted");
            live.push(p);
          }
        };
        const check = (what: string): void => {
          const bad = d.checkTree();
          if (bad) expect.fail(`${what}: ${bad}`);
          if (d.stats().allocated !== live.length) expect(d.stats().allocated, what).toBe(live.length);
        };
        refill(20000);
        check("filled");
        for (let round = 0; round < 12; round++) {
          live.sort((p, q) => (p < q ? -1 : 1));
          // A run of address-order neighbours: whole blocks empty next to full ones.
          const len = 50 + rnd(4000);
          const at = rnd(Math.max(1, live.length - len));
          for (const p of live.splice(at, len)) d.free(p);
          check(`round ${round}: freed ${len} from ${at}`);
          refill(rnd(3000));
          check(`round ${round}: refilled`);
        }
        for (const p of live.splice(0)) d.free(p);
        check("emptied");
        expect(d.ranges()).toEqual([]);
      }),
      params(4),
    );
  });

  it("large sizes and alignment orders past the room table's first width (the tree widens its orders)", () => {
    const fast = new IovaDomain();
    const twin = new NaiveIovaDomain();
    fc.assert(
      fc.property(fc.array(fc.record({ log: fc.integer({ min: 0, max: 40 }), extra: fc.nat({ max: 5 }), aligned: fc.boolean(), limit: fc.constantFrom(TOP32, IOVA_MAX_PFN, 2 ** 44 - 1), free: fc.boolean() }), { maxLength: 12 }), (steps) => {
        for (const s of steps) {
          const size = 2 ** s.log + s.extra;
          const a = attempt(() => fast.alloc(size, s.limit, s.aligned));
          expect(a).toEqual(attempt(() => twin.alloc(size, s.limit, s.aligned)));
          const pfn = (a as { ok: bigint | undefined }).ok;
          if (pfn !== undefined && s.free) {
            fast.free(pfn);
            twin.free(pfn);
          }
          expect(fast.snapshot()).toEqual(twin.snapshot());
        }
      }),
      params(60),
    );
  });
});
