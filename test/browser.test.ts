// Loads the built bundle (dist/iommu-wasm.js, WASM inlined) in headless
// Chromium over a local HTTP server, runs one scenario in the page and checks
// the results in Node: against values computed from the mappings, and against
// the same scenario run on the same bundle in Node.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";
import { chromium, type Browser } from "playwright-core";

const BUNDLE = fileURLToPath(new URL("../dist/iommu-wasm.js", import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

// The scenario is plain JavaScript in a string so that the browser and Node run
// exactly the same source, untouched by vitest's transform. It takes the
// library's module namespace and returns JSON-friendly values only (bigints and
// byte arrays as hex strings), since the result crosses from the page to Node.
const SCENARIO = String.raw`async function run(lib) {
  const { createHost, PAGE_2M } = lib;
  const plain = (v) => {
    if (typeof v === "bigint") return "0x" + v.toString(16);
    if (v instanceof Uint8Array) return Array.from(v, (b) => b.toString(16).padStart(2, "0")).join("");
    if (Array.isArray(v)) return v.map(plain);
    if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
    return v;
  };
  const pattern = (n) => new Uint8Array(n).map((_, i) => (i * 7 + 3) & 0xff);

  const host = await createHost({ ramSize: 64 * 1024 * 1024 });
  const pt = host.createPageTable({ levels: 4 });
  const dom = host.createDomain({ pageTable: pt });

  // Back the mappings with allocated frames, so DMA cannot land on the page
  // tables. A 2 MiB page needs a 2 MiB aligned HPA: take one from a 4 MiB run.
  const run4m = host.ram.allocFrames(1024);
  const hpa2m = (run4m + PAGE_2M - 1n) & ~(PAGE_2M - 1n);
  const hpa4k = host.ram.allocFrames(2);
  pt.map(0x40000000n, hpa2m, PAGE_2M, { write: true });
  pt.map(0x10000n, hpa4k, 0x1000n, { write: true });
  pt.map(0x11000n, hpa4k + 0x1000n, 0x1000n, { write: false });

  const out = { domain: dom.id, hpa2m, hpa4k, stats: {}, translate: {}, dma: {}, ram: {} };
  out.stats.start = host.iotlb.stats();
  out.translate.hit2m = dom.translate(0x40001234n, "write");
  out.stats.afterMiss = host.iotlb.stats();
  out.translate.hit2mAgain = dom.translate(0x40001234n, "write");
  out.stats.afterHit = host.iotlb.stats();
  out.translate.hit4k = dom.translate(0x10abcn, "read");
  out.translate.unmapped = dom.translate(0x50000000n, "read");
  out.translate.readOnly = dom.translate(0x11000n, "write");

  // Round trips: a 4 KiB page, and a span of the 2 MiB page across a 4 KiB boundary.
  const hello = new TextEncoder().encode("hello dma");
  out.dma.write4k = dom.dma.write(0x10100n, hello);
  out.dma.read4k = dom.dma.read(0x10100n, hello.length);
  out.ram.at4k = host.ram.read(hpa4k + 0x100n, hello.length);
  out.dma.write2m = dom.dma.write(0x40123f00n, pattern(300));
  out.dma.read2m = dom.dma.read(0x40123f00n, 300);
  out.ram.at2m = host.ram.read(hpa2m + 0x123f00n, 300);

  // Transfers that stop part-way.
  out.dma.pastEnd2m = dom.dma.write(0x40200000n - 116n, pattern(200));
  out.ram.pastEnd2m = host.ram.read(hpa2m + PAGE_2M - 116n, 116);
  out.dma.intoReadOnly = dom.dma.write(0x10ff0n, new Uint8Array(32).fill(0xaa));
  out.ram.aroundReadOnly = host.ram.read(hpa4k + 0xff0n, 32);
  out.dma.pastEnd4k = dom.dma.read(0x11ff8n, 16);

  out.faults = host.faults.drain();
  out.faultsAfterDrain = host.faults.pending;
  out.stats.end = host.iotlb.stats();
  dom.invalidate();
  out.stats.afterInvalidate = host.iotlb.stats();
  out.translate.afterInvalidate = dom.translate(0x40001234n, "write");
  out.stats.afterRewalk = host.iotlb.stats();
  return plain(out);
}`;

const PAGE = `<!doctype html>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<script type="module">
  import * as lib from "/iommu-wasm.js";
  import { run } from "/scenario.js";
  try { window.__done = { ok: true, result: await run(lib) }; }
  catch (e) { window.__done = { ok: false, error: String((e && e.stack) || e) }; }
</script>`;

// What the scenario returns, as far as the assertions below look into it.
type Hex = string;
type Stats = { hits: number; misses: number; evictions: number; invalidations: number; walks: number };
type Fault = { reason: string; address: Hex; level: number; stage?: number; pasid?: number; access?: Record<string, boolean> };
type Translation = { hpa?: Hex; pageSize?: Hex; perms?: Record<string, boolean>; inRam?: boolean; fault?: Fault };
type Dma = { bytes: number; data?: Hex; fault?: Fault };
interface Result {
  domain: number;
  hpa2m: Hex;
  hpa4k: Hex;
  stats: Record<"start" | "afterMiss" | "afterHit" | "end" | "afterInvalidate" | "afterRewalk", Stats>;
  translate: Record<"hit2m" | "hit2mAgain" | "hit4k" | "unmapped" | "readOnly" | "afterInvalidate", Translation>;
  dma: Record<"write4k" | "read4k" | "write2m" | "read2m" | "pastEnd2m" | "intoReadOnly" | "pastEnd4k", Dma>;
  ram: Record<"at4k" | "at2m" | "pastEnd2m" | "aroundReadOnly", Hex>;
  faults: Array<Fault & { domain: number; source: number }>;
  faultsAfterDrain: number;
}

const hex = (v: bigint) => "0x" + v.toString(16);
const bytesHex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const pattern = (n: number) => new Uint8Array(n).map((_, i) => (i * 7 + 3) & 0xff);
const RW = { read: true, write: true, exec: false, user: true };
const READ = { read: true, write: false, exec: false, privileged: false };
const WRITE = { read: false, write: true, exec: false, privileged: false };

let server: Server | undefined;
let browser: Browser | undefined;
let setup: { result: Result; nodeResult: Result } | { error: unknown } | undefined;
const pageErrors: string[] = [];
const consoleErrors: string[] = [];
const unexpectedRequests: string[] = [];

// Browser stack lines ("    at f (http://127.0.0.1:…)") quoted so vitest does
// not take them for frames of its own and try to read them as files.
const quote = (text: string) => text.replace(/^/gm, "  | ");

function serve(bundle: string): Promise<string> {
  const files: Record<string, [string, string]> = {
    "/": ["text/html; charset=utf-8", PAGE],
    "/iommu-wasm.js": ["text/javascript; charset=utf-8", bundle],
    "/scenario.js": ["text/javascript; charset=utf-8", `export const run = ${SCENARIO};\n`],
  };
  server = createServer((req, res) => {
    const file = files[new URL(req.url ?? "/", "http://x").pathname];
    if (!file) {
      // The WASM is inlined: the page should need nothing beyond these files.
      unexpectedRequests.push(`${req.method} ${req.url}`);
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": file[0], "cache-control": "no-store" }).end(file[1]);
  });
  return new Promise((resolve, reject) => {
    server!.once("error", reject);
    server!.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(server!.address() as AddressInfo).port}/`));
  });
}

// A missing prerequisite or a failed setup fails every test with the setup's
// error, rather than leaving them reported as skipped.
function outcome(): { result: Result; nodeResult: Result } {
  if (!setup) throw new Error("setup did not run");
  if ("error" in setup) throw setup.error;
  return setup;
}

async function runScenario(): Promise<{ result: Result; nodeResult: Result }> {
  if (!existsSync(BUNDLE)) {
    throw new Error(`${BUNDLE} does not exist: build it first with \`npm run build\` (\`npm test\` builds it when stale)`);
  }
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium not found at ${CHROMIUM}: install it with \`apt-get install -y chromium\` ` +
        `or set CHROMIUM_PATH to a Chromium/Chrome executable`,
    );
  }
  const url = await serve(readFileSync(BUNDLE, "utf8"));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-quic", "--no-first-run", "--disable-sync",
    ],
  });
  const page = await browser.newPage();
  // An uncaught page error (say, the bundle failing to parse) means the
  // scenario will never finish: stop waiting at once.
  let pageFailed!: (e: Error) => void;
  const failed = new Promise<never>((_, reject) => { pageFailed = reject; });
  failed.catch(() => {});
  page.on("pageerror", (e) => {
    pageErrors.push(quote(e.stack || `${e.name}: ${e.message}`));
    pageFailed(new Error(`uncaught error in the page:\n${pageErrors.join("\n")}`));
  });
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("requestfailed", (r) => unexpectedRequests.push(`failed: ${r.url()} (${r.failure()?.errorText})`));
  await page.goto(url);
  // String predicates: evaluated in the page as written, not as transformed by vitest.
  await Promise.race([page.waitForFunction("window.__done !== undefined", null, { timeout: 30_000 }), failed]).catch((e: unknown) => {
    throw new Error(`the page did not finish the scenario: ${String(e)}\nconsole errors: ${consoleErrors.join("\n")}`);
  });
  const done = (await page.evaluate("window.__done")) as { ok: boolean; result?: Result; error?: string };
  if (!done.ok) throw new Error(`the scenario threw in the browser:\n${quote(String(done.error))}`);

  const run = new Function(`return (${SCENARIO});`)() as (lib: unknown) => Promise<Result>;
  const nodeResult = await run(await import(/* @vite-ignore */ pathToFileURL(BUNDLE).href));
  return { result: done.result!, nodeResult };
}

