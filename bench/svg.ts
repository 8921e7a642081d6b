// The benchmark as a chart: results JSON (what `npm run bench -- --json` writes)
// → one self-contained SVG string. Hand-written SVG, no dependencies, so the
// README's docs/bench.svg can be regenerated anywhere Node runs.
//
// Layout: one row per case with two horizontal bars (engine, naive twin) on a
// shared log axis, the values at the bar ends and the speedup in a right-hand
// column; below, a panel of the limits (plain memory.copy, no translation),
// each beside the engine bar of the case it bounds. A log axis because the
// cases span eight decades (3 ns lookups to 0.5 s map/unmap of 1 GiB): on a
// linear one every per-translation bar would be zero pixels long.
import { formatNs, formatSpeedup } from "./format.js";

export interface BenchCase {
  name: string;
  /** What one item is: "translation", "4 KiB read", "1 GiB map + unmap". */
  unit?: string;
  engine_ns: number;
  naive_ns: number;
  speedup?: number;
  /** Other timings of the case (each_ns …), shown under its name. */
  [field: string]: unknown;
}

export interface BenchLimit {
  name: string;
  unit?: string;
  ns: number;
  /** The case whose copies this limit makes without translation (older JSON files lack it). */
  bounds?: string;
}

export interface BenchResults {
  node?: string;
  cases: BenchCase[];
  limits?: BenchLimit[];
}

// Colours: a white card with dark text, set explicitly, so the chart reads the
// same in light and dark viewers (GitHub shows README images on either).
// Blue against orange stays distinct for the common colour-vision deficiencies.
const COLOR = {
  background: "#ffffff",
  border: "#d0d7de",
  stripe: "#f6f8fa",
  grid: "#d8dee4",
  text: "#1f2328",
  muted: "#59636e",
  engine: "#1f6feb",
  twin: "#e16f24",
  limit: "#6e7781",
};

const FONT = "-apple-system, BlinkMacSystemFont, 'Segoe UI', Helvetica, Arial, sans-serif";

const WIDTH = 960;
const PAD = 24;
const LABEL_W = 196; // case name and unit, left of the plot
const PLOT_X0 = PAD + LABEL_W;
const PLOT_X1 = WIDTH - PAD - 150; // room after the longest bar for its value and the speedup column
const ROW_H = 44;
const BAR_H = 13;

/** The chart for one benchmark run. Throws on results a log axis cannot show (a missing or non-positive time). */
export function benchSvg(results: BenchResults): string {
  checkResults(results);
  const limits = results.limits ?? [];
  const scale = logScale(allTimes(results));
  // Three layers, drawn in this order: row stripes, then grid lines, then bars and text over both.
  const back: string[] = [], grid: string[] = [], front: string[] = [];

  let y = PAD;
  front.push(heading(results, y));
  y += 52;
  front.push(legend(y, limits.length > 0));
  y += 30;

  const casesTop = y;
  front.push(columnHeader(casesTop, "speedup"));
  y += 20; // tick labels above the first row
  results.cases.forEach((c, i) => {
    if (i % 2 === 0) back.push(stripe(y));
    front.push(caseRow(c, y, scale));
    y += ROW_H;
  });
  grid.push(axis(scale, casesTop, y));
  y += 22;

  if (limits.length > 0) {
    y += 14;
    front.push(limitsHeading(y));
    y += 16;
    const limitsTop = y;
    front.push(columnHeader(limitsTop, "of the limit"));
    y += 20;
    limits.forEach((l, i) => {
      if (i % 2 === 0) back.push(stripe(y));
      front.push(limitRow(l, results.cases.find((c) => c.name === l.bounds), y, scale));
      y += ROW_H;
    });
    grid.push(axis(scale, limitsTop, y));
    y += 22;
  }
  const height = y + PAD - 6;

  const title = "iommu-wasm benchmark: engine against its naive twin, time per item, log scale";
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" ` +
      `role="img" aria-labelledby="bench-title" font-family="${FONT}" font-size="13" fill="${COLOR.text}">`,
    `<title id="bench-title">${esc(title)}</title>`,
    rect(0.5, 0.5, WIDTH - 1, height - 1, { fill: COLOR.background, stroke: COLOR.border, rx: 8 }),
    ...back, ...grid, ...front,
    `</svg>`,
    "",
  ].join("\n");
}

/** Every other row shaded, so a bar is easy to follow to its name across the wide plot. */
function stripe(y: number): string {
  return rect(PAD - 8, y, WIDTH - 2 * PAD + 16, ROW_H, { fill: COLOR.stripe });
}

