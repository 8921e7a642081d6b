// The twin's IOVA allocator (src/dmaapi/iova.ts, Linux v6.17-rc4 iova.c): the
// kernel's code read line by line over a sorted array of BigInt ranges, with
// the kernel's own anchor (pfn ~0UL) and u64 wrap-around, linear scans
// everywhere (rb_prev / rb_next are index ± 1, find is a scan) and the same
// rcache (one CPU, orders 0..5, magazines of 127, the depot trimmed to one
// magazine right after a push).
//
// __alloc_and_insert_iova_range is transcribed as written: walk down from the
// cached node (cached32_node for limits at or below 4 GiB) while the aligned
// candidate overlaps the next lower node, then retry once from the limit over
// the part above the cached node. The engine-side allocator computes the same
// answer as two "highest fit in a window" searches on an augmented tree; this
// file is what the differential test holds it to.
//
// The model's refusals are the allocator's: free / freeFast of anything not
// handed out, a freeFast of the wrong size or of a range not aligned to it, a
// reserve over an allocated range, lo > hi, pfns past 2^52 − 1; the rcache is
// skipped when limit + 1 < size.
import type { Address } from "../../src/addr.js";
import { fail } from "../../src/errors.js";
import type { IovaHints, IovaRange, IovaRangeState, IovaSnapshot, IovaStats } from "../../src/dmaapi/iova.js";

const U64 = (1n << 64n) - 1n;
const IOVA_ANCHOR = U64;
const SHIFT = 12n;
const DMA_32BIT_PFN = 1n << (32n - SHIFT);
const MAX_PFN = U64 >> SHIFT;
const RANGE_CACHE_MAX_SIZE = 6;
const MAG_SIZE = 127;
const CPUS = 1;

interface Node {
  lo: bigint;
  hi: bigint;
  state: "allocated" | "cached" | "reserved" | "anchor";
}

interface Mag { pfns: bigint[] }
interface Rcache { loaded: Mag; prev: Mag; depot: Mag[] /* head last */ }

/** fls_long(x): the 1-based index of the highest set bit, 0 for 0. */
function fls(x: bigint): bigint {
  let n = 0n;
  while (x > 0n) {
    x >>= 1n;
    n++;
  }
  return n;
}

/** order_base_2(n). */
function orderBase2(n: bigint): number {
  return n <= 1n ? 0 : Number(fls(n - 1n));
}

function roundupPow2(n: bigint): bigint {
  return 1n << BigInt(orderBase2(n));
}

function pfnArg(value: Address, what: string): bigint {
  const v = typeof value === "number" && Number.isSafeInteger(value) ? BigInt(value) : value;
  if (typeof v !== "bigint" || v < 0n || v > MAX_PFN) fail("EINVAL", `${what} must be an integer from 0 to 0x${MAX_PFN.toString(16)}, got ${String(value)}`);
  return v;
}

function sizeArg(value: Address): bigint {
  const v = typeof value === "number" && Number.isSafeInteger(value) ? BigInt(value) : value;
  if (typeof v !== "bigint" || v < 1n || v > MAX_PFN + 1n) fail("EINVAL", `size must be an integer from 1 to 2^52 granules, got ${String(value)}`);
  return v;
}

export class NaiveIovaDomain {
  readonly startPfn: bigint;
  /** Sorted by lo; the anchor is last. */
  private readonly nodes: Node[];
  private readonly anchor: Node = { lo: IOVA_ANCHOR, hi: IOVA_ANCHOR, state: "anchor" };
  private cachedNode: Node;
  private cached32Node: Node;
  private max32AllocSize = DMA_32BIT_PFN;
  private readonly rcaches: Rcache[] = [];
  private readonly counts = { rcacheHits: 0, rcacheMisses: 0, treeAllocs: 0, treeFrees: 0 };

  constructor(options: { startPfn?: Address } = {}) {
    const start = options.startPfn === undefined ? 1n : pfnArg(options.startPfn, "start pfn");
    if (start < 1n) fail("EINVAL", "start pfn must be at least 1: IOVA page 0 is never handed out");
    this.startPfn = start;
    this.nodes = [this.anchor];
    this.cachedNode = this.anchor;
    this.cached32Node = this.anchor;
    for (let i = 0; i < RANGE_CACHE_MAX_SIZE; i++) this.rcaches.push({ loaded: { pfns: [] }, prev: { pfns: [] }, depot: [] });
  }

  alloc(size: Address, limitPfn: Address, sizeAligned: boolean): bigint | undefined {
    const s = sizeArg(size);
    const limit = pfnArg(limitPfn, "limit pfn");
    return this.allocAndInsert(s, limit + 1n, sizeAligned === true);
  }

