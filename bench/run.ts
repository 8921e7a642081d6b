// npm run bench [-- --json FILE] [-- --svg FILE] [-- --time MS]: every case on
// the engine and its naive twin in the same run, printed as a table; --json
// writes the DESIGN §12 shape { cases: [{ name, engine_ns, naive_ns, speedup }],
// limits: [{ name, ns, bounds }] }, --svg the chart of it (bench/svg.ts).
// Progress goes to stderr, one line per finished case, so stdout holds only
// the tables.
import { writeFileSync } from "node:fs";
import { Bench } from "tinybench";
import { buildSuite, type Case, type Limit } from "./cases.js";
import { formatNs as fmt, formatSpeedup, progressLine, startLine } from "./format.js";
import { benchSvg } from "./svg.js";

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const time = Number(arg("--time") ?? 1200);
const warmup = Math.min(100, time / 10);

/**
 * ns per item of fn: tinybench's median, over three rounds, lowest round
 * kept. The median, because a few descheduled samples would move a mean by
 * tens of percent on a shared 2-core machine; the lowest of three rounds,
 * because now and then a whole round is slowed down. Engine, twin and limits
 * are all measured this way, so every ratio compares like with like.
 */
async function measure(name: string, fn: () => void, items: number, setup?: () => void, calls?: number): Promise<number> {
  let best = Infinity;
  for (let round = 0; round < 3; round++) {
    // A case whose one call takes most of a second says how many calls a round makes (and warms up with two).
    const bench = new Bench({ time: time / 3, warmupTime: warmup, ...(calls ? { iterations: calls, warmupIterations: 2 } : {}) });
    // setup runs before every call, outside the timed window.
    bench.add(name, fn, setup ? { beforeEach: setup } : {});
    await bench.run();
    const r = bench.tasks[0].result;
    if (r.state !== "completed") throw new Error(`${name}: ${r.state}${"error" in r ? ` ${String(r.error)}` : ""}`);
    best = Math.min(best, (r.latency.p50 * 1e6) / items);
  }
  return best;
}

type CaseResult = { name: string; unit: string; engine_ns: number; naive_ns: number; speedup: number; extra: Record<string, number>; facts?: Record<string, number> };
type LimitResult = { name: string; unit: string; ns: number; bounds: string };

/**
 * Engine, variant, limit, then twin: the order the runner has always used,
 * kept because what ran just before can move a case's numbers (README,
 * Benchmark: how V8 places optimised code).
 */
async function runCase(c: Case, limit: Limit | undefined): Promise<{ result: CaseResult; limit?: LimitResult }> {
  const engine_ns = await measure(`${c.name} engine`, c.engine, c.items, c.engineSetup, c.calls);
  const extra: Record<string, number> = {};
  if (c.variant) extra[c.variant.field] = await measure(`${c.name} ${c.variant.field}`, c.variant.run, c.items, c.variant.setup);
  // A limit is timed right after the case it bounds, so both see the same machine.
  const limitResult = limit && { name: limit.name, unit: limit.unit, ns: await measure(limit.name, limit.run, limit.items), bounds: c.name };
  const naive_ns = await measure(`${c.name} naive`, c.naive, c.items, c.naiveSetup, c.calls);
  return { result: { name: c.name, unit: c.unit, engine_ns, naive_ns, speedup: naive_ns / engine_ns, extra, ...(c.facts ? { facts: c.facts } : {}) }, limit: limitResult };
}

