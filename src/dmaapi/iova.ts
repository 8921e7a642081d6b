// An IOVA allocator with the observable behaviour of drivers/iommu/iova.c,
// read from mainline Linux v6.17-rc4 (init_iova_domain, alloc_iova,
// __alloc_and_insert_iova_range, iova_find_limit, __get_cached_rbnode,
// __cached_rbnode_insert_update / _delete_update, find_iova, free_iova,
// reserve_iova, alloc_iova_fast, free_iova_fast; the rcache is ./rcache.ts).
// It is not DMA-API specific: dma-iommu's policy (the 32-bit-first try,
// iommu.forcedac) belongs to its caller. docs/mediated-devices.md A9 "As built".
//
// Units are granules of 4 KiB (pfns). Ranges are allocated top-down below a
// limit pfn and never below the domain's start pfn (at least 1: page 0 is never
// handed out). With sizeAligned the start is a multiple of the size rounded up
// to a power of two (align_mask <<= fls_long(size − 1); mainline has no cap on
// that order — CONFIG_IOMMU_LIMIT_IOVA_ALIGNMENT is an Android-only patch).
//
// The address is the kernel's, cached node and all. The kernel walks its
// rb-tree down from a cached node (cached32_node for limits at or below 4 GiB,
// cached_node above), takes the first gap that fits, and retries once over the
// part above that node. Both passes are "the highest fitting aligned start in a
// window": [start_pfn, min(limit, cached.pfn_lo)), then
// [cached.pfn_hi + 1, limit) when cached.pfn_hi < limit. A failure records
// max32_alloc_size = size (whatever the limit), and later requests limited to
// 32 bits of at least that size fail at once until something starting below
// 4 GiB is freed. The cached nodes move as the kernel moves them (to the new
// node on insert; to rb_next(freed) on free, under the kernel's conditions).
// So a driver sees the kernel's IOVAs, including the small hole above the
// cached node that the kernel skips until its retry.
//
// Cost: the ranges are an AVL tree keyed by pfn_lo, threaded (prev/next), each
// node with the gap below it and, per subtree and per alignment order k, the
// largest "room" any gap offers an aligned start: max(pfn_lo − alignUp(gap_lo,
// 2^k)). A range of size s aligned to 2^k fits a gap exactly when that room is
// at least s, so the highest fit in a window is one walk up and one descent:
// O(log n), as are insert and free (the cached-node update takes the successor
// from the threads). Updates stop climbing where nothing changes. Orders are
// kept up to the largest asked for (rebuilt when that grows). Nodes are rows of
// two typed arrays; allocated ranges are also indexed by first pfn in an
// open-addressing table, so the rcache path (allocFast hit, freeFast) is O(1).
//
// Stricter than the kernel (it WARNs, corrupts or takes the call blindly):
// - free / freeFast of anything not handed out (free space, a reserved range, a
//   range sitting in the rcache) → EINVAL, nothing changed; freeFast also
//   wants the range's first pfn and its size (order_base_2 of a wrong size
//   would file the range in the wrong cache), and a start aligned to the size's
//   power of two (an unaligned alloc() range, cached, would come back from
//   allocFast unaligned).
// - reserve over an allocated range → EBUSY (the kernel merges the reservation
//   into the live node); lo > hi → EINVAL. Reserved ranges merge as the kernel
//   merges them (an overlapped reserved node grows down, the rest is a new node).
// - The rcache is not searched when limit + 1 < size (the kernel's unsigned
//   limit − size wraps there and could hand out a range above the limit).
import type { Address } from "../addr.js";
import { fail } from "../errors.js";
import { IovaRcache, IOVA_RANGE_CACHE_MAX_SIZE, orderBase2, type RcacheOrderContents } from "./rcache.js";

/** log2 of the granule: 4 KiB pages. */
export const IOVA_SHIFT = 12;
/** dma_32bit_pfn: the first pfn at or above 4 GiB. */
export const DMA_32BIT_PFN = 2 ** (32 - IOVA_SHIFT);
/** The highest pfn a 64-bit IOVA has (ULLONG_MAX >> shift; reserve_iova WARNs above it). */
export const IOVA_MAX_PFN = 2 ** (64 - IOVA_SHIFT) - 1;
/** alloc_iova_fast rounds sizes below this up to a power of two. */
export const IOVA_FAST_ROUND_BELOW = 2 ** (IOVA_RANGE_CACHE_MAX_SIZE - 1);

/** The anchor node's pfn: above every usable pfn (the kernel's IOVA_ANCHOR is ~0UL; any value above IOVA_MAX_PFN acts alike). */
const ANCHOR_PFN = IOVA_MAX_PFN + 1;

/** A tree node's state. */
const FREE = 0, LIVE = 1, CACHED = 2, RESERVED = 3, ANCHOR = 4;

export type IovaRangeState = "allocated" | "cached" | "reserved";

/** One node of the tree, as a snapshot (pfns, inclusive). */
export interface IovaRange {
  readonly lo: bigint;
  readonly hi: bigint;
  /** "allocated": handed out; "cached": freed into the rcache, still taken; "reserved": reserve(). */
  readonly state: IovaRangeState;
}

