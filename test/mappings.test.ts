// The container's mapping set (src/vfio/mappings.ts, an AVL tree of runs)
// against a plain sorted array: random inserts, removals (of mappings in the
// set and of look-alikes that are not), containment, overlap, the mappings
// inside a range, cursor walks (also removing as they go, as UNMAP_DMA does)
// and the whole list, over ranges that touch, nest and overlap near 0, 2^32,
// 2^53 (where a double stops holding every integer), 2^60 and the top of the
// 64-bit space (up to 2^64 - 1). Runs as short as two mappings make splits
// and merges happen at nearly every step. After every step the set holds what
// the array holds and is as shallow as an AVL tree (plus its run) must be.
//
// FC_SEED=<n> replays a seed, FC_RUNS=<n> sets the number of runs (test/support/runs.ts).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MappingList, type DmaMapping, type MappingCursor } from "../src/vfio/mappings.js";
import { params } from "./support/runs.js";

const U64_MAX = (1n << 64n) - 1n;
/** Ranges start near these, so neighbours touch, nest and collide at each. */
const ANCHORS = [0n, 1n << 32n, (1n << 53n) - 0x4000n, 1n << 60n, (1n << 64n) - 0x8000n];
/** Ranges are built from 16 slots of this size after an anchor (the top anchor's last slot ends at 2^64 - 1). */
const SLOT = 0x800n;

/**
 * The most levels a lookup may visit among n mappings: the height no AVL tree
 * of n nodes exceeds (Knuth: 1.4405·log2(n + 2) − 0.3277; the tree has one
 * node per run, at most n), plus the run.
 */
function depthBound(n: number): number {
  return 1.4405 * Math.log2(n + 2) - 0.3277 + 1;
}

/** Run lengths: the container's (32) and short ones, where runs split and merge all the time. */
const runLength = fc.constantFrom(2, 3, 4, 7, 32);

function mapping(iova: bigint, last: bigint): DmaMapping {
  return { iova, last, vaddr: iova, process: null as unknown as DmaMapping["process"], read: true, write: true };
}

/** The obvious version: a sorted array, searched from end to end. */
class Model {
  list: DmaMapping[] = [];
  containing(addr: bigint): DmaMapping | undefined { return this.list.find((m) => m.iova <= addr && addr <= m.last); }
  overlaps(first: bigint, last: bigint): boolean { return this.list.some((m) => m.iova <= last && m.last >= first); }
  inside(first: bigint, last: bigint): DmaMapping[] { return this.list.filter((m) => m.iova >= first && m.last <= last); }
  /** The mappings from the first ending at or after addr to the top. */
  from(addr: bigint): DmaMapping[] { const i = this.list.findIndex((m) => m.last >= addr); return i < 0 ? [] : this.list.slice(i); }
  insert(m: DmaMapping): void { this.list.push(m); this.list.sort((a, b) => (a.iova < b.iova ? -1 : 1)); }
  remove(m: DmaMapping): void { const i = this.list.indexOf(m); if (i >= 0) this.list.splice(i, 1); }
}

/** The set's insides, for checkStructure(). */
interface Insides {
  root: number; runLength: number; children: Int32Array; parents: Int32Array; heights: Uint8Array;
  keys: Float64Array; counts: Int32Array; bounds: Float64Array; maps: (DmaMapping | undefined)[];
}

/**
 * The tree's own rules, read from its private arrays (white box: the answers
 * alone do not show a tree that is valid but out of balance, or holds stale
 * heights that have not misled a rotation yet): parent links match child
 * links, every height is right and no node leans by more than one, every run
 * holds 1..runLength mappings, any two neighbouring runs hold more than
 * runLength / 2 together (what merging keeps: runs stay a quarter full or
 * more on average), and the doubles a lookup compares (each run's key, each slot's
 * bounds) are those of the mappings there.
 */