function checkResults(r: BenchResults): void {
  if (!r || !Array.isArray(r.cases) || r.cases.length === 0) throw new Error("bench results: expected { cases: [...] } with at least one case");
  const positive = (v: unknown, what: string) => {
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) throw new Error(`bench results: ${what} must be a positive number of ns, got ${JSON.stringify(v)}`);
  };
  for (const c of r.cases) {
    positive(c.engine_ns, `${c.name} engine_ns`);
    positive(c.naive_ns, `${c.name} naive_ns`);
  }
  for (const l of r.limits ?? []) positive(l.ns, `limit ${l.name} ns`);
}

function allTimes(r: BenchResults): number[] {
  return [...r.cases.flatMap((c) => [c.engine_ns, c.naive_ns]), ...(r.limits ?? []).map((l) => l.ns)];
}

interface Scale { lo: number; hi: number; x: (ns: number) => number }

/**
 * Whole decades from below the smallest time to above the largest. The low
 * end keeps a tenth of a decade of margin, so the shortest bar is never a
 * sliver; bars start at the low end, so their lengths are log(value) shifted.
 */
function logScale(times: number[]): Scale {
  const lo = Math.floor(Math.log10(Math.min(...times)) - 0.1);
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(Math.max(...times))));
  return { lo, hi, x: (ns) => PLOT_X0 + ((Math.log10(ns) - lo) / (hi - lo)) * (PLOT_X1 - PLOT_X0) };
}

/** Decade grid lines from top (below their labels) to bottom, labelled at both ends so a tall panel reads without scrolling back. */
function axis(scale: Scale, top: number, bottom: number): string {
  const out: string[] = [];
  for (let e = scale.lo; e <= scale.hi; e++) {
    const x = scale.x(10 ** e);
    out.push(line(x, top + 16, x, bottom, COLOR.grid));
    const label = { "text-anchor": "middle", "font-size": 11, fill: COLOR.muted, class: "tick" };
    out.push(text(x, top + 10, tickLabel(e), label));
    out.push(text(x, bottom + 14, tickLabel(e), label));
  }
  return out.join("\n");
}

/** The right-hand column's name, on the tick-label line. */
function columnHeader(top: number, label: string): string {
  return text(WIDTH - PAD, top + 10, label, { "font-size": 11, fill: COLOR.muted, "text-anchor": "end" });
}

/** 10^e ns as 1 ns, 10 ns, 100 ns, 1 µs, …: a decade label never needs three digits. */
export function tickLabel(e: number): string {
  const units = ["ns", "µs", "ms", "s"];
  const u = Math.min(units.length - 1, Math.max(0, Math.floor(e / 3)));
  return `${Number((10 ** (e - 3 * u)).toPrecision(1))} ${units[u]}`;
}

function heading(r: BenchResults, y: number): string {
  const about = ["time per item (translation, walk, read, …)", "log scale: shorter is faster", "lowest median of 3 rounds"];
  if (r.node) about.push(`Node ${r.node}`);
  return [
    text(PAD, y + 16, "iommu-wasm: WebAssembly engine vs naive TypeScript twin", { "font-size": 18, "font-weight": 600 }),
    text(PAD, y + 38, about.join(" · "), { "font-size": 12, fill: COLOR.muted }),
  ].join("\n");
}

function legend(y: number, withLimit: boolean): string {
  const items: [string, string][] = [[COLOR.engine, "engine (AssemblyScript → WASM)"], [COLOR.twin, "naive twin (BigInt, DataView, Map)"]];
  if (withLimit) items.push([COLOR.limit, "limit: memory.copy, no translation"]);
  const out: string[] = [];
  let x = PAD;
  for (const [color, label] of items) {
    out.push(rect(x, y, 14, 12, { fill: color, rx: 2 }));
    out.push(text(x + 20, y + 10.5, label, { "font-size": 12 }));
    x += 40 + label.length * 6; // about 6 px a character at 12 px: no text measuring in a pure function
  }
  out.push(text(WIDTH - PAD, y + 10.5, "speedup = twin time ÷ engine time", { "font-size": 12, fill: COLOR.muted, "text-anchor": "end" }));
  return out.join("\n");
}