export interface IovaStats {
  /** Ranges handed out and not freed. */
  readonly allocated: number;
  /** Ranges sitting in the rcache (still in the tree). */
  readonly cached: number;
  /** Reserved nodes. */
  readonly reserved: number;
  /** Granules handed out. */
  readonly allocatedPfns: bigint;
  /** allocFast answered from the rcache. */
  readonly rcacheHits: number;
  /** allocFast of a cacheable size the rcache could not answer. */
  readonly rcacheMisses: number;
  /** Ranges the tree search placed (alloc, and allocFast misses). */
  readonly treeAllocs: number;
  /** Ranges removed from the tree (free, and cached ranges the rcache gave back). */
  readonly treeFrees: number;
}

/** The kernel's allocation hints, for tests and the twin comparison (null: the anchor). */
export interface IovaHints {
  readonly cachedNode: bigint | null;
  readonly cached32Node: bigint | null;
  readonly max32AllocSize: bigint;
}

export interface IovaSnapshot {
  readonly ranges: readonly IovaRange[];
  readonly rcache: readonly { readonly loaded: readonly bigint[]; readonly prev: readonly bigint[]; readonly depot: readonly (readonly bigint[])[] }[];
  readonly hints: IovaHints;
  readonly stats: IovaStats;
}

export interface IovaDomainOptions {
  /** init_iova_domain's start_pfn: the lowest pfn handed out; at least 1 (default 1, as dma-iommu sets it). */
  readonly startPfn?: Address;
}

// ------------------------------------------------------------- the pfn index

/**
 * Ranges handed out, by first pfn: open addressing with linear probing and
 * backward-shift deletion (no tombstones), grown at half full and shrunk at an
 * eighth. A JS Map was the first choice, but V8's Map rehashes under a
 * set/delete cycle at a steady size: about 10 µs per pair at 10^5 keys.
 */
class PfnTable {
  private keys: Float64Array;
  private vals: Float64Array;
  private mask: number;
  size = 0;

  constructor(private readonly minCap = 64) {
    this.keys = new Float64Array(minCap).fill(-1);
    this.vals = new Float64Array(minCap);
    this.mask = minCap - 1;
  }

  private home(key: number): number {
    const lo = key >>> 0, hi = (key / 4294967296) | 0;
    let h = Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    return (h ^ (h >>> 16)) & this.mask;
  }

  get(key: number): number | undefined {
    const keys = this.keys, mask = this.mask;
    for (let i = this.home(key); ; i = (i + 1) & mask) {
      const k = keys[i]!;
      if (k === key) return this.vals[i];
      if (k === -1) return undefined;
    }
  }

  set(key: number, val: number): void {
    const keys = this.keys, mask = this.mask;
    let i = this.home(key);
    for (; ; i = (i + 1) & mask) {
      const k = keys[i]!;
      if (k === key) {
        this.vals[i] = val;
        return;
      }
      if (k === -1) break;
    }
    keys[i] = key;
    this.vals[i] = val;
    if (++this.size * 2 > keys.length) this.resize(keys.length * 2);
  }

  delete(key: number): void {
    const keys = this.keys, vals = this.vals, mask = this.mask;
    let i = this.home(key);
    for (; ; i = (i + 1) & mask) {
      const k = keys[i]!;
      if (k === key) break;
      if (k === -1) return;
    }
    // Pull later members of the probe run back over the hole.
    for (let j = (i + 1) & mask; ; j = (j + 1) & mask) {
      const k = keys[j]!;
      if (k === -1) break;
      const h = this.home(k);
      if (i <= j ? h <= i || h > j : h <= i && h > j) {
        keys[i] = k;
        vals[i] = vals[j]!;
        i = j;
      }
    }
    keys[i] = -1;
    if (--this.size * 8 < keys.length && keys.length > this.minCap) this.resize(keys.length / 2);
  }

  private resize(cap: number): void {
    const oldKeys = this.keys, oldVals = this.vals;
    this.keys = new Float64Array(cap).fill(-1);
    this.vals = new Float64Array(cap);
    this.mask = cap - 1;
    this.size = 0;
    for (let i = 0; i < oldKeys.length; i++) if (oldKeys[i] !== -1) this.set(oldKeys[i]!, oldVals[i]!);
  }
}

const STATE_NAMES: readonly IovaRangeState[] = ["allocated", "allocated", "cached", "reserved"];

/** Initial per-subtree room orders: 0 (unaligned sizes, single granules); more on demand. */
const INITIAL_KMAX = 0;

// A node's row, in doubles (F_) and in int32s (I_, two per double):
//   int32 0..3   left, right, parent, AVL height
//   double 2     lo
//   double 3     the gap below it: its first pfn (the predecessor's hi + 1, or 0)
//   double 4     hi
//   int32 10..12 in-order threads prev, next; state
//   double 7…    per order k in 0..kmax, the subtree's largest room lo − alignUp(gap, 2^k)
const I_L = 0, I_R = 1, I_P = 2, I_H = 3, I_PREV = 10, I_NEXT = 11, I_ST = 12;
const F_LO = 2, F_GAP = 3, F_HI = 4, F_ROOM = 7;

