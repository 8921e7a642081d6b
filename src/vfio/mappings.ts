// The container's DMA mappings (type1's vfio_dma tree, `iommu->dma_list`):
// one entry per successful MAP_DMA, never merged with neighbours.
//
// The kernel keeps an rb-tree; a sorted array paid a splice of the whole tail
// on every MAP_DMA and UNMAP_DMA (39 µs per map at the default limit of
// 65,535 mappings against 4 µs at 4 K). Here every question MAP/UNMAP asks
// (overlap, containment, the bisect rule, the mappings inside a range) and
// every insert or remove costs O(log n): an AVL tree of runs.
//
// - A run is up to RUN_LENGTH mappings in IOVA order, in flat arrays. Runs
//   split in halves when full and merge with a neighbour when the two hold
//   half a run or less, so every change to a run is O(RUN_LENGTH), a constant.
// - An AVL tree orders the runs by their last byte (AVL rather than
//   red-black for its tighter balance, height < 1.44·log2 n: lookups, which
//   MAP/UNMAP make more of than inserts, walk fewer levels).
//
// Why runs and not one tree node per mapping: at 65 K mappings the lower
// levels of a binary tree miss the cache at every step whatever the node
// looks like (measured: lookups 2.5-4× slower than at 4 K, with node objects
// or with 16-byte records). With runs the tree has ~65 K / 20 nodes, small
// enough to stay cached, and a lookup ends in one run's two or three cache
// lines. Nothing is an object but the mappings themselves: tree records,
// heights and runs live in typed arrays that the garbage collector never
// walks.
//
// Mappings never overlap (MAP_DMA refuses an overlap with EEXIST before it
// inserts), so ordering by first byte also orders by last byte, and every
// question starts with "the first mapping ending at or after addr" (the
// kernel's vfio_find_dma_first_node), which reads only last bytes.
//
// Addresses are compared as doubles where that decides: a double is exact
// below 2^53; above, Number() rounds but never reorders (a ≤ b ⇒ Number(a) ≤
// Number(b)), so "less" or "greater" between doubles is right, and only
// "equal" reads the exact BigInt from the mapping.
import type { Process } from "./process.js";

export interface DmaMapping {
  iova: bigint;
  /** Inclusive. */
  last: bigint;
  vaddr: bigint;
  process: Process;
  read: boolean;
  write: boolean;
}

/**
 * A position in the mapping set, lowest IOVA first (the kernel's rb_node
 * walked with rb_next). `next()` may be taken before the mapping here is
 * removed and stays valid after it (UNMAP_DMA's walk steps on, then removes
 * the one it left); a cursor whose own mapping was removed is dead (next()
 * throws), and a walk restarts from `firstEndingAtOrAfter`.
 */
export interface MappingCursor {
  readonly mapping: DmaMapping;
  /** The next mapping up, or undefined past the highest. O(1) while the set is unchanged, O(log n) after a change. */
  next(): MappingCursor | undefined;
}

/** Mappings per run: 32 last/first pairs are 512 bytes, and a binary search in them touches two or three cache lines. */
const RUN_LENGTH = 32;
/** Runs start with room for this many. */
const INITIAL_RUNS = 16;
// A tree record: the run's last byte (f64), then its left and right child (i32).
const RECORD_BYTES = 16;
const F64_PER_RECORD = RECORD_BYTES / 8;
const I32_PER_RECORD = RECORD_BYTES / 4;
const LEFT = 2, RIGHT = 3; // in i32s; the f64 at 0 is the key
/** Run 0 is "none": a link to it is no link, and its height reads 0. */
const NONE = 0;

class Cursor implements MappingCursor {
  constructor(private readonly set: MappingList, private readonly run: number, private readonly slot: number, private readonly version: number, readonly mapping: DmaMapping) {}
  next(): MappingCursor | undefined { return this.set.cursorNext(this.mapping, this.run, this.slot, this.version); }
}

