// The benchmark's chart (bench/svg.ts) and progress lines (bench/format.ts),
// checked on a small fixed result set: the SVG is well-formed XML, has one
// engine/twin bar pair per case and a bar pair per limit, draws bar lengths
// proportional to log(time), and carries the labels a reader needs.
import { describe, expect, it } from "vitest";
import { benchSvg, tickLabel, type BenchResults } from "../bench/svg.js";
import { formatNs, formatSpeedup, progressLine, startLine } from "../bench/format.js";

const results: BenchResults = {
  node: "v20.20.2",
  cases: [
    { name: "iotlb-hit", unit: "translation", engine_ns: 8.0, naive_ns: 1720, speedup: 215 },
    { name: "walk-5level", unit: "walk", engine_ns: 90.1, naive_ns: 4950, speedup: 54.9 },
    { name: "dma-4k", unit: "4 KiB read", engine_ns: 115, naive_ns: 3490, speedup: 30.3 },
    { name: "vfio-map-unmap", unit: "1 GiB map + unmap", engine_ns: 10.0e6, naive_ns: 476e6, speedup: 47.6 },
    { name: "pasid-free-range", unit: "PASID freed", engine_ns: 67.4, naive_ns: 65.4, speedup: 0.97, each_ns: 76 },
  ],
  limits: [{ name: "memcpy-4k", unit: "4 KiB copy", ns: 110, bounds: "dma-4k" }],
};

// ---- a tiny XML parser: enough to prove the file is well-formed and to query it ----

interface Element { name: string; attrs: Record<string, string>; children: Element[]; text: string }

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

function decode(s: string): string {
  return s.replace(/&([a-z]+);/g, (m, name: string) => {
    if (!(name in ENTITIES)) throw new Error(`unknown entity ${m}`);
    return ENTITIES[name];
  });
}

/** Parses one XML document (no DTD, CDATA or processing instructions: the chart uses none); throws where it is not well-formed. */
function parseXml(xml: string): Element {
  const stack: Element[] = [{ name: "#document", attrs: {}, children: [], text: "" }];
  const token = /<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+="[^"<]*")*)\s*(\/?)>|([^<]+)|(<)/g;
  let m: RegExpExecArray | null;
  while ((m = token.exec(xml))) {
    const [, close, name, attrText, selfClose, text, stray] = m;
    const top = stack[stack.length - 1];
    if (stray) throw new Error(`malformed tag at ${m.index}: ${xml.slice(m.index, m.index + 40)}`);
    if (text !== undefined) {
      if (/&(?![a-z]+;)/.test(text)) throw new Error(`bare & in text at ${m.index}`);
      top.text += decode(text);
    } else if (close) {
      if (top.name !== name) throw new Error(`</${name}> closes <${top.name}> at ${m.index}`);
      stack.pop();
    } else {
      const attrs: Record<string, string> = {};
      for (const [, k, v] of attrText.matchAll(/([\w:.-]+)="([^"]*)"/g)) {
        if (k in attrs) throw new Error(`duplicate attribute ${k} on <${name}>`);
        attrs[k] = decode(v);
      }
      const el: Element = { name, attrs, children: [], text: "" };
      top.children.push(el);
      if (!selfClose) stack.push(el);
    }
  }
  if (stack.length !== 1) throw new Error(`unclosed <${stack[stack.length - 1].name}>`);
  const roots = stack[0].children;
  if (roots.length !== 1 || stack[0].text.trim() !== "") throw new Error("expected exactly one root element");
  return roots[0];
}

function all(el: Element, pred: (e: Element) => boolean): Element[] {
  return [...(pred(el) ? [el] : []), ...el.children.flatMap((c) => all(c, pred))];
}

const hasClass = (cls: string) => (e: Element) => (e.attrs.class ?? "").split(" ").includes(cls);
const texts = (el: Element) => all(el, (e) => e.name === "text").map((e) => e.text);
const bars = (el: Element) => all(el, hasClass("bar"));
const width = (bar: Element) => Number(bar.attrs.width);