export class IovaDomain {
  /** The lowest pfn handed out. */
  readonly startPfn: bigint;
  private readonly start: number;

  // ---- tree storage: one row per node (index = node id) in one buffer, seen
  // as doubles (F, rf per row) and as int32s (I, ri = 2·rf per row). What a
  // descent reads (children, lo) and what a recompute reads (height, gap, the
  // first rooms) share the row's first 64 bytes; see the F_ / I_ constants.
  private cap = 0;
  private F: Float64Array = new Float64Array(0);
  private I: Int32Array = new Int32Array(0);
  private kmax = INITIAL_KMAX;
  private rf = F_ROOM + INITIAL_KMAX + 1;
  private ri = 2 * (F_ROOM + INITIAL_KMAX + 1);
  private readonly freeSlots: number[] = [];
  private root = -1;
  private readonly anchor: number;
  /** Set by highestFit: the node whose gap the fit lies in (the new node's successor). */
  private fitSucc = -1;

  // ---- the kernel's hints
  private cached: number;
  private cached32: number;
  private max32 = DMA_32BIT_PFN;

  /** Allocated and cached nodes by their first pfn (free_iova_fast's pfn, the rcache's pfns). */
  private readonly byLo = new PfnTable();
  private readonly rcache: IovaRcache;

  private nAllocated = 0;
  private nCached = 0;
  private nReserved = 0;
  private pfnsAllocated = 0;
  private hits = 0;
  private misses = 0;
  private treeAllocs = 0;
  private treeFrees = 0;

  constructor(options: IovaDomainOptions = {}) {
    const start = options.startPfn === undefined ? 1 : pfnArg(options.startPfn, "start pfn");
    if (start < 1) fail("EINVAL", "start pfn must be at least 1: IOVA page 0 is never handed out");
    this.start = start;
    this.startPfn = BigInt(start);
    this.grow(64);
    this.anchor = this.newNode(ANCHOR_PFN, ANCHOR_PFN, ANCHOR);
    this.F[this.anchor * this.rf + F_GAP] = 0;
    this.root = this.anchor;
    this.pull(this.anchor);
    this.cached = this.anchor;
    this.cached32 = this.anchor;
    this.rcache = new IovaRcache((pfn) => this.releaseCached(pfn));
  }

  // =================================================================== API

  /**
   * alloc_iova(size, limit_pfn, size_aligned): the first pfn of `size` granules
   * at or below `limitPfn` (inclusive), or undefined when nothing fits.
   */
  alloc(size: Address, limitPfn: Address, sizeAligned: boolean): bigint | undefined {
    const s = sizeArg(size);
    const limit = pfnArg(limitPfn, "limit pfn");
    const pfn = this.allocTree(s, limit + 1, sizeAligned === true);
    return pfn < 0 ? undefined : BigInt(pfn);
  }

  /**
   * alloc_iova_fast(size, limit_pfn, flush_rcache): sizes below 32 granules are
   * rounded up to a power of two; the rcache first (the most recently freed
   * range of that order within the limit), then the tree, size-aligned; if that
   * fails and `flushRcache`, every cached range goes back to the tree and the
   * tree is tried once more. undefined when nothing fits.
   */
  allocFast(size: Address, limitPfn: Address, flushRcache: boolean): bigint | undefined {
    let s = sizeArg(size);
    const limit = pfnArg(limitPfn, "limit pfn");
    if (s < IOVA_FAST_ROUND_BELOW) s = roundupPow2(s);
    const end = limit + 1;
    if (s <= IOVA_FAST_ROUND_BELOW) {
      const pfn = end >= s ? this.rcache.get(s, end - s) : 0;
      if (pfn !== 0) {
        const node = this.byLo.get(pfn)!;
        this.I[node * this.ri + I_ST] = LIVE;
        this.nCached--;
        this.nAllocated++;
        this.pfnsAllocated += s;
        this.hits++;
        return BigInt(pfn);
      }
      this.misses++;
    }
    let flush = flushRcache === true;
    for (;;) {
      const pfn = this.allocTree(s, end, true);
      if (pfn >= 0) return BigInt(pfn);
      if (!flush) return undefined;
      flush = false;
      this.rcache.flush();
    }
  }

  /**
   * free_iova(pfn): frees the allocated range holding `pfn` (any pfn of it).
   * EINVAL, nothing changed, when `pfn` is in no allocated range (free space, a
   * reserved range, a range in the rcache).
   */
  free(pfn: Address): void {
    const p = pfnArg(pfn, "pfn");
    const node = this.byLo.get(p) ?? this.findNode(p);
    if (node < 0 || this.I[node * this.ri + I_ST] !== LIVE) this.refuseFree(p, node);
    this.nAllocated--;
    this.pfnsAllocated -= this.hiOf(node) - this.loOf(node) + 1;
    this.removeNode(node);
  }

