// How the benchmark writes its numbers: one formatting for the tables, the
// progress lines and the SVG chart, so the same measurement reads the same
// everywhere. No imports: the chart script and the tests load this alone.

const UNITS: [string, number][] = [["ns", 1], ["µs", 1e3], ["ms", 1e6], ["s", 1e9]];

/** A time in ns with three significant digits and the unit that keeps it readable: 8.00 ns, 90.1 ns, 4.95 µs, 179 ms. */
export function formatNs(ns: number): string {
  if (!Number.isFinite(ns)) return String(ns);
  // The unit is chosen after rounding, so 999.7 ns reads "1.00 µs", not "1.00e+3 ns".
  let u = 0;
  while (u < UNITS.length - 1 && Number((ns / UNITS[u][1]).toPrecision(3)) >= 1000) u++;
  return `${(ns / UNITS[u][1]).toPrecision(3)} ${UNITS[u][0]}`;
}

/** A speedup as the README writes it: whole numbers from 10× up, one decimal below (4.6×, 1.0×). */
export function formatSpeedup(ratio: number): string {
  return ratio >= 10 ? `${Math.round(ratio)}×` : `${ratio.toFixed(1)}×`;
}

/** What one finished case reports, for its progress line. */
export interface CaseProgress {
  name: string;
  engine_ns: number;
  naive_ns: number;
  /** Other timings taken with the case (a variant such as each_ns, the limit that bounds it), in print order. */
  also?: { label: string; ns: number }[];
  /** Wall time the case took, measuring and setting up included. */
  seconds?: number;
}

/** `[3/13] walk-5level  engine 90.1 ns  twin 4.95 µs  55×`: case k of n, as it finishes. */
export function progressLine(k: number, n: number, c: CaseProgress): string {
  const parts = [
    `[${k}/${n}] ${c.name}`,
    `engine ${formatNs(c.engine_ns)}`,
    `twin ${formatNs(c.naive_ns)}`,
    formatSpeedup(c.naive_ns / c.engine_ns),
    ...(c.also ?? []).map((a) => `${a.label} ${formatNs(a.ns)}`),
  ];
  if (c.seconds !== undefined) parts.push(`(${c.seconds.toFixed(1)} s)`);
  return parts.join("  ");
}

/**
 * The first line: how many cases, and the least time they take. Every timed
 * task (engine, twin, a variant, a limit) runs 3 rounds of roundMs plus a
 * warm-up each. A task whose single call is slow takes longer, because
 * tinybench makes at least 64 calls a round (and 16 to warm up) whatever the
 * time: the line says from what call time on that happens.
 */
export function startLine(cases: number, tasks: number, roundMs: number, warmupMs: number): string {
  const seconds = (tasks * 3 * (roundMs + warmupMs)) / 1e3;
  return `iommu-wasm benchmark: ${cases} cases, ${tasks} timed tasks of 3 × ${Math.round(roundMs)} ms: at least ${formatDuration(seconds)}, ` +
    `longer where one call takes over ${formatNs((roundMs / 64) * 1e6)} (each round makes ≥ 64 calls)`;
}

function formatDuration(seconds: number): string {
  return seconds < 90 ? `${Math.round(seconds)} s` : `${(seconds / 60).toFixed(1)} min`;
}
