// The playground (npm run playground) in headless Chromium: the server from
// playground/serve.mjs started in-process on 127.0.0.1, the page driven as a
// user would (format, preset, IOVA, Walk), and what it draws checked against
// the library's own walk in Node over the same mappings, read back from the
// page's editor. Then the synthetic device streams DMA and the IOTLB panel
// must move; last, a screenshot must be a plausible picture.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type Page } from "playwright-core";
import { createHost, type WalkResult } from "../src/index.js";
import { start, type RunningServer } from "../playground/serve.mjs";
import { FORMATS, PRESETS, RAM_SIZE } from "../playground/presets.js";

const BUNDLE = fileURLToPath(new URL("../dist/iommu-wasm.js", import.meta.url));
const SCREENSHOT = fileURLToPath(new URL("../build/playground.png", import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const VIEWPORT = { width: 1400, height: 900 };

type FormatKey = keyof typeof FORMATS;
type PresetKey = keyof typeof PRESETS;
type AccessKind = "read" | "write" | "exec";

let server: RunningServer | undefined;
let browser: Browser | undefined;
let page: Page | undefined;
const pageErrors: string[] = [];
const consoleErrors: string[] = [];
const foreignRequests: string[] = [];

const hex = (v: bigint) => "0x" + v.toString(16);

/** The editor's number syntax: hex, decimal, or 4K / 2M / 1G. */
function parseNumber(text: string): bigint {
  const m = /^(0x[0-9a-f]+|\d+)([KMG])?$/i.exec(text.trim());
  if (!m) throw new Error(`not a number: ${text}`);
  const shift = { K: 10n, M: 20n, G: 30n }[(m[2] ?? "").toUpperCase() as "K" | "M" | "G"] ?? 0n;
  return BigInt(m[1]) << shift;
}

function live(): Page {
  if (!page) throw new Error("the page did not open (see the beforeAll error)");
  return page;
}

const generation = async () => Number(await live().evaluate("document.body.dataset.generation"));

/** Picks a format and a preset in the page's selects, waiting for each resulting rebuild. */
async function configure(format: FormatKey, preset: PresetKey): Promise<void> {
  const p = live();
  for (const [select, value] of [["#format", format], ["#preset", preset]] as const) {
    if ((await p.inputValue(select)) === value) continue;
    const before = await generation();
    await p.selectOption(select, value);
    await p.waitForFunction(`Number(document.body.dataset.generation) > ${before}`);
  }
}

interface EditorRow { iova: string; hpa: string; size: string; perms: Record<string, boolean>; status: string }

async function readEditor(): Promise<EditorRow[]> {
  return live().$$eval("#mappings tbody tr", (rows) => rows.map((tr) => {
    const value = (sel: string) => (tr.querySelector(sel) as HTMLInputElement).value;
    const checked = (sel: string) => (tr.querySelector(sel) as HTMLInputElement).checked;
    return {
      iova: value(".iova"), hpa: value(".hpa"), size: value(".size"),
      perms: { read: checked(".perm-read"), write: checked(".perm-write"), exec: checked(".perm-exec"), user: checked(".perm-user") },
      status: tr.querySelector(".row-status")!.textContent ?? "",
    };
  }));
}

interface DrawnRow { level: string; table: string; index: string; entry: string; cells: string[]; entryText: string; lit: string[] }
interface DrawnWalk {
  rows: DrawnRow[];
  result: { text: string; outcome?: string; hpa?: string; pageSize?: string; perms?: string; reason?: string; level?: string; iova?: string };
}

/** Types an IOVA, picks the access, clicks Walk and reads back what the page drew. */
async function walkInPage(iova: bigint, access: AccessKind): Promise<DrawnWalk> {
  const p = live();
  await p.selectOption("#access", access);
  await p.fill("#iova", hex(iova));
  const before = Number(await p.getAttribute("#walk-result", "data-walk"));
  await p.click("#walk-button");
  await p.waitForFunction(`Number(document.querySelector("#walk-result").dataset.walk) > ${before}`);
  const rows = await p.$$eval("#walk tbody tr", (trs) => trs.map((tr) => ({
    ...(tr as HTMLElement).dataset,
    cells: [...(tr as HTMLTableRowElement).cells].map((c) => c.textContent ?? ""),
    entryText: tr.querySelector(".hex")?.textContent ?? "",
    lit: [...tr.querySelectorAll(".bit.on")].map((b) => b.textContent ?? ""),
  })));
  const result = await p.$eval("#walk-result", (el) => ({ text: el.textContent ?? "", ...(el as HTMLElement).dataset }));
  return { rows: rows as DrawnRow[], result };
}

/** The walk the library computes in Node for the mappings the page's editor shows. */
async function expectedWalk(format: FormatKey, editor: EditorRow[], iova: bigint, access: AccessKind) {
  const p = live();
  const sets = Number(await p.evaluate("document.body.dataset.iotlbSets"));
  const ways = Number(await p.evaluate("document.body.dataset.iotlbWays"));
  const host = await createHost({ ramSize: RAM_SIZE, iotlb: { sets, ways } });
  const domain = host.createDomain(FORMATS[format].options);
  for (const row of editor) domain.pageTable.map(parseNumber(row.iova), parseNumber(row.hpa), parseNumber(row.size), row.perms);
  return { walk: domain.walk(iova, access), root: domain.root, ramSize: host.ram.size };
}

/** A few bits per format, read straight from the entry: what the page must show lit. */
function expectedLitBits(family: string, level: number, entry: bigint): Record<string, boolean> {
  const bit = (n: number) => ((entry >> BigInt(n)) & 1n) === 1n;
  if (family === "x86-64") {
    const b: Record<string, boolean> = { P: bit(0), RW: bit(1), US: bit(2), A: bit(5), XD: bit(63) };
    b[level === 0 ? "PAT" : "PS"] = bit(7);
    return b;
  }
  if (family === "vtd-sl") return { R: bit(0), W: bit(1), X: bit(2), PS: bit(7) };
  return { V: bit(0), [level === 0 ? "page" : "table"]: bit(1) };
}

function checkDrawnWalk(format: FormatKey, drawn: DrawnWalk, expected: { walk: WalkResult; root: bigint; ramSize: bigint }, iova: bigint): void {
  const { walk, root } = expected;
  const { family, levelNames } = FORMATS[format];
  expect(drawn.rows.map((r) => Number(r.level))).toEqual(walk.steps.map((s) => s.level));
  walk.steps.forEach((step, n) => {
    const row = drawn.rows[n];
    const table = step.entryAddress & ~0xfffn;
    const index = Number((iova >> BigInt(12 + 9 * step.level)) & 511n);
    expect({ table: BigInt(row.table), index: Number(row.index), entry: BigInt(row.entry) }).toEqual({ table, index, entry: step.entry });
    // The entry the walker read sits at that index of that table.
    expect(step.entryAddress).toBe(table + BigInt(index) * 8n);
    // And the visible text says the same as the data attributes.
    expect(row.cells[0]).toBe(levelNames[step.level]);
    expect(row.cells[1]).toBe(hex(table));
    expect(row.cells[2]).toBe(String(index));
    expect(BigInt(row.entryText)).toBe(step.entry);
    for (const [name, on] of Object.entries(expectedLitBits(family, step.level, step.entry))) {
      expect(row.lit.includes(name), `${levelNames[step.level]} bit ${name}`).toBe(on);
    }
  });
  // The walk starts at the root, and each table row points to the next row's table.
  if (walk.steps.length > 0) expect(BigInt(drawn.rows[0].table)).toBe(root);
  for (let n = 0; n + 1 < drawn.rows.length; n++) expect(drawn.rows[n].cells[4]).toBe(`table ${drawn.rows[n + 1].table}`);

  const result = drawn.result;
  expect(result.iova).toBe(hex(iova));
  if (walk.fault) {
    expect(result).toMatchObject({ outcome: "fault", reason: walk.fault.reason, level: String(walk.fault.level) });
    expect(result.text).toContain(`fault: ${walk.fault.reason} at level ${walk.fault.level}`);
    // The row where the walk stopped names the reason.
    const stop = drawn.rows.find((r) => Number(r.level) === walk.fault!.level);
    if (stop) expect(stop.cells[4]).toBe(`✕ ${walk.fault.reason}`);
  } else {
    const perms = (["read", "write", "exec", "user"] as const).filter((k) => walk.perms![k]).join(" ");
    expect(result).toMatchObject({ outcome: "ok", hpa: hex(walk.hpa!), pageSize: hex(walk.pageSize!), perms });
    expect(result.text).toContain(`HPA ${hex(walk.hpa!)}`);
    const last = drawn.rows[drawn.rows.length - 1];
    expect(last.cells[4]).toMatch(/ page 0x[0-9a-f]+$/);
    expect(BigInt(last.cells[4].split(" page ")[1])).toBe(walk.hpa! & ~(walk.pageSize! - 1n));
  }
}

interface Counters { hits: number; misses: number; walks: number; evictions: number; transfers: number; faults: number }

async function readCounters(): Promise<Counters> {
  return live().$$eval("[data-counter]", (dds) =>
    Object.fromEntries(dds.filter((d) => (d as HTMLElement).dataset.value !== undefined)
      .map((d) => [(d as HTMLElement).dataset.counter, Number((d as HTMLElement).dataset.value)]))) as Promise<Counters>;
}

/** Width and height from a PNG's IHDR chunk. */
function pngSize(png: Buffer): { width: number; height: number } {
  expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
  expect(png.toString("latin1", 12, 16)).toBe("IHDR");
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

beforeAll(async () => {
  if (!existsSync(BUNDLE)) throw new Error(`${BUNDLE} does not exist: build it first with \`npm run build\` (\`npm test\` builds it when stale)`);
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: install it with \`apt-get install -y chromium\` or set CHROMIUM_PATH`);
  }
  server = await start({ port: 0 });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
  });
  const p = await browser.newPage({ viewport: VIEWPORT });
  const origin = new URL(server.url).origin;
  p.on("pageerror", (e) => pageErrors.push(e.stack || `${e.name}: ${e.message}`));
  p.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  p.on("request", (r) => { if (!r.url().startsWith(origin + "/") && !r.url().startsWith("data:")) foreignRequests.push(r.url()); });
  p.on("requestfailed", (r) => foreignRequests.push(`failed: ${r.url()} (${r.failure()?.errorText})`));
  p.on("response", (r) => { if (r.status() >= 400) foreignRequests.push(`${r.status()}: ${r.url()}`); });
  await p.goto(server.url);
  await p.waitForFunction("Number(document.body.dataset.generation) >= 1", null, { timeout: 30_000 });
  page = p;
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
});