  /**
   * free_iova_fast(pfn, size): the range starting at `pfn`, of `size` granules
   * as given to allocFast (before its rounding), goes into the rcache of its
   * order; sizes past the cached orders go back to the tree. EINVAL, nothing
   * changed, when `pfn` does not start an allocated range, `size` is not its
   * size, or the range is not aligned as allocFast aligns it.
   */
  freeFast(pfn: Address, size: Address): void {
    const p = pfnArg(pfn, "pfn");
    const s = sizeArg(size);
    const node = this.byLo.get(p);
    if (node === undefined || this.I[node * this.ri + I_ST] !== LIVE) this.refuseFree(p, node ?? this.findNode(p));
    const length = this.hiOf(node) - this.loOf(node) + 1;
    const expect = s < IOVA_FAST_ROUND_BELOW ? roundupPow2(s) : s;
    if (length !== expect) {
      fail("EINVAL", `free of 0x${p.toString(16)}: the range has ${length} granules, not ${s}${expect !== s ? ` (rounded: ${expect})` : ""}`);
    }
    if (p % roundupPow2(length) !== 0) {
      // Cached, it would come back from allocFast unaligned.
      fail("EINVAL", `free of 0x${p.toString(16)}: not aligned to its size, so not a range allocFast hands out`);
    }
    this.nAllocated--;
    this.pfnsAllocated -= length;
    this.I[node * this.ri + I_ST] = CACHED;
    this.nCached++;
    if (!this.rcache.insert(p, s)) {
      this.nCached--;
      this.removeNode(node);
    }
  }

  /**
   * reserve_iova(lo, hi): never hand out pfns lo..hi (inclusive). Reserved
   * ranges it overlaps grow down to cover it (the kernel's merge); what is
   * left above the last of them becomes a new reserved node. EBUSY when the
   * range overlaps an allocated or cached range; EINVAL when lo > hi or hi is
   * past IOVA_MAX_PFN. Nothing changed on a refusal.
   */
  reserve(lo: Address, hi: Address): void {
    let a = pfnArg(lo, "reserve lo");
    const b = pfnArg(hi, "reserve hi");
    if (a > b) fail("EINVAL", `reserve: lo 0x${a.toString(16)} is above hi 0x${b.toString(16)}`);
    // The nodes the kernel's walk meets: every node overlapping [a, b], in order.
    let first = this.findNode(a);
    if (first < 0) first = this.lowerBound(a);
    for (let n = first; n >= 0 && this.loOf(n) <= b; n = this.I[n * this.ri + I_NEXT]!) {
      const st = this.I[n * this.ri + I_ST]!;
      if (st === LIVE || st === CACHED) {
        fail("EBUSY", `reserve 0x${a.toString(16)}..0x${b.toString(16)} overlaps the ${STATE_NAMES[st]} range 0x${this.loOf(n).toString(16)}..0x${this.hiOf(n).toString(16)}`);
      }
    }
    for (let n = first; n >= 0 && this.loOf(n) <= b; n = this.I[n * this.ri + I_NEXT]!) {
      if (a < this.loOf(n)) {
        this.F[n * this.rf + F_LO] = a;
        this.touch(n);
      }
      if (b <= this.hiOf(n)) return;
      a = this.hiOf(n) + 1;
    }
    this.insertNode(a, b, RESERVED, this.lowerBound(a));
    this.nReserved++;
  }

  /** find_iova(pfn): the node holding `pfn`, or undefined. */
  find(pfn: Address): IovaRange | undefined {
    const node = this.findNode(pfnArg(pfn, "pfn"));
    return node < 0 ? undefined : this.rangeOf(node);
  }

  /** Every cached range back to the tree (what allocFast does before its last try). */
  flushRcache(): void {
    this.rcache.flush();
  }

  /** Every node but the anchor, lowest first. */
  ranges(): IovaRange[] {
    const out: IovaRange[] = [];
    for (let n = this.first(); n !== this.anchor; n = this.I[n * this.ri + I_NEXT]!) out.push(this.rangeOf(n));
    return out;
  }

  stats(): IovaStats {
    return {
      allocated: this.nAllocated,
      cached: this.nCached,
      reserved: this.nReserved,
      allocatedPfns: BigInt(this.pfnsAllocated),
      rcacheHits: this.hits,
      rcacheMisses: this.misses,
      treeAllocs: this.treeAllocs,
      treeFrees: this.treeFrees,
    };
  }

  hints(): IovaHints {
    const at = (n: number): bigint | null => (n === this.anchor ? null : BigInt(this.loOf(n)));
    return { cachedNode: at(this.cached), cached32Node: at(this.cached32), max32AllocSize: BigInt(this.max32) };
  }

  rcacheContents(): RcacheOrderContents[] {
    return this.rcache.contents();
  }

  /** Everything observable: nodes, magazines, hints, counters. */
  snapshot(): IovaSnapshot {
    const big = (list: readonly number[]): bigint[] => list.map((p) => BigInt(p));
    return {
      ranges: this.ranges(),
      rcache: this.rcache.contents().map((o) => ({ loaded: big(o.loaded), prev: big(o.prev), depot: o.depot.map(big) })),
      hints: this.hints(),
      stats: this.stats(),
    };
  }

