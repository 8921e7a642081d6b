// How many runs a property test makes: the count a test asks for (its CI
// strength), FC_RUNS=<n> to set it, FC_SEED=<n> to replay a seed, and
// IOMMU_TEST_QUICK=1 (npm run test:quick) for a tenth of it while iterating.
import type fc from "fast-check";

const SEED = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : undefined;
const RUNS = process.env.FC_RUNS !== undefined ? Number(process.env.FC_RUNS) : undefined;
const QUICK = process.env.IOMMU_TEST_QUICK === "1";

/** The run count for a test that asks for `numRuns` in CI. */
export function runs(numRuns: number): number {
  return RUNS ?? (QUICK ? Math.max(1, Math.ceil(numRuns / 10)) : numRuns);
}

/** fast-check parameters for a test that asks for `numRuns` in CI. */
export function params(numRuns: number): fc.Parameters<unknown> {
  return { numRuns: runs(numRuns), ...(SEED !== undefined ? { seed: SEED } : {}) };
}

/**
 * A coverage floor a property test asserts after its runs (it met something
 * more than this many times): as given in CI, a twentieth in a quick run (a
 * tenth of the runs, with room for chance).
 */
export function atLeast(floor: number): number {
  return QUICK ? Math.floor(floor / 20) : floor;
}

/** How many of a must-see list a run may miss: none in CI; in a quick run (a tenth of the runs), the rarer half. */
export function mayMiss(mustSee: number): number {
  return QUICK ? Math.ceil(mustSee / 2) : 0;
}

/**
 * A seeded generator for a random mix (mulberry32: every bit of it varies),
 * rnd(n) in [0, n). The seed is FC_SEED when given, else fresh per run; a
 * failing test names it (`.seed`) so the run can be replayed.
 */
export function seededRandom(seed = SEED ?? Math.floor(Math.random() * 2 ** 31)): ((n: number) => number) & { seed: number } {
  let s = seed;
  const rnd = (n: number): number => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * n);
  };
  return Object.assign(rnd, { seed });
}