describe("bench chart (bench/svg.ts)", () => {
  const svg = parseXml(benchSvg(results));

  it("is a well-formed SVG with a size and an explicit opaque background", () => {
    expect(svg.name).toBe("svg");
    expect(svg.attrs.xmlns).toBe("http://www.w3.org/2000/svg");
    expect(svg.attrs.viewBox).toBe(`0 0 ${svg.attrs.width} ${svg.attrs.height}`);
    // The first shape covers the whole picture, so dark viewers do not show through.
    const background = svg.children.find((e) => e.name === "rect")!;
    expect(background.attrs.fill).toBe("#ffffff");
    expect(Number(background.attrs.width)).toBeGreaterThanOrEqual(Number(svg.attrs.width) - 1);
    expect(Number(background.attrs.height)).toBeGreaterThanOrEqual(Number(svg.attrs.height) - 1);
    expect(svg.children.find((e) => e.name === "title")?.text).toMatch(/benchmark/);
  });

  it("has one engine bar and one twin bar per case, in the results' order", () => {
    const rows = all(svg, hasClass("case-row"));
    expect(rows.map((r) => r.attrs["data-name"])).toEqual(results.cases.map((c) => c.name));
    rows.forEach((row, i) => {
      const [engine, twin, ...rest] = bars(row);
      expect(rest).toEqual([]);
      expect(engine.attrs.class).toBe("bar engine");
      expect(twin.attrs.class).toBe("bar twin");
      expect(Number(engine.attrs["data-ns"])).toBe(results.cases[i].engine_ns);
      expect(Number(twin.attrs["data-ns"])).toBe(results.cases[i].naive_ns);
    });
  });

  it("draws every bar's length as an affine function of log10(time), longer for slower", () => {
    const all_ = bars(svg).map((b) => ({ ns: Number(b.attrs["data-ns"]), w: width(b) }));
    expect(all_.length).toBe(2 * results.cases.length + 2); // + the limit and its case's engine bar
    const byTime = [...all_].sort((a, b) => a.ns - b.ns);
    for (let i = 1; i < byTime.length; i++) {
      if (byTime[i].ns > byTime[i - 1].ns) expect(byTime[i].w).toBeGreaterThan(byTime[i - 1].w);
    }
    // The line through the shortest and longest bars predicts every other to within the 0.1 px rounding.
    const [a, b] = [byTime[0], byTime[byTime.length - 1]];
    const slope = (b.w - a.w) / (Math.log10(b.ns) - Math.log10(a.ns));
    for (const bar of all_) expect(Math.abs(a.w + slope * (Math.log10(bar.ns) - Math.log10(a.ns)) - bar.w)).toBeLessThan(0.15);
    expect(a.w).toBeGreaterThan(0); // the shortest bar is still visible
  });

  it("labels each case with its name, unit, both times and the speedup", () => {
    for (const row of all(svg, hasClass("case-row"))) {
      const c = results.cases.find((x) => x.name === row.attrs["data-name"])!;
      const t = texts(row);
      expect(t).toContain(c.name);
      expect(t).toContain(formatNs(c.engine_ns));
      expect(t).toContain(formatNs(c.naive_ns));
      expect(t).toContain(formatSpeedup(c.naive_ns / c.engine_ns));
      expect(t.some((s) => s.includes(`per ${c.unit}`))).toBe(true);
    }
    const freeRange = all(svg, (e) => e.attrs["data-name"] === "pasid-free-range")[0];
    expect(texts(freeRange).some((s) => s.includes("each_ns 76.0 ns"))).toBe(true);
    expect(texts(svg).some((s) => s.includes("Node v20.20.2"))).toBe(true);
  });

  it("spans whole decades from below the fastest time to above the slowest, labelled in ns/µs/ms/s", () => {
    const ticks = all(svg, hasClass("tick")).map((e) => e.text);
    expect(ticks[0]).toBe("1 ns"); // 8 ns is the fastest
    expect(ticks).toContain("1 s"); // 476 ms the slowest
    expect(new Set(ticks)).toEqual(new Set(["1 ns", "10 ns", "100 ns", "1 µs", "10 µs", "100 µs", "1 ms", "10 ms", "100 ms", "1 s"]));
    expect([-1, 0, 2, 3, 5, 9, 10].map(tickLabel)).toEqual(["0.1 ns", "1 ns", "100 ns", "1 µs", "100 µs", "1 s", "10 s"]);
  });

  it("shows each limit beside the engine bar of the case it bounds, with the throughput ratio", () => {
    const [row, ...rest] = all(svg, hasClass("limit-row"));
    expect(rest).toEqual([]);
    expect(row.attrs["data-name"]).toBe("memcpy-4k");
    expect(bars(row).map((b) => [b.attrs.class, Number(b.attrs["data-ns"])])).toEqual([["bar limit", 110], ["bar engine", 115]]);
    expect(texts(row)).toEqual(expect.arrayContaining(["memcpy-4k", "110 ns", "115 ns", "96 %"]));
  });

  it("still draws results without limits or the limits' `bounds` (older JSON files)", () => {
    const bare = parseXml(benchSvg({ cases: results.cases.slice(0, 2) }));
    expect(all(bare, hasClass("case-row"))).toHaveLength(2);
    expect(all(bare, hasClass("limit-row"))).toHaveLength(0);
    const unbound = parseXml(benchSvg({ cases: results.cases, limits: [{ name: "memcpy-4k", ns: 110 }] }));
    expect(bars(all(unbound, hasClass("limit-row"))[0]).map((b) => b.attrs.class)).toEqual(["bar limit"]);
  });

  it("escapes names, so any case name stays well-formed XML", () => {
    const odd = parseXml(benchSvg({ cases: [{ name: `a<b & "c">`, engine_ns: 1, naive_ns: 2 }] }));
    expect(all(odd, hasClass("case-row"))[0].attrs["data-name"]).toBe(`a<b & "c">`);
    expect(texts(odd)).toContain(`a<b & "c">`);
  });

  it("refuses times a log axis cannot show, naming the field", () => {
    expect(() => benchSvg({ cases: [] })).toThrow(/at least one case/);
    expect(() => benchSvg({ cases: [{ name: "x", engine_ns: 0, naive_ns: 5 }] })).toThrow(/x engine_ns .* got 0/);
    expect(() => benchSvg({ cases: [{ name: "x", engine_ns: 1, naive_ns: 5 }], limits: [{ name: "m", ns: -1 }] })).toThrow(/limit m ns/);
  });
});

