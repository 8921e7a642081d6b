// A small seeded generator for the page-table self-tests: the same seed
// gives the same run. FC_SEED (as for the property tests) overrides every
// test's own seed, so a failure's seed can be replayed.
const SEED_OVERRIDE = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : undefined;

export class Rng {
  readonly seed: number;
  private s: number;

  constructor(seed: number) {
    this.seed = SEED_OVERRIDE ?? seed;
    this.s = this.seed >>> 0 || 0x9e3779b9;
  }

  /** mulberry32: 32 random bits. */
  u32(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** 64 random bits. */
  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }

  /** Uniform-enough in [0, n) for n ≥ 1 (bias below 2^-64 · n). */
  below(n: bigint): bigint {
    if (n <= 0n) throw new RangeError(`below(${n})`);
    return ((this.u64() << 64n) | this.u64()) % n;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Number(this.below(BigInt(n)));
  }

  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p;
  }

  pick<T>(list: readonly T[]): T {
    return list[this.int(list.length)];
  }
}