describe("playground", () => {
  it("is served on 127.0.0.1 only, the page's files and the bundle and nothing else", async () => {
    const base = server!.url;
    expect(new URL(base).hostname).toBe("127.0.0.1");
    for (const path of ["", "playground.js", "presets.js", "entries.js", "style.css", "iommu-wasm.js"]) {
      expect((await fetch(base + path)).status, path).toBe(200);
    }
    for (const path of ["serve.mjs", "presets.d.ts", "..%2Fpackage.json", "src/index.ts", "dist/iommu-wasm.js"]) {
      expect((await fetch(base + path)).status, path).toBe(404);
    }
  });

  it("shows a preset's mappings in the editor, all applied", async () => {
    await configure("x86-64-4", "mixed");
    const editor = await readEditor();
    expect(editor.map((r) => ({ iova: parseNumber(r.iova), hpa: parseNumber(r.hpa), size: parseNumber(r.size), perms: r.perms })))
      .toEqual(PRESETS.mixed.mappings);
    for (const row of editor) expect(row.status).toMatch(/^mapped/);
    // The 1 GiB page points beyond the 64 MiB of RAM: mapped, and said so.
    expect(editor[2].status).toBe("mapped · beyond RAM");
  });

  // [format, preset, iova, access]: leaves of each size, faults at the leaf and above, every format.
  const walks: [FormatKey, PresetKey, bigint, AccessKind][] = [
    ["x86-64-4", "mixed", 0x40312345n, "read"],   // 2 MiB leaf
    ["x86-64-4", "mixed", 0x2abcn, "write"],      // 4 KiB leaf
    ["x86-64-4", "mixed", 0x81234567n, "write"],  // read-only 1 GiB page: permission fault
    ["x86-64-4", "mixed", 0x5000n, "read"],       // not present at the PTE
    ["x86-64-4", "mixed", 0x3ffff000n, "read"],   // supervisor-only page, user request
    ["x86-64-4", "mixed", 0x800000000000n, "read"], // non-canonical: no entry read
    ["x86-64-5", "huge", 0x40a00040n, "read"],
    ["vtd-sl-4", "mixed", 0x81234567n, "read"],
    ["arm64-s1", "mixed", 0x40312345n, "write"],
    ["arm64-s1", "small", 0x10123a80n, "read"],
  ];
  for (const [format, preset, iova, access] of walks) {
    it(`draws the walk the library computes: ${format}, ${preset}, ${access} ${hex(iova)}`, async () => {
      await configure(format, preset);
      const editor = await readEditor();
      const drawn = await walkInPage(iova, access);
      const expected = await expectedWalk(format, editor, iova, access);
      checkDrawnWalk(format, drawn, expected, iova);
    });
  }

  it("maps a mapping added in the editor, and draws its walk as the library does", async () => {
    const p = live();
    await configure("x86-64-4", "empty");
    expect(await readEditor()).toEqual([]);
    const before = await generation();
    await p.click("#add-mapping");
    await p.waitForFunction(`Number(document.body.dataset.generation) > ${before}`);
    const editor = await readEditor();
    expect(editor).toHaveLength(1);
    expect(editor[0].status).toBe("mapped");
    const iova = parseNumber(editor[0].iova) + 0x123n;
    const drawn = await walkInPage(iova, "write");
    const expected = await expectedWalk("x86-64-4", editor, iova, "write");
    expect(expected.walk.hpa).toBe(parseNumber(editor[0].hpa) + 0x123n);
    checkDrawnWalk("x86-64-4", drawn, expected, iova);
  });

  it("moves the IOTLB counters while the device streams DMA, and stops with it", async () => {
    const p = live();
    await configure("x86-64-4", "small"); // 1024 pages of 4 KiB through a 64-entry IOTLB: evictions
    const before = await readCounters();
    expect(before).toMatchObject({ hits: 0, misses: 0, evictions: 0, transfers: 0 });
    await p.click("#stream");
    expect(await p.getAttribute("#stream", "aria-pressed")).toBe("true");
    await p.waitForFunction(() => {
      const value = (name: string) => Number((document.querySelector(`[data-counter="${name}"]`) as HTMLElement).dataset.value);
      return value("hits") > 0 && value("misses") > 500 && value("evictions") > 0;
    }, null, { timeout: 20_000 });
    await p.click("#stream");
    expect(await p.getAttribute("#stream", "aria-pressed")).toBe("false");
    // Let the panel catch up with the last tick, then it must stand still.
    await p.waitForTimeout(300);
    const stopped = await readCounters();
    await p.waitForTimeout(300);
    expect(await readCounters()).toEqual(stopped);
    // Each 64-byte read stays in one page: one IOTLB lookup per transfer; every miss walks.
    expect(stopped.hits + stopped.misses).toBe(stopped.transfers);
    expect(stopped.walks).toBe(stopped.misses);
    expect(stopped.faults).toBe(0);
    // The chart and the rate line were drawn from the samples.
    expect(await p.textContent("#iotlb-rates")).toMatch(/hits\/s/);
    // Occupancy: one cell per set, and with evictions every entry of the 16 × 4 IOTLB is live.
    await p.waitForTimeout(300);
    expect(await p.locator("#occupancy .set").count()).toBe(16);
    expect(await p.getAttribute("#occupancy", "data-total")).toBe("64");
    await p.click("#invalidate");
    await p.waitForFunction(() => (document.querySelector("#occupancy") as HTMLElement).dataset.total === "0", null, { timeout: 5_000 });
    // The device's walks set accessed bits, which a probe walk now shows.
    const drawn = await walkInPage(PRESETS.small.walkAt, "read");
    expect(drawn.rows[0].lit).toContain("A");
  });

  it("renders a screenshot of sane size", async () => {
    const p = live();
    // Leave the picture with a walk drawn and the stream running.
    await configure("x86-64-4", "mixed");
    await walkInPage(PRESETS.mixed.walkAt, "read");
    await p.click("#stream");
    await p.waitForTimeout(1200);
    const png = await p.screenshot({ fullPage: true });
    await p.click("#stream");
    mkdirSync(fileURLToPath(new URL("../build/", import.meta.url)), { recursive: true });
    writeFileSync(SCREENSHOT, png);
    const { width, height } = pngSize(png);
    expect(width).toBe(VIEWPORT.width);
    expect(height).toBeGreaterThanOrEqual(600);
    expect(height).toBeLessThanOrEqual(3000);
    // A blank or broken page compresses to a few KB; the drawn page is far larger.
    expect(png.length).toBeGreaterThan(40_000);
    expect(png.length).toBeLessThan(5_000_000);
  });

  it("ran without page errors, console errors, failed or outside requests, or an error banner", async () => {
    expect(pageErrors).toEqual([]);
    expect(consoleErrors).toEqual([]);
    expect(foreignRequests).toEqual([]);
    expect(await live().isHidden("#error")).toBe(true);
  });
});