export class MappingList {
  // ---- the tree of runs, one node per run (node number = run number)
  private records = new ArrayBuffer(INITIAL_RUNS * RECORD_BYTES);
  /** At F64_PER_RECORD·r: the last byte of run r's last mapping, as a double (the run's key). */
  private keys = new Float64Array(this.records);
  /** At I32_PER_RECORD·r + LEFT / RIGHT: run r's children. */
  private children = new Int32Array(this.records);
  private parents = new Int32Array(INITIAL_RUNS);
  /** Per run: nodes on the longest path down from it, itself included (an AVL tree of 2^32 nodes is under 47 high). */
  private heights = new Uint8Array(INITIAL_RUNS);
  private root = NONE;

  // ---- the runs
  /** Mappings in each run, at the front of its slots. */
  private counts = new Int32Array(INITIAL_RUNS);
  /** Slot s of run r at 2·(r·runLength + s): its last byte then its first byte, as doubles. */
  private bounds: Float64Array;
  /** Slot s of run r at r·runLength + s: the mapping. */
  private maps: (DmaMapping | undefined)[] = [];
  /** Run numbers never used yet start here; freed ones are reused first. */
  private unused = 1;
  private freed: number[] = [];

  private count = 0;
  /** Bumped by every insert and remove: a remembered position is only good in the set it was found in. */
  private version = 0;

  // ---- what the last lookup found (locate() writes these; no object per lookup)
  private found = false;
  private atRun = NONE;
  private atSlot = 0;
  /** When nothing ends at or after the address: the highest run (where a mapping past all others goes), or NONE if empty. */
  private lastRun = NONE;
  /**
   * The position the last lookup ended at. UNMAP_DMA asks about one
   * neighbourhood four times (the bisect check at both ends, the mappings
   * inside, the removal), so the answer is usually here and three lookups
   * are saved. Checked before use, not trusted: whatever mapping that slot
   * holds now, if it holds the address it is the answer.
   */
  private finger = { run: NONE, slot: 0 };
  /**
   * Where a mapping of [first, last] goes, from the last overlaps() that
   * found the range free: MAP_DMA inserts right after asking, so the insert
   * reuses that lookup while the set is unchanged.
   */
  private gap = { first: 0n, last: 0n, run: NONE, slot: 0, version: -1 };
  /** all()'s answer until the next insert or remove: whole-container callers (dirty reads, the IOVA picker) often ask twice in a row. */
  private snapshot: readonly DmaMapping[] | undefined = [];

  /** @param runLength mappings per run; the tests use short runs to meet splits and merges often. */
  constructor(private readonly runLength = RUN_LENGTH) {
    if (!Number.isInteger(runLength) || runLength < 2) throw new RangeError(`mapping set: runs of ${runLength} mappings (2 at least)`);
    this.bounds = new Float64Array(INITIAL_RUNS * runLength * 2);
  }

  get size(): number { return this.count; }

  /** Levels a lookup visits: the tree's height, plus one for the run. For the balance tests. */
  get depth(): number { return this.root === NONE ? 0 : this.heights[this.root] + 1; }

  /** Every mapping, lowest IOVA first. O(n): for whole-container operations, never on the MAP/UNMAP path. */
  all(): readonly DmaMapping[] {
    if (this.snapshot) return this.snapshot;
    const out: DmaMapping[] = [];
    for (let r = this.root === NONE ? NONE : this.lowest(this.root); r !== NONE; r = this.successor(r)) {
      const base = r * this.runLength;
      for (let s = 0; s < this.counts[r]; s++) out.push(this.maps[base + s] as DmaMapping);
    }
    this.snapshot = out;
    return out;
  }

  /** The first mapping whose last byte is at or after addr (the kernel's vfio_find_dma_first_node), as a cursor to walk up from. */
  firstEndingAtOrAfter(addr: bigint): MappingCursor | undefined {
    if (!this.locate(addr)) return undefined;
    return new Cursor(this, this.atRun, this.atSlot, this.version, this.mapAt(this.atRun, this.atSlot));
  }

  /** @internal A cursor's step. After a change, the cursor's mapping is looked up again (and must still be here). */
  cursorNext(m: DmaMapping, run: number, slot: number, version: number): MappingCursor | undefined {
    if (version !== this.version) {
      if (!this.locate(m.iova) || this.mapAt(this.atRun, this.atSlot) !== m) {
        throw new Error("mapping cursor: its mapping was removed; restart from firstEndingAtOrAfter");
      }
      run = this.atRun; slot = this.atSlot;
    }
    if (slot + 1 < this.counts[run]) slot++;
    else { run = this.successor(run); slot = 0; }
    return run === NONE ? undefined : new Cursor(this, run, slot, this.version, this.mapAt(run, slot));
  }