  allocFast(size: Address, limitPfn: Address, flushRcache: boolean): bigint | undefined {
    let s = sizeArg(size);
    const limit = pfnArg(limitPfn, "limit pfn");
    if (s < 1n << BigInt(RANGE_CACHE_MAX_SIZE - 1)) s = roundupPow2(s);
    const order = orderBase2(s);
    if (order < RANGE_CACHE_MAX_SIZE) {
      const pfn = limit + 1n >= s ? this.rcacheGet(order, limit + 1n - s) : 0n;
      if (pfn !== 0n) {
        this.nodes.find((n) => n.lo === pfn)!.state = "allocated";
        this.counts.rcacheHits++;
        return pfn;
      }
      this.counts.rcacheMisses++;
    }
    let flush = flushRcache === true;
    for (;;) {
      const pfn = this.allocAndInsert(s, limit + 1n, true);
      if (pfn !== undefined) return pfn;
      if (!flush) return undefined;
      flush = false;
      this.flushRcache();
    }
  }

  free(pfn: Address): void {
    const p = pfnArg(pfn, "pfn");
    const node = this.findNode(p);
    if (!node || node.state !== "allocated") fail("EINVAL", `free of pfn 0x${p.toString(16)}: not allocated`);
    this.removeIova(node);
  }

  freeFast(pfn: Address, size: Address): void {
    const p = pfnArg(pfn, "pfn");
    const s = sizeArg(size);
    const node = this.nodes.find((n) => n.lo === p && n.state !== "reserved" && n.state !== "anchor");
    if (!node || node.state !== "allocated") fail("EINVAL", `free of pfn 0x${p.toString(16)}: not an allocated range's start`);
    const expect = s < 32n ? roundupPow2(s) : s;
    if (node.hi - node.lo + 1n !== expect) fail("EINVAL", `free of pfn 0x${p.toString(16)}: wrong size ${s}`);
    if (p % roundupPow2(expect) !== 0n) fail("EINVAL", `free of pfn 0x${p.toString(16)}: not aligned to its size`);
    const order = orderBase2(s);
    if (order >= RANGE_CACHE_MAX_SIZE) {
      this.removeIova(node);
      return;
    }
    node.state = "cached";
    const rc = this.rcaches[order]!;
    let pushed = false;
    if (rc.loaded.pfns.length === MAG_SIZE) {
      if (rc.prev.pfns.length !== MAG_SIZE) {
        [rc.loaded, rc.prev] = [rc.prev, rc.loaded];
      } else {
        rc.depot.push(rc.loaded);
        rc.loaded = { pfns: [] };
        pushed = true;
      }
    }
    rc.loaded.pfns.push(p);
    if (pushed) while (rc.depot.length > CPUS) this.magazineFreePfns(rc.depot.pop()!);
  }

  reserve(lo: Address, hi: Address): void {
    let pfnLo = pfnArg(lo, "reserve lo");
    const pfnHi = pfnArg(hi, "reserve hi");
    if (pfnLo > pfnHi) fail("EINVAL", "reserve: lo is above hi");
    const overlaps = (n: Node, a: bigint, b: bigint): boolean => a <= n.hi && b >= n.lo;
    for (const n of this.nodes) {
      if (overlaps(n, pfnLo, pfnHi) && (n.state === "allocated" || n.state === "cached")) fail("EBUSY", "reserve overlaps an allocated range");
    }
    // reserve_iova as written (the walk from rb_first, __adjust_overlap_range).
    let overlap = false;
    for (const n of this.nodes) {
      if (overlaps(n, pfnLo, pfnHi)) {
        if (pfnLo < n.lo) n.lo = pfnLo;
        if (pfnHi > n.hi) pfnLo = n.hi + 1n;
        if (pfnLo >= n.lo && pfnHi <= n.hi) return;
        overlap = true;
      } else if (overlap) {
        break;
      }
    }
    this.insert({ lo: pfnLo, hi: pfnHi, state: "reserved" });
  }

  find(pfn: Address): IovaRange | undefined {
    const node = this.findNode(pfnArg(pfn, "pfn"));
    return node ? { lo: node.lo, hi: node.hi, state: node.state as IovaRangeState } : undefined;
  }

  flushRcache(): void {
    for (const rc of this.rcaches) {
      this.magazineFreePfns(rc.loaded);
      this.magazineFreePfns(rc.prev);
    }
    for (const rc of this.rcaches) while (rc.depot.length) this.magazineFreePfns(rc.depot.pop()!);
  }

  ranges(): IovaRange[] {
    return this.nodes.filter((n) => n !== this.anchor).map((n) => ({ lo: n.lo, hi: n.hi, state: n.state as IovaRangeState }));
  }

  stats(): IovaStats {
    const alloc = this.nodes.filter((n) => n.state === "allocated");
    return {
      allocated: alloc.length,
      cached: this.nodes.filter((n) => n.state === "cached").length,
      reserved: this.nodes.filter((n) => n.state === "reserved").length,
      allocatedPfns: alloc.reduce((sum, n) => sum + n.hi - n.lo + 1n, 0n),
      ...this.counts,
    };
  }