  /**
   * The tree's own invariants, for tests: order, AVL heights and balance,
   * parent links and threads, gaps, every room equal to its recomputation, the
   * pfn index. Returns the first violation, or undefined.
   * @internal
   */
  checkTree(): string | undefined {
    const I = this.I, F = this.F, ri = this.ri, rf = this.rf, S = rf - F_ROOM;
    let prev = -1, indexed = 0;
    const walk = (n: number, parent: number): string | undefined => {
      if (n < 0) return undefined;
      if (I[n * ri + I_P] !== parent) return `node 0x${this.loOf(n).toString(16)}: wrong parent link`;
      const l = I[n * ri + I_L]!, r = I[n * ri + I_R]!;
      const bad = walk(l, n);
      if (bad) return bad;
      // In order: n follows prev.
      const lo = this.loOf(n), hi = this.hiOf(n), g = F[n * rf + F_GAP]!;
      const prevHi = prev < 0 ? -1 : this.hiOf(prev);
      if (lo <= prevHi || hi < lo) return `node 0x${lo.toString(16)} is out of order`;
      if (I[n * ri + I_PREV] !== prev || (prev >= 0 && I[prev * ri + I_NEXT] !== n)) return `node 0x${lo.toString(16)}: wrong threads`;
      if (g !== prevHi + 1) return `node 0x${lo.toString(16)} has gap 0x${g.toString(16)}`;
      const st = I[n * ri + I_ST]!;
      if (st === LIVE || st === CACHED) {
        if (this.byLo.get(lo) !== n) return `node 0x${lo.toString(16)} is not in the pfn index`;
        indexed++;
      }
      prev = n;
      const bad2 = walk(r, n);
      if (bad2) return bad2;
      const hl = this.h(l), hr = this.h(r);
      if (I[n * ri + I_H] !== Math.max(hl, hr) + 1 || Math.abs(hl - hr) > 1) return `node 0x${lo.toString(16)}: height or balance`;
      for (let k = 0, p = 1; k < S; k++, p *= 2) {
        let m = lo - Math.ceil(g / p) * p;
        if (l >= 0) m = Math.max(m, F[l * rf + F_ROOM + k]!);
        if (r >= 0) m = Math.max(m, F[r * rf + F_ROOM + k]!);
        if (F[n * rf + F_ROOM + k] !== m) return `node 0x${lo.toString(16)}: stale room at order ${k}`;
      }
      return undefined;
    };
    const bad = walk(this.root, -1);
    if (bad) return bad;
    if (prev !== this.anchor || I[prev * ri + I_NEXT] !== -1) return "the anchor is not last";
    if (indexed !== this.byLo.size) return `the pfn index holds ${this.byLo.size}, the tree ${indexed}`;
    return undefined;
  }

  // ========================================================= the kernel's walk

  /**
   * __alloc_and_insert_iova_range(size, limit_pfn = limit + 1, size_aligned).
   * Returns the new node's first pfn, or -1.
   */
  private allocTree(size: number, limitEnd: number, aligned: boolean): number {
    const k = aligned ? orderBase2(size) : 0;
    const is32 = limitEnd <= DMA_32BIT_PFN;
    if (is32 && size >= this.max32) return -1;
    const c = is32 ? this.cached32 : this.cached;
    let pfn = this.highestFit(this.start, Math.min(limitEnd, this.loOf(c)), size, k);
    if (pfn < 0 && this.hiOf(c) < limitEnd) pfn = this.highestFit(this.hiOf(c) + 1, limitEnd, size, k);
    if (pfn < 0) {
      this.max32 = size;
      return -1;
    }
    const node = this.insertNode(pfn, pfn + size - 1, LIVE, this.fitSucc);
    // __cached_rbnode_insert_update
    if (pfn + size - 1 < DMA_32BIT_PFN) this.cached32 = node;
    else this.cached = node;
    this.nAllocated++;
    this.pfnsAllocated += size;
    this.treeAllocs++;
    return pfn;
  }

  /**
   * The highest start x, a multiple of 2^k, with a ≤ x, x + size ≤ b and
   * [x, x + size) inside one gap between nodes; -1 if none. O(log n).
   */
  private highestFit(a: number, b: number, size: number, k: number): number {
    if (b - a < size) return -1;
    if (k > this.kmax) this.widen(k);
    const p = 2 ** k;
    const F = this.F, rf = this.rf;
    // The lowest node at or above b: its gap is the only one clipped by b.
    const top = this.lowerBound(b);
    const end = Math.min(F[top * rf + F_LO]!, b);
    const bottom = Math.max(F[top * rf + F_GAP]!, a);
    if (end - size >= bottom) {
      const x = Math.floor((end - size) / p) * p;
      if (x >= bottom) {
        this.fitSucc = top;
        return x;
      }
    }
    // Below it every gap ends under b: the highest node before `top` whose own
    // gap has room, then the bound a.
    const j = this.prevWithRoom(top, size, k);
    if (j < 0) return -1;
    const x = Math.floor((F[j * rf + F_LO]! - size) / p) * p;
    this.fitSucc = j;
    return x >= a ? x : -1;
  }

