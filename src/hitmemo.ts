// A memo of the engine's IOTLB hits, in front of the per-call paths
// (domain.translate / translateHpa, and a DMA port's transfers from the
// caller's own arrays), so a repeated hit costs no call into WASM.
//
// It is exact by construction. An IOTLB hit changes nothing but the hit
// counter, and the engine bumps its TLB generation (TLB_GENERATION) on
// everything else that could change a lookup's outcome: every fill (so every
// eviction), every flush of any scope, every context and doorbell change.
// While the generation is the one a hit was seen at, the same lookup (context,
// PASID, access, 4 KiB IOVA page: every address of that page finds the same
// entry) is that hit again. The memo answers it and counts it in
// engine.replayedHits, which Engine.counters() adds to the engine's hit counter
// before anyone reads the counters.
//
// Only hits are remembered: the caller records what an engine call answered
// when the call left the generation alone (a miss fills, and that bumps it).
// A filled translation is remembered at its next hit, made by the engine.
import type { Engine } from "./engine/engine.js";

/** Direct-mapped: 1024 consecutive pages (4 MiB of IOVAs) of one lookup kind without a conflict. */
const SLOTS = 1024;
// A slot: the 4 KiB IOVA page number, the key (the lookup's tag in the
// memo's current era), what the page's first byte translates to (an HPA, or
// a linear-memory offset: the caller's choice), and the caller's word.
// 32 bytes: the table stays small in the cache (a hit's cost is mostly its load).
const STRIDE = 4;
const PAGE = 0, KEY = 1, OUT = 2, WORD = 3;

// The memo's era stands for one engine generation: a key is tag + era · ERA,
// so a new generation (a new era) ends every slot at once. Tags are below ERA
// and keys below 2^53, exact; after ERAS eras the table is cleared and they start again.
const ERA = 2 ** 36;
const ERAS = 2 ** 17;
const NONE = new Float64Array(0);

/** A lookup's tag: context id (below 4096), PASID (20 bits) and access bits (4), below 2^36. */
export const memoTag = (ctxId: number, pasid: number, access: number): number => (ctxId * 0x100000 + pasid) * 16 + access;

/** The IOVA just past the translation page of 2^sizeLog bytes that holds iova (below 2^53). */
export function pageEnd(iova: number, sizeLog: number): number {
  const size = 2 ** sizeLog;
  return Math.floor(iova / size) * size + size;
}

/**
 * The slot of (tag, page): consecutive pages of one tag take consecutive
 * slots, and one page's lookups with other tags (a read and a write of it)
 * other slots. Exact arithmetic (below 2^47); `&` takes it modulo 2^32 first.
 */
const slotOf = (tag: number, page: number): number => ((page + tag * 613) & (SLOTS - 1)) * STRIDE;

export class HitMemo {
  /** Allocated at the first record: a domain that never repeats a hit costs nothing. */
  private slots: Float64Array = NONE;
  /** The generation the current era stands for (-1: none yet). */
  private seen = -1;
  /** era · ERA. */
  private era = 0;
  private readonly generation: Float64Array;
  private readonly replayed: Float64Array;

  constructor(engine: Engine) {
    this.generation = engine.generation;
    this.replayed = engine.replayedHits;
  }

  /**
   * The slot that replays the lookup (tag, iova), iova a safe integer, counted
   * as the IOTLB hit it stands for; -1 when there is none (call the engine).
   */
  find(tag: number, iova: number): number {
    if (this.generation[0] !== this.seen) return this.newEra();
    const page = Math.floor(iova / 4096);
    const i = slotOf(tag, page);
    const s = this.slots;
    // An empty memo reads undefined, which is no page.
    if (s[i + PAGE] !== page || s[i + KEY] !== tag + this.era) return -1;
    this.replayed[0]++;
    return i;
  }

  /**
   * The per-call fast path in one small call: what iova translates to when a
   * remembered hit of (tag, iova) covers `n` bytes from iova (to its
   * translation page's end, the slot's word), counted as that hit; -1 when
   * none does (find the pieces one by one).
   */
  covered(tag: number, iova: number, n: number): number {
    if (this.generation[0] !== this.seen) return this.newEra();
    const page = Math.floor(iova / 4096);
    const i = slotOf(tag, page);
    const s = this.slots;
    if (s[i + PAGE] !== page || s[i + KEY] !== tag + this.era || s[i + WORD] - iova < n) return -1;
    this.replayed[0]++;
    return s[i + OUT] + (iova - page * 4096);
  }

  /** What iova (in the slot's 4 KiB page, or on to its translation page's end) translates to. */
  out(slot: number, iova: number): number { return this.slots[slot + OUT] + (iova - this.slots[slot + PAGE] * 4096); }

  /** The word recorded with the slot. */
  word(slot: number): number { return this.slots[slot + WORD]; }

  /**
   * Remembers a hit the engine just answered, at the current generation: iova
   * translated to `out`; `word` is the caller's. The caller has checked that
   * the call was a hit.
   */
  record(tag: number, iova: number, out: number, word: number): void {
    if (this.generation[0] !== this.seen) this.newEra();
    if (this.slots === NONE) this.slots = new Float64Array(SLOTS * STRIDE).fill(-1);
    const s = this.slots;
    const page = Math.floor(iova / 4096);
    const i = slotOf(tag, page);
    s[i + PAGE] = page;
    s[i + KEY] = tag + this.era;
    s[i + OUT] = out - (iova - page * 4096);
    s[i + WORD] = word;
  }

  /** The generation moved: every slot ends. Returns -1 (find's "none"). */
  private newEra(): number {
    this.seen = this.generation[0];
    this.era += ERA;
    if (this.era >= ERA * ERAS) {
      this.era = 0;
      this.slots.fill(-1);
    }
    return -1;
  }
}