describe("bench progress lines (bench/format.ts)", () => {
  it("says k/n, the case name, both times and the speedup", () => {
    expect(progressLine(3, 13, { name: "walk-5level", engine_ns: 90.1, naive_ns: 4950 }))
      .toBe("[3/13] walk-5level  engine 90.1 ns  twin 4.95 µs  55×");
  });

  it("adds the case's other timings and its wall time when given", () => {
    const line = progressLine(5, 13, { name: "dma-4k", engine_ns: 115, naive_ns: 3490, also: [{ label: "memcpy-4k", ns: 110 }], seconds: 4.06 });
    expect(line).toBe("[5/13] dma-4k  engine 115 ns  twin 3.49 µs  30×  memcpy-4k 110 ns  (4.1 s)");
  });

  it("starts with the number of cases and the least time they take", () => {
    // 33 tasks × 3 rounds × (400 + 100) ms = 49.5 s; 400 ms / 64 calls = 6.25 ms a call
    expect(startLine(13, 33, 400, 100)).toBe(
      "iommu-wasm benchmark: 13 cases, 33 timed tasks of 3 × 400 ms: at least 50 s, longer where one call takes over 6.25 ms (each round makes ≥ 64 calls)");
    expect(startLine(13, 33, 4000, 100)).toMatch(/at least 6\.8 min/);
  });

  it("formats times with three significant digits in a unit that fits", () => {
    expect([8, 90.1, 999.7, 1720, 3.7e6, 476e6, 2e9].map(formatNs))
      .toEqual(["8.00 ns", "90.1 ns", "1.00 µs", "1.72 µs", "3.70 ms", "476 ms", "2.00 s"]);
    expect([215.04, 54.9, 4.6, 0.97].map(formatSpeedup)).toEqual(["215×", "55×", "4.6×", "1.0×"]);
  });
});