  /** The highest node before n (in order) whose own gap gives an aligned start room for `size`; -1 if none. */
  private prevWithRoom(n: number, size: number, k: number): number {
    const I = this.I, F = this.F, ri = this.ri, rf = this.rf, rk = F_ROOM + k;
    let l = I[n * ri + I_L]!;
    if (l >= 0 && F[l * rf + rk]! >= size) return this.descendHighest(l, size, k);
    let c = n;
    let p = I[c * ri + I_P]!;
    while (p >= 0) {
      if (I[p * ri + I_R] === c) {
        if (this.own(p, k) >= size) return p;
        l = I[p * ri + I_L]!;
        if (l >= 0 && F[l * rf + rk]! >= size) return this.descendHighest(l, size, k);
      }
      c = p;
      p = I[p * ri + I_P]!;
    }
    return -1;
  }

  /** In a subtree known to hold a node with room, the highest such node. */
  private descendHighest(t: number, size: number, k: number): number {
    const I = this.I, F = this.F, ri = this.ri, rf = this.rf, rk = F_ROOM + k;
    for (;;) {
      const r = I[t * ri + I_R]!;
      if (r >= 0 && F[r * rf + rk]! >= size) {
        t = r;
        continue;
      }
      if (this.own(t, k) >= size) return t;
      t = I[t * ri + I_L]!;
    }
  }

  /** Room of node n's own gap for an aligned start at order k: lo − alignUp(gap, 2^k). */
  private own(n: number, k: number): number {
    const row = n * this.rf;
    const g = this.F[row + F_GAP]!;
    if (k === 0) return this.F[row + F_LO]! - g;
    const p = 2 ** k;
    return this.F[row + F_LO]! - Math.ceil(g / p) * p;
  }

  /** remove_iova: the cached-node update, then the node leaves the tree. */
  private removeNode(n: number): void {
    const succ = this.I[n * this.ri + I_NEXT]!;
    const lo = this.loOf(n);
    // __cached_rbnode_delete_update
    const c32 = this.cached32;
    if (n === c32 || (this.hiOf(n) < DMA_32BIT_PFN && lo >= this.loOf(c32))) this.cached32 = succ;
    if (lo < DMA_32BIT_PFN) this.max32 = DMA_32BIT_PFN;
    if (lo >= this.loOf(this.cached)) this.cached = succ;
    this.byLo.delete(lo);
    this.treeFrees++;
    this.erase(n);
  }

  /** The rcache gives a cached range back (depot trim, flush). */
  private releaseCached(pfn: number): void {
    const node = this.byLo.get(pfn)!;
    this.nCached--;
    this.removeNode(node);
  }

  private refuseFree(p: number, node: number): never {
    const st = node < 0 ? FREE : this.I[node * this.ri + I_ST];
    const what = node < 0 ? "no allocated range holds it"
      : st === RESERVED ? "it is reserved"
      : st === CACHED ? "its range is already freed (in the rcache)"
      : "it does not start an allocated range";
    fail("EINVAL", `free of pfn 0x${p.toString(16)}: ${what}`);
  }

  private rangeOf(n: number): IovaRange {
    return { lo: BigInt(this.loOf(n)), hi: BigInt(this.hiOf(n)), state: STATE_NAMES[this.I[n * this.ri + I_ST]!]! };
  }

  private loOf(n: number): number {
    return this.F[n * this.rf + F_LO]!;
  }

  private hiOf(n: number): number {
    return this.F[n * this.rf + F_HI]!;
  }

  // ================================================================= the tree

  private grow(cap: number): void {
    const old = this.cap;
    const F = new Float64Array(cap * this.rf);
    F.set(this.F);
    this.F = F;
    this.I = new Int32Array(F.buffer);
    this.cap = cap;
    for (let i = cap - 1; i >= old; i--) this.freeSlots.push(i);
  }

  private newNode(lo: number, hi: number, state: number): number {
    if (this.freeSlots.length === 0) this.grow(this.cap * 2);
    const n = this.freeSlots.pop()!;
    const I = this.I, b = n * this.ri;
    I[b + I_L] = -1;
    I[b + I_R] = -1;
    I[b + I_P] = -1;
    I[b + I_PREV] = -1;
    I[b + I_NEXT] = -1;
    I[b + I_H] = 1;
    I[b + I_ST] = state;
    this.F[n * this.rf + F_LO] = lo;
    this.F[n * this.rf + F_HI] = hi;
    return n;
  }

  /** Orders up to k in the room rows: re-laid out and recomputed bottom-up (rare: k only grows, to 52 at most). */
  private widen(k: number): void {
    const oldRf = this.rf, old = this.F;
    this.kmax = k;
    this.rf = F_ROOM + k + 1;
    this.ri = 2 * this.rf;
    this.F = new Float64Array(this.cap * this.rf);
    this.I = new Int32Array(this.F.buffer);
    for (let n = 0; n < this.cap; n++) {
      for (let f = 0; f < F_ROOM; f++) this.F[n * this.rf + f] = old[n * oldRf + f]!;
    }
    const order: number[] = [];
    const stack = [this.root];
    while (stack.length) {
      const n = stack.pop()!;
      order.push(n);
      const l = this.I[n * this.ri + I_L]!, r = this.I[n * this.ri + I_R]!;
      if (l >= 0) stack.push(l);
      if (r >= 0) stack.push(r);
    }
    for (let i = order.length - 1; i >= 0; i--) this.pull(order[i]!);
  }