function checkStructure(set: MappingList, where: string): void {
  const t = set as unknown as Insides;
  const visit = (r: number, parent: number): number => {
    if (r === 0) return 0;
    if (t.parents[r] !== parent) expect.fail(`${where}: run ${r} has parent ${t.parents[r]}, hangs from ${parent}`);
    const left = visit(t.children[r * 4 + 2], r), right = visit(t.children[r * 4 + 3], r);
    if (Math.abs(left - right) > 1) expect.fail(`${where}: run ${r} leans (${left} against ${right})`);
    if (t.heights[r] !== Math.max(left, right) + 1) expect.fail(`${where}: run ${r} says height ${t.heights[r]}, is ${Math.max(left, right) + 1}`);
    const n = t.counts[r], base = r * t.runLength;
    if (n < 1 || n > t.runLength) expect.fail(`${where}: run ${r} holds ${n}`);
    for (let s = 0; s < n; s++) {
      const m = t.maps[base + s] as DmaMapping;
      if (t.bounds[2 * (base + s)] !== Number(m.last) || t.bounds[2 * (base + s) + 1] !== Number(m.iova)) expect.fail(`${where}: run ${r} slot ${s} has stale bounds`);
    }
    if (t.keys[r * 2] !== Number((t.maps[base + n - 1] as DmaMapping).last)) expect.fail(`${where}: run ${r} has a stale key`);
    return t.heights[r];
  };
  if (t.root !== 0 && t.parents[t.root] !== 0) expect.fail(`${where}: the root has a parent`);
  visit(t.root, 0);
  const inOrder: number[] = [];
  const walkRuns = (r: number): void => { if (r !== 0) { walkRuns(t.children[r * 4 + 2]); inOrder.push(r); walkRuns(t.children[r * 4 + 3]); } };
  walkRuns(t.root);
  for (let i = 1; i < inOrder.length; i++) {
    const pair = t.counts[inOrder[i - 1]] + t.counts[inOrder[i]];
    if (pair <= t.runLength >> 1) expect.fail(`${where}: neighbouring runs hold only ${pair} (runs of ${t.runLength})`);
  }
}

/** Up to `steps` mappings of a cursor walk (undefined: the walk's start). */
function walk(start: MappingCursor | undefined, steps: number): DmaMapping[] {
  const out: DmaMapping[] = [];
  for (let c = start; c && out.length < steps; c = c.next()) out.push(c.mapping);
  return out;
}

const anchor = fc.integer({ min: 0, max: ANCHORS.length - 1 }).map((i) => ANCHORS[i]);
/** A range on the slot grid, its ends nudged by a byte now and then so ranges also touch off the grid. */
const range = fc.record({
  at: anchor,
  slot: fc.integer({ min: 0, max: 15 }),
  span: fc.integer({ min: 1, max: 4 }),
  nudgeFirst: fc.constantFrom(0n, 0n, 1n),
  nudgeLast: fc.constantFrom(0n, 0n, 1n),
}).map(({ at, slot, span, nudgeFirst, nudgeLast }) => {
  const first = at + BigInt(slot) * SLOT + nudgeFirst;
  let last = at + BigInt(Math.min(16, slot + span)) * SLOT - 1n - nudgeLast;
  if (last < first) last = first;
  return { first, last };
});
/** An address near a slot edge (one byte either side too), within [0, 2^64 - 1]. */
const address = fc.record({ at: anchor, slot: fc.integer({ min: 0, max: 16 }), delta: fc.constantFrom(-1n, 0n, 1n, SLOT / 2n) })
  .map(({ at, slot, delta }) => { const a = at + BigInt(slot) * SLOT + delta; return a < 0n ? 0n : a > U64_MAX ? U64_MAX : a; });
/** A query range: two addresses (possibly from different anchors), or all of the space. */
const span = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(address, address).map(([a, b]) => (a <= b ? { first: a, last: b } : { first: b, last: a })) },
  { weight: 3, arbitrary: range },
  { weight: 1, arbitrary: fc.constant({ first: 0n, last: U64_MAX }) },
);

