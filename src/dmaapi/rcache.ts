// The IOVA range cache of drivers/iommu/iova.c (struct iova_rcache), for one
// CPU. Read from mainline Linux v6.17-rc4 (iova_rcache_get / __iova_rcache_get,
// iova_rcache_insert / __iova_rcache_insert, iova_magazine_pop / _push,
// iova_depot_pop / _push, iova_depot_work_func, free_cpu_cached_iovas,
// free_global_cached_iovas; the list depot and IOVA_MAG_SIZE 127 date from
// v6.7, before which magazines held 128 pfns and the depot was an array of 32).
//
// A freed range of 2^order granules (order < IOVA_RANGE_CACHE_MAX_SIZE) goes
// into its order's cache instead of back to the tree; it stays allocated in the
// tree while it sits here, exactly as in the kernel. Each order has a `loaded`
// and a `prev` magazine (IOVA_MAG_SIZE pfns each) and a depot of full
// magazines, a stack whose head is the most recently pushed:
//
// - get: if loaded is empty, swap in prev; if both are empty, take the depot's
//   head (the empty loaded is dropped). Then search loaded from the top for a
//   pfn at most the limit, move the last entry into its slot and return it;
//   none fits → 0, without looking at prev or the depot (the kernel's rule).
// - insert: if loaded is full, swap in prev; if both are full, push loaded onto
//   the depot and start an empty one. Then push the pfn.
// - The kernel trims each depot from delayed work (IOVA_DEPOT_DELAY, 100 ms)
//   down to num_online_cpus() magazines, popping the head and freeing its pfns
//   to the tree in magazine order. The model has no clock: it trims right after
//   the push that grew the depot, to RCACHE_CPUS (1) magazines — what the work
//   item does if it runs before the next call. The twin does the same.
// - flush (alloc_iova_fast's flush_rcache retry): for each order, loaded then
//   prev; then for each order, the depot from its head. Each magazine's pfns go
//   back to the tree in slot order, which matters: every free moves the tree's
//   cached nodes.
//
// get and insert cost O(1) (at most IOVA_MAG_SIZE comparisons); releasing a
// magazine costs one tree free per pfn.

/** Orders 0..5 are cached: ranges of 1..32 granules (log of the largest cached size, plus one). */
export const IOVA_RANGE_CACHE_MAX_SIZE = 6;
/** pfns per magazine (127 so a magazine is 1 KiB with its count, v6.7+). */
export const IOVA_MAG_SIZE = 127;
/** The CPUs the model has: one, so each depot is trimmed to one magazine. */
export const RCACHE_CPUS = 1;

/** order_base_2(n): ceil(log2(n)); 0 for n ≤ 1. Exact for n up to 2^53. */
export function orderBase2(n: number): number {
  if (n <= 1) return 0;
  if (n <= 0x80000000) return 32 - Math.clz32(n - 1);
  let k = 31;
  while (2 ** k < n) k++;
  return k;
}

interface Magazine {
  size: number;
  readonly pfns: Float64Array;
}

interface OrderCache {
  loaded: Magazine;
  prev: Magazine;
  /** Full magazines; the last element is the depot's head. */
  readonly depot: Magazine[];
}

/** What one order holds, for tests and the twin comparison. */
export interface RcacheOrderContents {
  readonly loaded: readonly number[];
  readonly prev: readonly number[];
  /** Depot magazines from the head down. */
  readonly depot: readonly (readonly number[])[];
}

function newMagazine(): Magazine {
  return { size: 0, pfns: new Float64Array(IOVA_MAG_SIZE) };
}

export class IovaRcache {
  private readonly caches: OrderCache[] = [];

  /**
   * @param release gives one cached range (by its first pfn) back to the tree:
   *   called for depot trims and flushes, in the kernel's order.
   */
  constructor(private readonly release: (pfn: number) => void) {
    for (let i = 0; i < IOVA_RANGE_CACHE_MAX_SIZE; i++) {
      this.caches.push({ loaded: newMagazine(), prev: newMagazine(), depot: [] });
    }
  }

  /**
   * iova_rcache_get: a cached range of `size` granules (its order,
   * order_base_2(size)) starting at most at `maxPfn` (the caller's exclusive
   * limit minus the size), or 0.
   */
  get(size: number, maxPfn: number): number {
    const order = orderBase2(size);
    if (order >= IOVA_RANGE_CACHE_MAX_SIZE) return 0;
    const rc = this.caches[order]!;
    if (rc.loaded.size === 0) {
      if (rc.prev.size !== 0) {
        const t = rc.loaded;
        rc.loaded = rc.prev;
        rc.prev = t;
      } else if (rc.depot.length !== 0) {
        rc.loaded = rc.depot.pop()!;
      } else {
        return 0;
      }
    }
    return pop(rc.loaded, maxPfn);
  }

  /** iova_rcache_insert: false when the size is too large to cache (the caller frees it to the tree). */
  insert(pfn: number, size: number): boolean {
    const order = orderBase2(size);
    if (order >= IOVA_RANGE_CACHE_MAX_SIZE) return false;
    const rc = this.caches[order]!;
    let pushed = false;
    if (rc.loaded.size === IOVA_MAG_SIZE) {
      if (rc.prev.size !== IOVA_MAG_SIZE) {
        const t = rc.loaded;
        rc.loaded = rc.prev;
        rc.prev = t;
      } else {
        rc.depot.push(rc.loaded);
        rc.loaded = newMagazine();
        pushed = true;
      }
    }
    rc.loaded.pfns[rc.loaded.size++] = pfn;
    if (pushed) this.trim(rc);
    return true;
  }

  /** free_cpu_cached_iovas then free_global_cached_iovas: every cached range back to the tree. */
  flush(): void {
    for (const rc of this.caches) {
      this.releaseAll(rc.loaded);
      this.releaseAll(rc.prev);
    }
    for (const rc of this.caches) {
      while (rc.depot.length !== 0) this.releaseAll(rc.depot.pop()!);
    }
  }

  /** How many ranges are cached, over all orders. */
  count(): number {
    let n = 0;
    for (const rc of this.caches) {
      n += rc.loaded.size + rc.prev.size;
      for (const m of rc.depot) n += m.size;
    }
    return n;
  }

  /** Every order's magazines, slot order. */
  contents(): RcacheOrderContents[] {
    const list = (m: Magazine): number[] => Array.from(m.pfns.subarray(0, m.size));
    return this.caches.map((rc) => ({
      loaded: list(rc.loaded),
      prev: list(rc.prev),
      depot: rc.depot.map(list).reverse(),
    }));
  }

  /** iova_depot_work_func, run to completion: free depot heads until RCACHE_CPUS magazines remain. */
  private trim(rc: OrderCache): void {
    while (rc.depot.length > RCACHE_CPUS) this.releaseAll(rc.depot.pop()!);
  }

  /** iova_magazine_free_pfns: slot order, then the magazine is empty. */
  private releaseAll(mag: Magazine): void {
    const n = mag.size;
    mag.size = 0;
    for (let i = 0; i < n; i++) this.release(mag.pfns[i]!);
  }
}

/** iova_magazine_pop: the topmost pfn at most maxPfn, swapped with the last entry; 0 when none fits. */
function pop(mag: Magazine, maxPfn: number): number {
  const pfns = mag.pfns;
  let i = mag.size - 1;
  while (pfns[i]! > maxPfn) {
    if (i === 0) return 0;
    i--;
  }
  const pfn = pfns[i]!;
  pfns[i] = pfns[--mag.size]!;
  return pfn;
}