  /** Height and rooms of n from its children and its own gap; whether any changed. */
  private pull(n: number): boolean {
    const I = this.I, F = this.F, ri = this.ri, rf = this.rf;
    const b = n * ri;
    const l = I[b + I_L]!, r = I[b + I_R]!;
    const hl = l < 0 ? 0 : I[l * ri + I_H]!, hr = r < 0 ? 0 : I[r * ri + I_H]!;
    const height = (hl > hr ? hl : hr) + 1;
    let changed = I[b + I_H] !== height;
    I[b + I_H] = height;
    const row = n * rf, lrow = l * rf + F_ROOM, rrow = r * rf + F_ROOM;
    const lo = F[row + F_LO]!, g = F[row + F_GAP]!;
    const S = rf - F_ROOM;
    // Own room per order: lo − alignUp(g, 2^k), falling as k grows.
    let v = lo - g;
    let p = 1;
    for (let k = 0; k < S; k++) {
      if (k !== 0) {
        p *= 2;
        v = lo - Math.ceil(g / p) * p;
      }
      let m = v;
      if (l >= 0) {
        const x = F[lrow + k]!;
        if (x > m) m = x;
      }
      if (r >= 0) {
        const x = F[rrow + k]!;
        if (x > m) m = x;
      }
      if (F[row + F_ROOM + k] !== m) {
        F[row + F_ROOM + k] = m;
        changed = true;
      }
    }
    return changed;
  }

  private h(n: number): number {
    return n < 0 ? 0 : this.I[n * this.ri + I_H]!;
  }

  private replaceChild(p: number, old: number, child: number): void {
    if (p < 0) this.root = child;
    else if (this.I[p * this.ri + I_L] === old) this.I[p * this.ri + I_L] = child;
    else this.I[p * this.ri + I_R] = child;
  }

  /**
   * Rotate x down, its child on side `up` (I_R: a left rotation, I_L: a
   * right one) coming up in its place; returns that child.
   */
  private rotate(x: number, up: number): number {
    const I = this.I, ri = this.ri, down = up === I_L ? I_R : I_L;
    const y = I[x * ri + up]!;
    const b = I[y * ri + down]!;
    I[x * ri + up] = b;
    if (b >= 0) I[b * ri + I_P] = x;
    const p = I[x * ri + I_P]!;
    I[y * ri + I_P] = p;
    this.replaceChild(p, x, y);
    I[y * ri + down] = x;
    I[x * ri + I_P] = y;
    this.pull(x);
    this.pull(y);
    return y;
  }

  /**
   * Rebalance and recompute from x up: every node to the root, or, once
   * `until` (the node whose own gap changed; -1 for none) has been recomputed,
   * up to the first node that neither rotates nor changes — above it nothing
   * can. A new leaf's successor is usually a near ancestor, so this rarely
   * climbs far.
   */
  private retrace(x: number, until: number): void {
    const I = this.I, ri = this.ri;
    let passed = until < 0;
    while (x >= 0) {
      if (x === until) passed = true;
      const l = I[x * ri + I_L]!, r = I[x * ri + I_R]!;
      const bf = this.h(l) - this.h(r);
      let top: number;
      if (bf > 1) {
        if (this.h(I[l * ri + I_L]!) < this.h(I[l * ri + I_R]!)) this.rotate(l, I_R);
        top = this.rotate(x, I_L);
      } else if (bf < -1) {
        if (this.h(I[r * ri + I_R]!) < this.h(I[r * ri + I_L]!)) this.rotate(r, I_L);
        top = this.rotate(x, I_R);
      } else {
        if (!this.pull(x) && passed) return;
        top = x;
      }
      x = I[top * ri + I_P]!;
    }
  }

  /** Recompute rooms from x to the root (x's own gap changed; no shape change). */
  private touch(x: number): void {
    while (x >= 0) {
      this.pull(x);
      x = this.I[x * this.ri + I_P]!;
    }
  }

  /**
   * Insert [lo, hi] (disjoint from every node) just below `succ`, its
   * in-order successor: as succ's left child, or else as the right child of
   * succ's predecessor (the highest node of succ's left subtree, which has no
   * right child). No descent.
   */
  private insertNode(lo: number, hi: number, state: number, succ: number): number {
    const n = this.newNode(lo, hi, state);
    const I = this.I, F = this.F, ri = this.ri, rf = this.rf;
    const pred = I[succ * ri + I_PREV]!;
    let p: number;
    if (I[succ * ri + I_L]! < 0) {
      p = succ;
      I[p * ri + I_L] = n;
    } else {
      p = pred;
      I[p * ri + I_R] = n;
    }
    I[n * ri + I_P] = p;
    I[n * ri + I_PREV] = pred;
    I[n * ri + I_NEXT] = succ;
    if (pred >= 0) I[pred * ri + I_NEXT] = n;
    I[succ * ri + I_PREV] = n;
    F[n * rf + F_GAP] = pred >= 0 ? F[pred * rf + F_HI]! + 1 : 0;
    F[succ * rf + F_GAP] = hi + 1;
    if (state === LIVE) this.byLo.set(lo, n);
    this.pull(n);
    // The successor of a new leaf is one of its ancestors: the retrace recomputes it.
    this.retrace(p, succ);
    return n;
  }