type Op =
  | { kind: "insert"; r: { first: bigint; last: bigint } }
  | { kind: "fill"; at: bigint; order: number[] }
  | { kind: "remove"; pick: number; lookalike: boolean }
  | { kind: "containing"; addr: bigint }
  | { kind: "overlaps"; r: { first: bigint; last: bigint } }
  | { kind: "inside"; r: { first: bigint; last: bigint } }
  | { kind: "from"; addr: bigint; steps: number }
  | { kind: "unmap-walk"; r: { first: bigint; last: bigint } };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: range.map((r) => ({ kind: "insert" as const, r })) },
  { weight: 1, arbitrary: fc.record({ at: anchor, order: fc.shuffledSubarray([...Array(16).keys()], { minLength: 1 }) }).map((o) => ({ kind: "fill" as const, ...o })) },
  { weight: 4, arbitrary: fc.record({ pick: fc.nat(), lookalike: fc.boolean() }).map((o) => ({ kind: "remove" as const, ...o })) },
  { weight: 3, arbitrary: address.map((addr) => ({ kind: "containing" as const, addr })) },
  { weight: 3, arbitrary: span.map((r) => ({ kind: "overlaps" as const, r })) },
  { weight: 3, arbitrary: span.map((r) => ({ kind: "inside" as const, r })) },
  { weight: 2, arbitrary: fc.record({ addr: address, steps: fc.integer({ min: 1, max: 8 }) }).map((o) => ({ kind: "from" as const, ...o })) },
  { weight: 1, arbitrary: span.map((r) => ({ kind: "unmap-walk" as const, r })) },
);

/** Runs one step on both and checks the answers agree. */
function step(set: MappingList, model: Model, o: Op): void {
  switch (o.kind) {
    case "insert": {
      const m = mapping(o.r.first, o.r.last);
      // MAP_DMA asks overlaps() first and inserts only a free range; the set refuses an overlap outright.
      const free = !model.overlaps(o.r.first, o.r.last);
      expect(set.overlaps(o.r.first, o.r.last)).toBe(!free);
      if (free) { set.insert(m); model.insert(m); } else expect(() => set.insert(m)).toThrow(/overlaps/);
      break;
    }
    case "fill": {
      // Touching one-slot mappings around an anchor, in a random order: the tree grows by up to 16 at once.
      for (const slot of o.order) {
        const first = o.at + BigInt(slot) * SLOT, last = first + SLOT - 1n;
        if (!model.overlaps(first, last)) { const m = mapping(first, last); set.insert(m); model.insert(m); }
      }
      break;
    }
    case "remove": {
      if (model.list.length === 0) { set.remove(mapping(0n, 0n)); break; }
      const m = model.list[o.pick % model.list.length];
      // A look-alike (same range, another object) is not in the set: nothing goes.
      if (o.lookalike) set.remove(mapping(m.iova, m.last));
      else { set.remove(m); model.remove(m); }
      break;
    }
    case "containing": expect(set.containing(o.addr)).toBe(model.containing(o.addr)); break;
    case "overlaps": expect(set.overlaps(o.r.first, o.r.last)).toBe(model.overlaps(o.r.first, o.r.last)); break;
    case "inside": expect(set.inside(o.r.first, o.r.last)).toEqual(model.inside(o.r.first, o.r.last)); break;
    case "from": {
      const got = walk(set.firstEndingAtOrAfter(o.addr), o.steps);
      expect(got).toEqual(model.from(o.addr).slice(0, o.steps));
      got.forEach((m, i) => expect(m).toBe(model.from(o.addr)[i]));
      break;
    }
    case "unmap-walk": {
      // vfio_dma_do_unmap's loop: take the next node, then remove the one left behind.
      const gone: DmaMapping[] = [];
      for (let c = set.firstEndingAtOrAfter(o.r.first); c && c.mapping.iova <= o.r.last;) {
        const next = c.next();
        set.remove(c.mapping);
        gone.push(c.mapping);
        expect(() => c?.next()).toThrow(/removed/);
        c = next;
      }
      const expected = model.list.filter((m) => m.iova <= o.r.last && m.last >= o.r.first);
      expect(gone).toEqual(expected);
      for (const m of expected) model.remove(m);
      break;
    }
  }
  // Checked after every step, so without expect()'s cost per mapping.
  const all = set.all();
  if (set.size !== model.list.length || all.length !== model.list.length || all.some((m, i) => m !== model.list[i])) {
    expect.fail(`after ${o.kind}: the set holds ${all.length} (size ${set.size}), the model ${model.list.length}, or another order`);
  }
  if (set.depth > depthBound(set.size)) expect.fail(`after ${o.kind}: depth ${set.depth} for ${set.size} mappings`);
  checkStructure(set, `after ${o.kind}`);
}