// Building the fixtures (1 GiB of mappings among them) takes a while: say so first.
console.error("setting up the benchmark cases…");
const all = await buildSuite();
// --only a,b: just those cases (and their limits), to rerun a surprising number alone.
const only = arg("--only")?.split(",");
const suite = only ? { ...all, cases: all.cases.filter((c) => only.includes(c.name)) } : all;
const cases: CaseResult[] = [];
const limits: LimitResult[] = [];
const limitOf = (c: Case) => suite.limits.find((l) => l.bounds === c.name);
const tasks = suite.cases.reduce((n, c) => n + 2 + (c.variant ? 1 : 0) + (limitOf(c) ? 1 : 0), 0);
console.error(startLine(suite.cases.length, tasks, time / 3, warmup));
// On a terminal the running case is shown until its line replaces it (a map/unmap
// case runs for minutes); in a log, only finished lines, so nothing is overwritten.
const live = process.stderr.isTTY === true;
for (const [i, c] of suite.cases.entries()) {
  const started = performance.now();
  if (live) process.stderr.write(`[${i + 1}/${suite.cases.length}] ${c.name} …`);
  const { result, limit } = await runCase(c, limitOf(c));
  cases.push(result);
  if (limit) limits.push(limit);
  const also = [...Object.entries(result.extra).map(([label, ns]) => ({ label, ns })), ...(limit ? [{ label: limit.name, ns: limit.ns }] : [])];
  const line = progressLine(i + 1, suite.cases.length, { ...result, also, seconds: (performance.now() - started) / 1e3 });
  process.stderr.write(`${live ? "\r\x1b[K" : ""}${line}\n`);
}
console.error("");

console.log(`iommu-wasm benchmark (node ${process.version}; per task: 3 rounds of ${Math.round(time / 3)} ms, lowest median)\n`);
console.table(cases.map((c) => ({
  case: c.name, per: c.unit, engine: fmt(c.engine_ns), naive: fmt(c.naive_ns), speedup: formatSpeedup(c.speedup),
  also: [...Object.entries(c.extra).map(([k, v]) => `${k} ${fmt(v)}`), ...Object.entries(c.facts ?? {}).map(([k, v]) => `${k} ${v}`)].join(", "),
})));
console.table(limits.map((l) => ({ limit: l.name, per: l.unit, time: fmt(l.ns) })));