beforeAll(async () => {
  try {
    setup = await runScenario();
  } catch (error) {
    setup = { error };
  }
}, 120_000);

afterAll(async () => {
  await browser?.close();
  if (server) {
    server.closeAllConnections();
    await new Promise((resolve) => server!.close(resolve));
  }
});

describe("bundle in headless Chromium", () => {
  it("loads without page errors, console errors or extra requests", () => {
    outcome();
    expect(pageErrors).toEqual([]);
    expect(consoleErrors).toEqual([]);
    expect(unexpectedRequests).toEqual([]);
  });

  it("translates through the 4 KiB and 2 MiB mappings and faults elsewhere", () => {
    const { result } = outcome();
    const hpa2m = BigInt(result.hpa2m), hpa4k = BigInt(result.hpa4k);
    expect(hpa2m % 0x200000n).toBe(0n);
    const t = result.translate;
    expect(t.hit2m).toEqual({ hpa: hex(hpa2m + 0x1234n), pageSize: "0x200000", perms: RW, inRam: true });
    expect(t.hit2mAgain).toEqual(t.hit2m);
    expect(t.hit4k).toEqual({ hpa: hex(hpa4k + 0xabcn), pageSize: "0x1000", perms: RW, inRam: true });
    // 0x50000000 shares the 1 GiB region of the 2 MiB page, so the walk stops at its empty PD entry (level 1).
    expect(t.unmapped).toEqual({ fault: { reason: "not-present", level: 1, address: "0x50000000", stage: 1 } });
    expect(t.readOnly).toEqual({ fault: { reason: "permission", level: 0, address: "0x11000", stage: 1 } });
  });

  it("round-trips DMA writes and reads, landing at the mapped HPAs", () => {
    const { result } = outcome();
    const { dma, ram } = result;
    const hello = bytesHex(new TextEncoder().encode("hello dma"));
    expect(dma.write4k).toEqual({ bytes: 9 });
    expect(dma.read4k).toEqual({ bytes: 9, data: hello });
    expect(ram.at4k).toBe(hello);
    expect(dma.write2m).toEqual({ bytes: 300 });
    expect(dma.read2m).toEqual({ bytes: 300, data: bytesHex(pattern(300)) });
    expect(ram.at2m).toBe(bytesHex(pattern(300)));
  });

  it("stops a DMA at the first fault, reporting the bytes done and why", () => {
    const { result } = outcome();
    const { dma, ram } = result;
    expect(dma.pastEnd2m).toEqual({
      bytes: 116,
      fault: { reason: "not-present", address: "0x40200000", level: 1, stage: 1, pasid: 0, access: WRITE },
    });
    expect(ram.pastEnd2m).toBe(bytesHex(pattern(116)));
    expect(dma.intoReadOnly).toEqual({
      bytes: 16,
      fault: { reason: "permission", address: "0x11000", level: 0, stage: 1, pasid: 0, access: WRITE },
    });
    // The 16 bytes before the read-only page were written; the read-only page was not.
    expect(ram.aroundReadOnly).toBe("aa".repeat(16) + "00".repeat(16));
    expect(dma.pastEnd4k.bytes).toBe(8);
    expect(dma.pastEnd4k.fault).toEqual({ reason: "not-present", address: "0x12000", level: 0, stage: 1, pasid: 0, access: READ });
  });

  it("records every fault in order and drains the ring", () => {
    const { result } = outcome();
    const rec = (address: string, reason: string, level: number, access: typeof READ) =>
      ({ domain: result.domain, pasid: 0, source: 0, address, access, reason, level, stage: 1 });
    expect(result.faults).toEqual([
      rec("0x50000000", "not-present", 1, READ),
      rec("0x11000", "permission", 0, WRITE),
      rec("0x40200000", "not-present", 1, WRITE),
      rec("0x11000", "permission", 0, WRITE),
      rec("0x12000", "not-present", 0, READ),
    ]);
    expect(result.faultsAfterDrain).toBe(0);
  });

  it("counts IOTLB misses, hits and invalidations", () => {
    const { result } = outcome();
    const s = result.stats;
    expect(s.start).toEqual({ hits: 0, misses: 0, evictions: 0, invalidations: 0, walks: 0 });
    expect(s.afterMiss).toEqual({ hits: 0, misses: 1, evictions: 0, invalidations: 0, walks: 1 });
    expect(s.afterHit).toEqual({ hits: 1, misses: 1, evictions: 0, invalidations: 0, walks: 1 });
    expect(s.end.hits).toBeGreaterThan(s.afterHit.hits);
    expect(s.end.misses).toBeGreaterThan(s.afterHit.misses);
    expect(s.afterInvalidate).toEqual({ ...s.end, invalidations: s.end.invalidations + 1 });
    // After the flush the same address misses and walks again, with the same answer.
    expect(s.afterRewalk).toEqual({ ...s.afterInvalidate, misses: s.afterInvalidate.misses + 1, walks: s.afterInvalidate.walks + 1 });
    expect(result.translate.afterInvalidate).toEqual(result.translate.hit2m);
  });

  it("gives the same results as the same bundle in Node", () => {
    const { result, nodeResult } = outcome();
    expect(result).toEqual(nodeResult);
  });
});