describe("MappingList (the container's AVL tree of DMA mappings)", () => {
  it("answers as a sorted array does, over random inserts, removals, lookups and walks up to 2^64 - 1", () => {
    fc.assert(fc.property(runLength, fc.array(op, { minLength: 1, maxLength: 300, size: "max" }), (length, ops) => {
      const set = new MappingList(length), model = new Model();
      for (const o of ops) step(set, model, o);
    }), params(200));
  });

  it.each([2, 32])("tells apart ranges whose ends round to the same double (above 2^53), runs of %i", (length) => {
    // Above 2^60 a double steps by 256: the last byte of [2^60, 2^60 + 0xfff]
    // rounds up to the next range's first byte, and 2^64 - 1 rounds to 2^64.
    const set = new MappingList(length);
    const base = 1n << 60n;
    const low = mapping(base, base + 0xfffn), high = mapping(base + 0x1000n, base + 0x1fffn), top = mapping(U64_MAX - 0xfffn, U64_MAX);
    expect(Number(low.last)).toBe(Number(high.iova));
    for (const m of [high, top, low]) set.insert(m);
    expect(set.containing(base + 0xfffn)).toBe(low);
    expect(set.containing(base + 0x1000n)).toBe(high);
    expect(set.containing(base + 0x2000n)).toBeUndefined();
    expect(set.containing(U64_MAX)).toBe(top);
    expect(set.containing(U64_MAX - 0x1000n)).toBeUndefined();
    expect(set.overlaps(base + 0xfffn, base + 0xfffn)).toBe(true);
    expect(set.overlaps(base + 0x2000n, U64_MAX - 0x1000n)).toBe(false);
    expect(set.inside(base + 1n, U64_MAX)).toEqual([high, top]);
    expect(set.firstEndingAtOrAfter(base + 0x1000n)?.mapping).toBe(high);
    expect(set.firstEndingAtOrAfter(U64_MAX)?.mapping).toBe(top);
    expect(() => set.insert(mapping(base + 0xfffn, base + 0x1000n))).toThrow(/overlaps/);
    set.remove(low);
    expect(set.all()).toEqual([high, top]);
  });

  it("keeps the AVL height bound after random, ascending and descending inserts and removals", () => {
    fc.assert(fc.property(runLength, fc.integer({ min: 1, max: 5000 }), fc.constantFrom("random", "ascending", "descending"), fc.integer(), (length, n, order, seed) => {
      const pages = Array.from({ length: n }, (_, i) => i);
      if (order === "descending") pages.reverse();
      if (order === "random") {
        let x = seed | 1;
        for (let i = n - 1; i > 0; i--) {
          x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
          const j = (x >>> 0) % (i + 1);
          [pages[i], pages[j]] = [pages[j], pages[i]];
        }
      }
      const set = new MappingList(length);
      const ms = pages.map((p) => mapping(BigInt(p) << 12n, (BigInt(p) << 12n) + 0xfffn));
      for (const m of ms) set.insert(m);
      expect(set.size).toBe(n);
      expect(set.depth).toBeLessThanOrEqual(depthBound(n));
      checkStructure(set, `${n} ${order}`);
      // Every other one goes, in insertion order: the tree rebalances on the way down too.
      for (let i = 0; i < n; i += 2) set.remove(ms[i]);
      expect(set.size).toBe(n >> 1);
      expect(set.depth).toBeLessThanOrEqual(depthBound(set.size));
      checkStructure(set, `${n} ${order}, half removed`);
      expect(set.all().map((m) => m.iova >> 12n)).toEqual(ms.filter((_, i) => i % 2 === 1).map((m) => m.iova >> 12n).sort((a, b) => (a < b ? -1 : 1)));
    }), params(40));
  });

  it("holds the kernel's default limit of 65,535 mappings inserted in order at the depth of a balanced tree", () => {
    const set = new MappingList(2);
    for (let p = 0n; p < 65535n; p++) set.insert(mapping(p << 12n, (p << 12n) + 0xfffn));
    // Ascending inserts are the worst case for an unbalanced tree (65,535 deep).
    // Runs of two fill to one each (a full run splits in halves, and only the
    // highest run grows), so the tree has ~65 K nodes: 16 levels balanced, + the run.
    expect(set.depth).toBeLessThanOrEqual(18);
    expect(set.containing(0x0fff_e123n)?.iova).toBe(0x0fff_e000n);
    expect(set.containing(0x0fff_f000n)).toBeUndefined();
  });

  it("refuses runs shorter than two", () => {
    expect(() => new MappingList(1)).toThrow(RangeError);
  });
});
