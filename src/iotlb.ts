// Host-wide view of the IOTLB: geometry, counters, flush of everything.
// Per-domain invalidation lives on Domain.
import * as abi from "./engine/abi.js";
import type { Engine } from "./engine/engine.js";

export interface IotlbStats { hits: number; misses: number; evictions: number; invalidations: number; walks: number }

export class Iotlb {
  readonly sets: number;
  readonly ways: number;

  /** @internal */
  constructor(private readonly engine: Engine) {
    this.sets = engine.u32(abi.LAYOUT_TLB_SETS);
    this.ways = engine.u32(abi.LAYOUT_TLB_WAYS);
  }

  get entries(): number { return this.sets * this.ways; }

  stats(): IotlbStats {
    const e = this.engine;
    e.counters();
    return {
      hits: Number(e.u64(abi.CNT_HITS)),
      misses: Number(e.u64(abi.CNT_MISSES)),
      evictions: Number(e.u64(abi.CNT_EVICTIONS)),
      invalidations: Number(e.u64(abi.CNT_INVALIDATIONS)),
      walks: Number(e.u64(abi.CNT_WALKS)),
    };
  }

  /**
   * Live entries in each set (index = set), for tools that draw the cache:
   * an entry counts while a lookup could still hit it. O(sets × ways).
   */
  occupancy(): Uint8Array {
    const e = this.engine;
    e.wasm.iotlbOccupancy(e.staging);
    return e.bytes.slice(e.staging, e.staging + this.sets);
  }

  invalidateAll(): void { this.engine.wasm.iotlbFlushAll(); }
}