// The issues' targets, read off this run (a target whose cases did not run is left out).
const by = (n: string) => cases.find((c) => c.name === n);
const lim = (n: string) => limits.find((l) => l.name === n);
const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`;
const percent = (a: number, b: number) => `${((100 * a) / b).toFixed(0)} %`;
type Target = { target: string; value: string; ok: boolean };
const rules: (() => Target | undefined)[] = [
  () => { const c = by("iotlb-hit"); return c && { target: "iotlb-hit ≥ 10× twin", value: formatSpeedup(c.speedup), ok: c.speedup >= 10 }; },
  () => { const c = by("iotlb-hit"); return c && { target: "iotlb-hit ≥ 100 M translations/s", value: `${(1e3 / c.engine_ns).toFixed(0)} M/s`, ok: 1e3 / c.engine_ns >= 100 }; },
  () => { const c = by("walk-4level"); return c && { target: "walk-4level ≥ 20× twin", value: formatSpeedup(c.speedup), ok: c.speedup >= 20 }; },
  () => { const c = by("walk-nested"); return c && { target: "walk-nested ≥ 20× twin", value: formatSpeedup(c.speedup), ok: c.speedup >= 20 }; },
  // A case against what bounds it: engine time at most `max` × the other's.
  ...([
    ["dma-4k", "memcpy-4k", 1 / 0.85, "dma-4k ≥ 85 % of memcpy-4k"],
    ["dma-64b-sg", "memcpy-64b", 1 / 0.4, "dma-64b-sg ≥ 40 % of memcpy-64b"],
    ["dma-16b-plain", "js-copy-16b", 2, "dma-16b-plain ≤ 2× js-copy-16b"],
    ["dma-64b-plain", "js-copy-64b", 1.5, "dma-64b-plain ≤ 1.5× js-copy-64b"],
    ["dma-4k-plain", "js-copy-4k", 1.5, "dma-4k-plain ≤ 1.5× js-copy-4k"],
    ["dma-write-64b-plain", "js-set-64b", 2.5, "dma-write-64b-plain ≤ 2.5× js-set-64b"],
  ] as const).map(([name, limit, max, target]) => () => {
    const c = by(name), l = lim(limit);
    // The in-engine limits read as throughput (a share of the copy), the JS copies as a cost ratio.
    return c && l && { target, value: limit.startsWith("memcpy") ? percent(l.ns, c.engine_ns) : ratio(c.engine_ns, l.ns), ok: c.engine_ns <= max * l.ns };
  }),
  ...([
    ["device-dma-4k", "dma-4k", 1.25],
    ["gpu-dma-4k", "device-dma-4k", 1.5],
    ["backend-dma-4k", "device-dma-4k", 1.25],
    ["translate-1", "iotlb-hit", 2.5],
    ["translate-call", "iotlb-hit", 5],
    ["device-dma-64b-plain", "dma-64b-plain", 1.25],
    ["dma-64b-plain-pasid", "dma-64b-plain", 1.5],
    ["dma-64b-plain-nested", "dma-64b-plain", 1.5],
    ["dma-read-64b", "dma-64b-plain", 2],
    ["vfio-map-65k", "vfio-map-4k-count", 1.5],
  ] as const).map(([name, base, max]) => () => {
    const c = by(name), b = by(base);
    return c && b && { target: `${name} ≤ ${max}× ${base}`, value: ratio(c.engine_ns, b.engine_ns), ok: c.engine_ns <= max * b.engine_ns };
  }),
  // After churn, the table holds what a fresh 2 MiB map holds, and walks as fast.
  () => {
    const c = by("pt-churn"), f = c?.facts;
    return c && f && {
      target: "pt-churn: leaves and tables as fresh, walk ≤ 1.1× fresh_ns",
      value: `${f.churned_leaves}/${f.fresh_leaves} leaves, ${f.churned_tables}/${f.fresh_tables} tables, ${ratio(c.engine_ns, c.extra.fresh_ns)}`,
      ok: f.churned_leaves === f.fresh_leaves && f.churned_tables === f.fresh_tables && c.engine_ns <= 1.1 * c.extra.fresh_ns,
    };
  },
  () => { const c = by("dma-map-page"); return c && { target: "dma-map-page ≥ 5× twin", value: formatSpeedup(c.speedup), ok: c.speedup >= 5 }; },
  () => { const c = by("foreign-map-4k"); return c && { target: "foreign-map-4k ≥ 5× twin", value: formatSpeedup(c.speedup), ok: c.speedup >= 5 }; },
  () => { const c = by("mdev-pin-512"); return c && { target: "mdev-pin-512 ≥ 5× twin", value: formatSpeedup(c.speedup), ok: c.speedup >= 5 }; },
  () => { const c = by("shadow-gtt-update"); return c && { target: "shadow-gtt-update ≥ 5× twin", value: formatSpeedup(c.speedup), ok: c.speedup >= 5 }; },
  () => { const c = by("vfio-map-unmap"); return c && { target: "vfio-map-unmap ≥ 5× twin", value: formatSpeedup(c.speedup), ok: c.speedup >= 5 }; },
  () => { const c = by("pasid-lookup"); return c && { target: "pasid-lookup ≥ 3× twin (Map)", value: formatSpeedup(c.speedup), ok: c.speedup >= 3 }; },
  // Both per PASID: the range free of [0, 0xFFFFFFFF] against freeing the same 1000 one call each.
  () => { const c = by("pasid-free-range"); return c && { target: "pasid-free-range ≤ 2× each_ns", value: ratio(c.engine_ns, c.extra.each_ns), ok: c.engine_ns <= 2 * c.extra.each_ns }; },
  // No target: the same over 1024 pages, shown so the harder case is not hidden.
  () => { const c = by("dma-64b-sg-wide"), l = lim("memcpy-64b-wide"); return c && l && { target: "(dma-64b-sg-wide vs memcpy-64b-wide)", value: percent(l.ns, c.engine_ns), ok: true }; },
];
const targets = rules.map((rule) => rule()).filter((t): t is Target => t !== undefined);
console.table(targets.map((t) => ({ ...t, ok: t.target.startsWith("(") ? "-" : t.ok ? "yes" : "NO" })));

const results = {
  node: process.version,
  cases: cases.map(({ name, unit, engine_ns, naive_ns, speedup, extra }) => ({ name, unit, engine_ns, naive_ns, speedup, ...extra })),
  limits,
};
const json = arg("--json");
if (json) {
  writeFileSync(json, JSON.stringify(results, null, 2) + "\n");
  console.log(`wrote ${json}`);
}
const svg = arg("--svg");
if (svg) {
  writeFileSync(svg, benchSvg(results));
  console.log(`wrote ${svg}`);
}