  /** The mapping holding byte addr, if any: the first ending at or after addr, if it starts by then. */
  containing(addr: bigint): DmaMapping | undefined {
    if (!this.locate(addr) || this.startsAfter(this.atRun, this.atSlot, addr)) return undefined;
    return this.mapAt(this.atRun, this.atSlot);
  }

  /** Whether any mapping shares a byte with [first, last]. */
  overlaps(first: bigint, last: bigint): boolean {
    if (this.locate(first) && !this.startsAfter(this.atRun, this.atSlot, last)) return true;
    this.rememberGap(first, last);
    return false;
  }

  /** Every mapping lying wholly inside [first, last], lowest first. O(log n + the mappings met). */
  inside(first: bigint, last: bigint): DmaMapping[] {
    const out: DmaMapping[] = [];
    if (!this.locate(first)) return out;
    for (let r = this.atRun, s = this.atSlot; r !== NONE && !this.startsAfter(r, s, last);) {
      const m = this.mapAt(r, s);
      if (m.iova >= first && m.last <= last) out.push(m);
      // The next one starts after this one's last byte: past the range once this one reaches its end.
      if (m.last >= last) break;
      if (++s === this.counts[r]) { r = this.successor(r); s = 0; }
    }
    return out;
  }

  /**
   * Adds m, which must not overlap a mapping already here (MAP_DMA checks
   * with overlaps() first). An overlap throws: the order would no longer
   * answer containing() and overlaps() truthfully.
   */
  insert(m: DmaMapping): void {
    const gap = this.gap;
    if (gap.version !== this.version || gap.first !== m.iova || gap.last !== m.last) {
      if (this.locate(m.iova) && !this.startsAfter(this.atRun, this.atSlot, m.last)) {
        const o = this.mapAt(this.atRun, this.atSlot);
        throw new Error(`mapping set: [${m.iova}, ${m.last}] overlaps [${o.iova}, ${o.last}]`);
      }
      this.rememberGap(m.iova, m.last);
    }
    let run = gap.run, slot = gap.slot;
    if (run === NONE) {
      // The set is empty: the first run.
      run = this.newRun();
      this.attach(NONE, false, run);
      slot = 0;
    } else if (this.counts[run] === this.runLength) {
      // Full: the upper half moves to a new run just after this one.
      const upper = this.split(run);
      if (slot > this.counts[run]) { slot -= this.counts[run]; run = upper; }
    }
    this.openSlot(run, slot, m);
    this.changed();
    this.count++;
  }

  /** Removes m (the very object inserted); a mapping not in the set is ignored. */
  remove(m: DmaMapping): void {
    // The first mapping ending at or after m's first byte is m, if m is here.
    if (!this.locate(m.iova) || this.mapAt(this.atRun, this.atSlot) !== m) return;
    const run = this.atRun;
    this.closeSlot(run, this.atSlot);
    this.changed();
    this.count--;
    if (this.counts[run] === 0) { this.detach(run); return; }
    // Small neighbours join: any two neighbouring runs then hold more than
    // half a run between them, so runs stay a quarter full or more on average
    // (the tree has at most ~4n / runLength nodes) whatever is removed.
    const next = this.successor(run);
    if (next !== NONE && this.counts[run] + this.counts[next] <= this.runLength >> 1) this.merge(run, next);
    else {
      const prev = this.predecessor(run);
      if (prev !== NONE && this.counts[prev] + this.counts[run] <= this.runLength >> 1) this.merge(prev, run);
    }
  }

  // ---------------------------------------------------------------- lookups

