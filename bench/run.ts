// npm run bench [-- --json FILE] [-- --time MS]: every case on the engine and
// its naive twin in the same run, printed as a table; --json writes the
// DESIGN §12 shape { cases: [{ name, engine_ns, naive_ns, speedup }], limits: [{ name, ns }] }.
import { writeFileSync } from "node:fs";
import { Bench } from "tinybench";
import { buildSuite } from "./cases.js";

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const time = Number(arg("--time") ?? 800);

/** Mean ns per item of fn, measured by tinybench. */
async function measure(name: string, fn: () => void, items: number): Promise<number> {
  const bench = new Bench({ time, warmupTime: Math.min(200, time / 4) });
  bench.add(name, fn);
  await bench.run();
  const r = bench.tasks[0].result;
  if (r.state !== "completed") throw new Error(`${name}: ${r.state}${"error" in r ? ` ${String(r.error)}` : ""}`);
  return (r.latency.mean * 1e6) / items;
}

const fmt = (ns: number): string => (ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : ns >= 1e3 ? `${(ns / 1e3).toFixed(2)} µs` : `${ns.toFixed(2)} ns`);

const suite = await buildSuite();
const cases: { name: string; unit: string; engine_ns: number; naive_ns: number; speedup: number }[] = [];
for (const c of suite.cases) {
  const engine_ns = await measure(`${c.name} engine`, c.engine, c.items);
  const naive_ns = await measure(`${c.name} naive`, c.naive, c.items);
  cases.push({ name: c.name, unit: c.unit, engine_ns, naive_ns, speedup: naive_ns / engine_ns });
}
const limits: { name: string; unit: string; ns: number }[] = [];
for (const l of suite.limits) limits.push({ name: l.name, unit: l.unit, ns: await measure(l.name, l.run, l.items) });

console.log(`iommu-wasm benchmark (node ${process.version}, ${time} ms per task)\n`);
console.table(cases.map((c) => ({ case: c.name, per: c.unit, engine: fmt(c.engine_ns), naive: fmt(c.naive_ns), speedup: `${c.speedup.toFixed(1)}×` })));
console.table(limits.map((l) => ({ limit: l.name, per: l.unit, time: fmt(l.ns) })));

// The issue's targets, read off this run.
const by = (n: string) => cases.find((c) => c.name === n)!;
const lim = (n: string) => limits.find((l) => l.name === n)!;
const targets = [
  { target: "iotlb-hit ≥ 10× twin", value: `${by("iotlb-hit").speedup.toFixed(1)}×`, ok: by("iotlb-hit").speedup >= 10 },
  { target: "iotlb-hit ≥ 100 M translations/s", value: `${(1e3 / by("iotlb-hit").engine_ns).toFixed(0)} M/s`, ok: 1e3 / by("iotlb-hit").engine_ns >= 100 },
  { target: "walk-4level ≥ 20× twin", value: `${by("walk-4level").speedup.toFixed(1)}×`, ok: by("walk-4level").speedup >= 20 },
  { target: "dma-4k ≥ 85 % of memcpy-4k", value: `${((100 * lim("memcpy-4k").ns) / by("dma-4k").engine_ns).toFixed(0)} %`, ok: lim("memcpy-4k").ns / by("dma-4k").engine_ns >= 0.85 },
  { target: "dma-64b-sg ≥ 40 % of memcpy-64b", value: `${((100 * lim("memcpy-64b").ns) / by("dma-64b-sg").engine_ns).toFixed(0)} %`, ok: lim("memcpy-64b").ns / by("dma-64b-sg").engine_ns >= 0.4 },
];
console.table(targets.map((t) => ({ ...t, ok: t.ok ? "yes" : "NO" })));

const json = arg("--json");
if (json) {
  writeFileSync(json, JSON.stringify({
    node: process.version,
    cases: cases.map(({ name, unit, engine_ns, naive_ns, speedup }) => ({ name, unit, engine_ns, naive_ns, speedup })),
    limits: limits.map(({ name, unit, ns }) => ({ name, unit, ns })),
  }, null, 2) + "\n");
  console.log(`wrote ${json}`);
}
