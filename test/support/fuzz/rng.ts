// A small seeded PRNG for the API fuzz test: the same seed gives the same
// calls with the same arguments, so a finding is replayed by its seed alone.
// xorshift32 (Marsaglia, 2003): three shifts per number, plenty for picking.

export class Rng {
  private state: number;

  constructor(seed: number) {
    // xorshift has one fixed point, 0; mix the seed so small seeds differ at once.
    this.state = (Math.imul(seed >>> 0, 0x9e3779b1) ^ 0x6d2b79f5) >>> 0 || 1;
  }

  /** A 32-bit unsigned integer. */
  next(): number {
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x >>> 0;
    return this.state;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return Math.floor((this.next() / 0x100000000) * n);
  }

  /** An integer in [lo, hi]. */
  between(lo: number, hi: number): number {
    return lo + this.below(hi - lo + 1);
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("Rng.pick: nothing to pick from");
    return items[this.below(items.length)];
  }

  chance(p: number): boolean {
    return this.next() / 0x100000000 < p;
  }
}