  /**
   * Finds the first mapping ending at or after addr: true with it at
   * (atRun, atSlot), or false (nothing ends that high; lastRun is then the
   * highest run, NONE when the set is empty).
   */
  private locate(addr: bigint): boolean {
    const a = Number(addr);
    const f = this.finger;
    if (this.holds(f.run, f.slot, a, addr)) {
      this.atRun = f.run; this.atSlot = f.slot;
      return (this.found = true);
    }
    // The tree: the first run whose last mapping ends at or after addr.
    const keys = this.keys, children = this.children;
    let run = NONE, visited = NONE;
    for (let r = this.root; r !== NONE;) {
      visited = r;
      const key = keys[r * F64_PER_RECORD];
      if (key < a || (key === a && this.mapAt(r, this.counts[r] - 1).last < addr)) r = children[r * I32_PER_RECORD + RIGHT];
      else { run = r; r = children[r * I32_PER_RECORD + LEFT]; }
    }
    if (run === NONE) { this.lastRun = visited; return (this.found = false); }
    // The run: a binary search for its first mapping ending at or after addr (its last one does).
    const bounds = this.bounds, base = run * this.runLength;
    let lo = 0, hi = this.counts[run] - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const last = bounds[2 * (base + mid)];
      if (last < a || (last === a && (this.maps[base + mid] as DmaMapping).last < addr)) lo = mid + 1;
      else hi = mid;
    }
    this.atRun = run; this.atSlot = lo;
    f.run = run; f.slot = lo;
    return (this.found = true);
  }

  /** Right after locate(first) found [first, last] free: where a mapping of it goes. */
  private rememberGap(first: bigint, last: bigint): void {
    const gap = this.gap;
    gap.first = first; gap.last = last; gap.version = this.version;
    // Before the first mapping ending at or after `first`; else after the highest (NONE: the set is empty).
    if (this.found) { gap.run = this.atRun; gap.slot = this.atSlot; }
    else { gap.run = this.lastRun; gap.slot = this.lastRun === NONE ? 0 : this.counts[this.lastRun]; }
  }

  private mapAt(run: number, slot: number): DmaMapping {
    return this.maps[run * this.runLength + slot] as DmaMapping;
  }

  /** Whether the mapping at (run, slot) holds addr (a = Number(addr)). */
  private holds(run: number, slot: number, a: number, addr: bigint): boolean {
    if (run === NONE || slot >= this.counts[run]) return false;
    const i = 2 * (run * this.runLength + slot), last = this.bounds[i], first = this.bounds[i + 1];
    if (a < first || a > last) return false;
    if (a > first && a < last) return true;
    const m = this.mapAt(run, slot);
    return m.iova <= addr && addr <= m.last;
  }

  /** Whether the mapping at (run, slot) starts after addr. */
  private startsAfter(run: number, slot: number, addr: bigint): boolean {
    const first = this.bounds[2 * (run * this.runLength + slot) + 1], a = Number(addr);
    return first > a || (first === a && this.mapAt(run, slot).iova > addr);
  }

  // ---------------------------------------------------------------- runs

  /** Puts m at `slot` of `run` (which has room), moving the ones from there up by one. */
  private openSlot(run: number, slot: number, m: DmaMapping): void {
    const base = run * this.runLength, n = this.counts[run];
    this.bounds.copyWithin(2 * (base + slot + 1), 2 * (base + slot), 2 * (base + n));
    for (let s = n; s > slot; s--) this.maps[base + s] = this.maps[base + s - 1];
    this.bounds[2 * (base + slot)] = Number(m.last);
    this.bounds[2 * (base + slot) + 1] = Number(m.iova);
    this.maps[base + slot] = m;
    this.counts[run] = n + 1;
    if (slot === n) this.keys[run * F64_PER_RECORD] = this.bounds[2 * (base + n)];
  }

  /** Takes out the mapping at `slot` of `run`, moving the ones above down by one. */
  private closeSlot(run: number, slot: number): void {
    const base = run * this.runLength, n = this.counts[run] - 1;
    this.bounds.copyWithin(2 * (base + slot), 2 * (base + slot + 1), 2 * (base + n + 1));
    for (let s = slot; s < n; s++) this.maps[base + s] = this.maps[base + s + 1];
    this.maps[base + n] = undefined;
    this.counts[run] = n;
    if (n > 0) this.keys[run * F64_PER_RECORD] = this.bounds[2 * (base + n - 1)];
  }

  /** Moves the upper half of a full run to a new run just after it; returns the new run. */
  private split(run: number): number {
    const upper = this.newRun();
    const n = this.counts[run], keep = n >> 1;
    this.moveSlots(run, keep, upper, 0, n - keep);
    this.counts[upper] = n - keep;
    this.counts[run] = keep;
    this.keys[upper * F64_PER_RECORD] = this.keys[run * F64_PER_RECORD];
    this.keys[run * F64_PER_RECORD] = this.bounds[2 * (run * this.runLength + keep - 1)];
    // The new run is the next one up: the lowest of the right subtree's left edge, or the right child.
    const right = this.children[run * I32_PER_RECORD + RIGHT];
    if (right === NONE) this.attach(run, false, upper);
    else this.attach(this.lowest(right), true, upper);
    return upper;
  }

  /** Moves all of `upper` (the run after `lower`) into `lower`, and drops `upper`. */
  private merge(lower: number, upper: number): void {
    const n = this.counts[lower], m = this.counts[upper];
    this.moveSlots(upper, 0, lower, n, m);
    this.counts[lower] = n + m;
    this.counts[upper] = 0;
    this.keys[lower * F64_PER_RECORD] = this.keys[upper * F64_PER_RECORD];
    this.detach(upper);
  }

  private moveSlots(from: number, fromSlot: number, to: number, toSlot: number, n: number): void {
    const a = from * this.runLength + fromSlot, b = to * this.runLength + toSlot;
    this.bounds.copyWithin(2 * b, 2 * a, 2 * (a + n));
    for (let i = 0; i < n; i++) { this.maps[b + i] = this.maps[a + i]; this.maps[a + i] = undefined; }
  }

  private newRun(): number {
    let r = this.freed.pop();
    if (r === undefined) {
      r = this.unused++;
      if (r >= this.heights.length) this.grow();
    }
    this.counts[r] = 0;
    return r;
  }

  /** Doubles the room for runs: amortised O(1) per run. */
  private grow(): void {
    const runs = this.heights.length * 2;
    const records = new ArrayBuffer(runs * RECORD_BYTES);
    new Uint8Array(records).set(new Uint8Array(this.records));
    this.records = records;
    this.keys = new Float64Array(records);
    this.children = new Int32Array(records);
    const parents = new Int32Array(runs), heights = new Uint8Array(runs), counts = new Int32Array(runs);
    const bounds = new Float64Array(runs * this.runLength * 2);
    parents.set(this.parents);
    heights.set(this.heights);
    counts.set(this.counts);
    bounds.set(this.bounds);
    this.parents = parents;
    this.heights = heights;
    this.counts = counts;
    this.bounds = bounds;
  }

  /** Every remembered position and the all() snapshot are stale after a change. */
  private changed(): void {
    this.version++;
    this.snapshot = undefined;
  }

  // ---------------------------------------------------------------- the AVL tree of runs

  private lowest(r: number): number {
    const children = this.children;
    for (let l = children[r * I32_PER_RECORD + LEFT]; l !== NONE; l = children[r * I32_PER_RECORD + LEFT]) r = l;
    return r;
  }

  private highest(r: number): number {
    const children = this.children;
    for (let h = children[r * I32_PER_RECORD + RIGHT]; h !== NONE; h = children[r * I32_PER_RECORD + RIGHT]) r = h;
    return r;
  }

  /** The next run up: down the right subtree, else up until arriving from a left child. */
  private successor(r: number): number {
    const children = this.children, parents = this.parents;
    const right = children[r * I32_PER_RECORD + RIGHT];
    if (right !== NONE) return this.lowest(right);
    let p = parents[r];
    while (p !== NONE && r === children[p * I32_PER_RECORD + RIGHT]) { r = p; p = parents[p]; }
    return p;
  }

  private predecessor(r: number): number {
    const children = this.children, parents = this.parents;
    const left = children[r * I32_PER_RECORD + LEFT];
    if (left !== NONE) return this.highest(left);
    let p = parents[r];
    while (p !== NONE && r === children[p * I32_PER_RECORD + LEFT]) { r = p; p = parents[p]; }
    return p;
  }

  /** Hangs the new leaf `r` on `parent` (NONE: as the root) and rebalances. */
  private attach(parent: number, left: boolean, r: number): void {
    const i = r * I32_PER_RECORD;
    this.children[i + LEFT] = this.children[i + RIGHT] = NONE;
    this.parents[r] = parent;
    this.heights[r] = 1;
    if (parent === NONE) this.root = r;
    else this.children[parent * I32_PER_RECORD + (left ? LEFT : RIGHT)] = r;
    this.rebalanceUp(parent);
  }

  /** Takes run `z` out of the tree and frees it. */
  private detach(z: number): void {
    const children = this.children, parents = this.parents;
    const zl = children[z * I32_PER_RECORD + LEFT], zr = children[z * I32_PER_RECORD + RIGHT];
    // The lowest node whose subtree may have lost height.
    let from: number;
    if (zl === NONE || zr === NONE) {
      from = parents[z];
      this.replace(z, zl !== NONE ? zl : zr);
    } else {
      // Two children: the next run up (it has no left child) takes z's place in the tree.
      const y = this.lowest(zr);
      if (parents[y] !== z) {
        from = parents[y];
        this.replace(y, children[y * I32_PER_RECORD + RIGHT]);
        this.setRight(y, zr);
      } else {
        from = y;
      }
      this.replace(z, y);
      this.setLeft(y, zl);
      this.heights[y] = this.heights[z];
    }
    this.counts[z] = 0;
    this.freed.push(z);
    this.rebalanceUp(from);
  }

  private updateHeight(r: number): void {
    const children = this.children, heights = this.heights;
    heights[r] = Math.max(heights[children[r * I32_PER_RECORD + LEFT]], heights[children[r * I32_PER_RECORD + RIGHT]]) + 1;
  }

  private setLeft(r: number, child: number): void {
    this.children[r * I32_PER_RECORD + LEFT] = child;
    if (child !== NONE) this.parents[child] = r;
  }

  private setRight(r: number, child: number): void {
    this.children[r * I32_PER_RECORD + RIGHT] = child;
    if (child !== NONE) this.parents[child] = r;
  }

  /** Puts `by` (or nothing) where `r` hangs from its parent. */
  private replace(r: number, by: number): void {
    const children = this.children;
    const p = this.parents[r];
    if (p === NONE) this.root = by;
    else if (children[p * I32_PER_RECORD + LEFT] === r) children[p * I32_PER_RECORD + LEFT] = by;
    else children[p * I32_PER_RECORD + RIGHT] = by;
    if (by !== NONE) this.parents[by] = p;
  }

  /**
   * From r to the root: fix heights and rotate where the two sides differ by
   * two. Stops once a subtree ends as tall as it was, since nothing above it
   * can have changed: an insert stops after at most one rotation, a removal
   * may rotate at every level.
   */
  private rebalanceUp(r: number): void {
    const heights = this.heights;
    while (r !== NONE) {
      const was = heights[r];
      const top = this.rebalance(r);
      if (heights[top] === was) return;
      r = this.parents[top];
    }
  }

  /** Restores r's balance; returns the node now at r's place. */
  private rebalance(r: number): number {
    const children = this.children, heights = this.heights;
    const left = children[r * I32_PER_RECORD + LEFT], right = children[r * I32_PER_RECORD + RIGHT];
    const lean = heights[left] - heights[right];
    if (lean > 1) {
      if (heights[children[left * I32_PER_RECORD + LEFT]] < heights[children[left * I32_PER_RECORD + RIGHT]]) this.rotateLeft(left);
      return this.rotateRight(r);
    }
    if (lean < -1) {
      if (heights[children[right * I32_PER_RECORD + RIGHT]] < heights[children[right * I32_PER_RECORD + LEFT]]) this.rotateRight(right);
      return this.rotateLeft(r);
    }
    this.updateHeight(r);
    return r;
  }

  /** r's right child rises into r's place; r becomes its left child. */
  private rotateLeft(r: number): number {
    const up = this.children[r * I32_PER_RECORD + RIGHT];
    this.setRight(r, this.children[up * I32_PER_RECORD + LEFT]);
    this.replace(r, up);
    this.setLeft(up, r);
    this.updateHeight(r);
    this.updateHeight(up);
    return up;
  }

  /** r's left child rises into r's place; r becomes its right child. */
  private rotateRight(r: number): number {
    const up = this.children[r * I32_PER_RECORD + LEFT];
    this.setLeft(r, this.children[up * I32_PER_RECORD + RIGHT]);
    this.replace(r, up);
    this.setRight(up, r);
    this.updateHeight(r);
    this.updateHeight(up);
    return up;
  }
}