  /** Take n out of the tree (not the anchor). */
  private erase(n: number): void {
    const I = this.I, F = this.F, ri = this.ri, rf = this.rf;
    const pred = I[n * ri + I_PREV]!, succ = I[n * ri + I_NEXT]!;
    F[succ * rf + F_GAP] = F[n * rf + F_GAP]!;
    I[succ * ri + I_PREV] = pred;
    if (pred >= 0) I[pred * ri + I_NEXT] = succ;
    const l = I[n * ri + I_L]!, r = I[n * ri + I_R]!, p = I[n * ri + I_P]!;
    if (l >= 0 && r >= 0) {
      // Two children: the successor (the right subtree's lowest) takes n's
      // place; the retrace from below it passes through it.
      const s = succ;
      let from: number;
      if (I[s * ri + I_P] === n) {
        from = s;
      } else {
        const ps = I[s * ri + I_P]!;
        const sr = I[s * ri + I_R]!;
        I[ps * ri + I_L] = sr;
        if (sr >= 0) I[sr * ri + I_P] = ps;
        I[s * ri + I_R] = r;
        I[r * ri + I_P] = s;
        from = ps;
      }
      I[s * ri + I_L] = l;
      I[l * ri + I_P] = s;
      I[s * ri + I_P] = p;
      this.replaceChild(p, n, s);
      I[s * ri + I_H] = I[n * ri + I_H]!;
      this.retrace(from, s);
    } else {
      const c = l >= 0 ? l : r;
      if (c >= 0) I[c * ri + I_P] = p;
      this.replaceChild(p, n, c);
      // With only a right child, that child (an AVL leaf) is the successor,
      // whose gap just grew: recompute it before the path above. Otherwise the
      // successor is an ancestor, on the path.
      if (c >= 0 && c === r) {
        this.pull(c);
        this.retrace(p, -1);
      } else {
        this.retrace(p, succ);
      }
    }
    I[n * ri + I_ST] = FREE;
    this.freeSlots.push(n);
  }

  /** The node holding pfn, or -1 (never the anchor). */
  private findNode(pfn: number): number {
    const I = this.I, F = this.F, ri = this.ri, rf = this.rf;
    let t = this.root, best = -1;
    while (t >= 0) {
      if (F[t * rf + F_LO]! <= pfn) {
        best = t;
        t = I[t * ri + I_R]!;
      } else {
        t = I[t * ri + I_L]!;
      }
    }
    return best >= 0 && best !== this.anchor && pfn <= F[best * rf + F_HI]! ? best : -1;
  }

  /** The lowest node with lo ≥ pfn (the anchor at worst, for pfn ≤ ANCHOR_PFN). */
  private lowerBound(pfn: number): number {
    const I = this.I, F = this.F, ri = this.ri, rf = this.rf;
    let t = this.root, res = -1;
    while (t >= 0) {
      if (F[t * rf + F_LO]! >= pfn) {
        res = t;
        t = I[t * ri + I_L]!;
      } else {
        t = I[t * ri + I_R]!;
      }
    }
    return res;
  }

  private first(): number {
    let t = this.root;
    while (this.I[t * this.ri + I_L]! >= 0) t = this.I[t * this.ri + I_L]!;
    return t;
  }
}

const MAX_PFN_BIG = BigInt(IOVA_MAX_PFN);
const ANCHOR_BIG = BigInt(ANCHOR_PFN);

/** A pfn argument: a non-negative integer at most IOVA_MAX_PFN. */
function pfnArg(value: Address, what: string): number {
  if (typeof value === "number") {
    if (Number.isSafeInteger(value) && value >= 0 && value <= IOVA_MAX_PFN) return value;
  } else if (typeof value === "bigint") {
    if (value >= 0n && value <= MAX_PFN_BIG) return Number(value);
  }
  fail("EINVAL", `${what} must be an integer from 0 to 0x${IOVA_MAX_PFN.toString(16)}, got ${String(value)}`);
}

/** A size in granules: 1 to IOVA_MAX_PFN + 1. */
function sizeArg(value: Address): number {
  if (typeof value === "number") {
    if (Number.isSafeInteger(value) && value >= 1 && value <= ANCHOR_PFN) return value;
  } else if (typeof value === "bigint") {
    if (value >= 1n && value <= ANCHOR_BIG) return Number(value);
  }
  fail("EINVAL", `size must be an integer from 1 to 2^52 granules, got ${String(value)}`);
}

/** roundup_pow_of_two for 1 ≤ n ≤ 2^52. */
function roundupPow2(n: number): number {
  return 2 ** orderBase2(n);
}