  hints(): IovaHints {
    const at = (n: Node): bigint | null => (n === this.anchor ? null : n.lo);
    return { cachedNode: at(this.cachedNode), cached32Node: at(this.cached32Node), max32AllocSize: this.max32AllocSize };
  }

  snapshot(): IovaSnapshot {
    return {
      ranges: this.ranges(),
      rcache: this.rcaches.map((rc) => ({ loaded: [...rc.loaded.pfns], prev: [...rc.prev.pfns], depot: rc.depot.map((m) => [...m.pfns]).reverse() })),
      hints: this.hints(),
      stats: this.stats(),
    };
  }

  // ------------------------------------------------------------ iova.c

  private index(n: Node): number {
    return this.nodes.indexOf(n);
  }

  /** __alloc_and_insert_iova_range, as written. */
  private allocAndInsert(size: bigint, limitPfn: bigint, sizeAligned: boolean): bigint | undefined {
    let alignMask = U64;
    let highPfn = limitPfn;
    let lowPfn = this.startPfn;
    if (sizeAligned) alignMask = (alignMask << fls(size - 1n)) & U64;
    if (limitPfn <= DMA_32BIT_PFN && size >= this.max32AllocSize) return undefined;
    // __get_cached_rbnode
    let currIdx = this.index(limitPfn <= DMA_32BIT_PFN ? this.cached32Node : this.cachedNode);
    let curr: Node | undefined = this.nodes[currIdx]!;
    const retryPfn = curr.hi;
    let newPfn = 0n;
    let retried = false;
    for (;;) {
      do {
        highPfn = highPfn < curr!.lo ? highPfn : curr!.lo;
        newPfn = ((highPfn - size) & U64) & alignMask;
        currIdx--; // rb_prev
        curr = currIdx >= 0 ? this.nodes[currIdx] : undefined;
      } while (curr && newPfn <= curr.hi && newPfn >= lowPfn);
      if (highPfn < size || newPfn < lowPfn) {
        if (!retried && lowPfn === this.startPfn && retryPfn < limitPfn) {
          retried = true;
          highPfn = limitPfn;
          lowPfn = retryPfn + 1n;
          currIdx = this.findLimit(limitPfn);
          curr = this.nodes[currIdx];
          continue;
        }
        this.max32AllocSize = size;
        return undefined;
      }
      break;
    }
    const node: Node = { lo: newPfn, hi: newPfn + size - 1n, state: "allocated" };
    this.insert(node);
    // __cached_rbnode_insert_update
    if (node.hi < DMA_32BIT_PFN) this.cached32Node = node;
    else this.cachedNode = node;
    this.counts.treeAllocs++;
    return newPfn;
  }

  /** iova_find_limit: the anchor above 4 GiB; otherwise the lowest node reaching the limit (any node at or above it starts the same walk). */
  private findLimit(limitPfn: bigint): number {
    if (limitPfn > DMA_32BIT_PFN) return this.nodes.length - 1;
    return this.nodes.findIndex((n) => n.hi >= limitPfn);
  }

  private insert(node: Node): void {
    let i = 0;
    while (this.nodes[i]!.lo < node.lo) i++;
    this.nodes.splice(i, 0, node);
  }

  private findNode(pfn: bigint): Node | undefined {
    return this.nodes.find((n) => n !== this.anchor && n.lo <= pfn && pfn <= n.hi);
  }

  /** remove_iova: __cached_rbnode_delete_update, then rb_erase. */
  private removeIova(free: Node): void {
    const i = this.index(free);
    const next = this.nodes[i + 1]!; // rb_next
    let cached = this.cached32Node;
    if (free === cached || (free.hi < DMA_32BIT_PFN && free.lo >= cached.lo)) this.cached32Node = next;
    if (free.lo < DMA_32BIT_PFN) this.max32AllocSize = DMA_32BIT_PFN;
    cached = this.cachedNode;
    if (free.lo >= cached.lo) this.cachedNode = next;
    this.nodes.splice(i, 1);
    this.counts.treeFrees++;
  }

  private rcacheGet(order: number, limitPfn: bigint): bigint {
    const rc = this.rcaches[order]!;
    if (rc.loaded.pfns.length === 0) {
      if (rc.prev.pfns.length !== 0) [rc.loaded, rc.prev] = [rc.prev, rc.loaded];
      else if (rc.depot.length) rc.loaded = rc.depot.pop()!;
      else return 0n;
    }
    const pfns = rc.loaded.pfns;
    let i = pfns.length - 1;
    while (pfns[i]! > limitPfn) {
      if (i === 0) return 0n;
      i--;
    }
    const pfn = pfns[i]!;
    pfns[i] = pfns[pfns.length - 1]!;
    pfns.pop();
    return pfn;
  }

  /** iova_magazine_free_pfns: each pfn's node leaves the tree, slot order. */
  private magazineFreePfns(mag: Mag): void {
    const list = mag.pfns.splice(0);
    for (const pfn of list) this.removeIova(this.findNode(pfn)!);
  }
}