/** One case: name and unit on the left, engine bar over twin bar, the speedup on the right. */
function caseRow(c: BenchCase, y: number, scale: Scale): string {
  const sub = [c.unit ? `per ${c.unit}` : "", ...extraTimes(c)].filter(Boolean).join(" · ");
  return group("case-row", c.name, [
    text(PAD, y + 19, c.name, { "font-weight": 600, class: "name" }),
    text(PAD, y + 34, sub, { "font-size": 11, fill: COLOR.muted }),
    bar("engine", c.engine_ns, y + 8, scale, COLOR.engine, `${c.name} engine: ${formatNs(c.engine_ns)}`),
    bar("twin", c.naive_ns, y + 8 + BAR_H + 2, scale, COLOR.twin, `${c.name} naive twin: ${formatNs(c.naive_ns)}`),
    text(WIDTH - PAD, y + 27, formatSpeedup(c.naive_ns / c.engine_ns), { "font-size": 15, "font-weight": 600, "text-anchor": "end", class: "speedup" }),
  ]);
}

/** Timings a case carries besides engine and twin, under the names the JSON and README use ("each_ns 76.0 ns"). */
function extraTimes(c: BenchCase): string[] {
  return Object.entries(c)
    .filter(([k, v]) => k.endsWith("_ns") && k !== "engine_ns" && k !== "naive_ns" && typeof v === "number")
    .map(([k, v]) => `${k} ${formatNs(v as number)}`);
}

function limitsHeading(y: number): string {
  return [
    text(PAD, y + 4, "Limits", { "font-size": 15, "font-weight": 600 }),
    text(PAD + 52, y + 4, "the same copies from the same addresses with no translation; % = engine throughput relative to the limit",
      { "font-size": 12, fill: COLOR.muted }),
  ].join("\n");
}

/** One limit: its bar, the engine bar of the case it bounds, and how close that case gets. */
function limitRow(l: BenchLimit, bound: BenchCase | undefined, y: number, scale: Scale): string {
  const sub = [l.unit ? `per ${l.unit}` : "", bound ? `vs ${bound.name}` : ""].filter(Boolean).join(" · ");
  return group("limit-row", l.name, [
    text(PAD, y + 19, l.name, { "font-weight": 600, class: "name" }),
    text(PAD, y + 34, sub, { "font-size": 11, fill: COLOR.muted }),
    bar("limit", l.ns, y + 8, scale, COLOR.limit, `${l.name}: ${formatNs(l.ns)}`),
    bound ? bar("engine", bound.engine_ns, y + 8 + BAR_H + 2, scale, COLOR.engine, `${bound.name} engine: ${formatNs(bound.engine_ns)}`) : "",
    bound ? text(WIDTH - PAD, y + 27, `${Math.round((100 * l.ns) / bound.engine_ns)} %`,
      { "font-size": 15, "font-weight": 600, "text-anchor": "end", class: "ratio" }) : "",
  ]);
}

/** A bar from the axis' low end to the value, the value written just past its end. */
function bar(kind: string, ns: number, y: number, scale: Scale, color: string, tip: string): string {
  const x1 = scale.x(ns);
  return [
    `<rect class="bar ${kind}" data-ns="${ns}" x="${r1(PLOT_X0)}" y="${r1(y)}" width="${r1(x1 - PLOT_X0)}" height="${BAR_H}" fill="${color}" rx="2">` +
      `<title>${esc(tip)}</title></rect>`,
    text(x1 + 5, y + BAR_H - 2.5, formatNs(ns), { "font-size": 11, class: "value" }),
  ].join("\n");
}

// ---- small SVG writers ----

type Attrs = Record<string, string | number>;

function attrs(a: Attrs): string {
  return Object.entries(a).map(([k, v]) => ` ${k}="${typeof v === "number" ? r1(v) : esc(v)}"`).join("");
}

function group(kind: string, name: string, children: string[]): string {
  return `<g class="${kind}" data-name="${esc(name)}">\n${children.filter(Boolean).join("\n")}\n</g>`;
}

function rect(x: number, y: number, w: number, h: number, a: Attrs): string {
  return `<rect${attrs({ x, y, width: w, height: h, ...a })}/>`;
}

function line(x1: number, y1: number, x2: number, y2: number, stroke: string): string {
  return `<line${attrs({ x1, y1, x2, y2, stroke, "stroke-width": 1 })}/>`;
}

function text(x: number, y: number, content: string, a: Attrs = {}): string {
  return `<text${attrs({ x, y, ...a })}>${esc(content)}</text>`;
}

/** Coordinates to a tenth of a pixel: finer only makes the file longer and its diffs noisier. */
function r1(v: number): string {
  return String(Math.round(v * 10) / 10);
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}
