// Every example in examples/ runs and prints what it says it does, and every
// README code block marked `<!-- example: FILE -->` is a verbatim excerpt of
// that file, so the README's code cannot drift from code that runs.
import { afterAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type Browser } from "playwright-core";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** What each Node example must print (in order). */
const EXPECTED: Record<string, RegExp[]> = {
  "dma-api.mjs": [
    /dma_map_page → 0xfffff080/,
    /the NIC reads: tx packet/,
    /the NIC writes: permission/,
    /after dma_unmap_page: not-present/,
    /the next map reuses it: 0xfffff080, rcache hits 1/,
  ],
  "translate.mjs": [
    /translate 0x40001234 → hpa 0x201234, page 0x200000/,
    /read 5 bytes: hello/,
    /read at the end of the page: 2 bytes, then not-present at 0x40200000/,
    /fault record: not-present at 0x40200000 \(read, level 1, stage 1\)/,
  ],
  "vmm.mjs": [
    /0x00000000fee00000 0x00000000feefffff msi/,
    /pgsizes 0x40201000, 65534 DMA entries left/,
    /NIC reads GPA 0x1000: ping/,
    /MSI from 0000:03:00.0 at 0xfee00000, data 1/,
    /dirty since start: 0x3000$/m,
    /unmapped 64 MiB, dirty at the unmap: 0x5000; locked now 0/,
  ],
  "guest.mjs": [
    /PASID 1 reads GVA 0x7f0000000000: guest buffer/,
    /before the invalidation: guest buffer/,
    /after it: moved buffer/,
    /unmapped GVA: not-present, stage 1/,
    /after the free: no-context/,
  ],
  "vgpu.mjs": [
    /GMA 0x1000 → IOVA 0xffffe000 → HPA 0x[0-9a-f]+/,
    /the GPU reads: texture/,
    /after the VMM's unmap: not-present at the device-mmu; pinned pages 0/,
  ],
  "xen.mjs": [
    /GMA 0x1000 → BFN 0x[0-9a-f]+ \(VM 2, GFN 5\); no MFN in sight/,
    /the GPU reads: texture/,
    /the GPU reads through the PPGTT: texture/,
    /after unserve: not-present at the iommu/,
    /the PPGTT too: iommu/,
  ],
  "device-model.mjs": [
    /descriptor 1: not-present at 0x200000/,
    /status: 1 2/,
    /destination: hello, IOMMU world/,
    /IOTLB: \{"hits":\d+,"misses":\d+/,
  ],
};

function inOrder(output: string, patterns: RegExp[]): void {
  let rest = output;
  for (const p of patterns) {
    const m = p.exec(rest);
    expect(m, `expected ${p} in order in:\n${output}`).not.toBeNull();
    rest = rest.slice(m!.index + m![0].length);
  }
}

describe("examples/", () => {
  const files = readdirSync(join(ROOT, "examples")).sort();

  it("has an expectation for every Node example, and the browser page", () => {
    expect(files.filter((f) => f.endsWith(".mjs"))).toEqual(Object.keys(EXPECTED).sort());
    expect(files).toContain("browser.html");
  });

  for (const [file, patterns] of Object.entries(EXPECTED)) {
    it(`node examples/${file}`, () => {
      // `import "iommu-wasm"` resolves to this package itself (its exports), as it would in a user's project.
      const output = execFileSync(process.execPath, [join("examples", file)], { cwd: ROOT, encoding: "utf8", timeout: 30_000 });
      inOrder(output, patterns);
    });
  }

  let server: Server | undefined;
  let browser: Browser | undefined;
  afterAll(async () => {
    await browser?.close();
    server?.close();
  });

  it("examples/browser.html in headless Chromium", async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install -y chromium, or set CHROMIUM_PATH`);
    const types: Record<string, string> = { ".html": "text/html", ".js": "text/javascript" };
    server = createServer((req, res) => {
      // Only the page and the bundle it imports.
      const path = normalize(decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname)).replace(/^\/+/, "");
      if (path !== "examples/browser.html" && path !== "dist/iommu-wasm.js") { res.writeHead(404).end(); return; }
      res.writeHead(200, { "content-type": types[extname(path)] }).end(readFileSync(join(ROOT, path)));
    });
    await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    browser = await chromium.launch({
      executablePath: CHROMIUM, headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
    });
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`http://127.0.0.1:${port}/examples/browser.html`);
    await page.waitForFunction("document.getElementById('out').textContent.includes('done')", null, { timeout: 30_000 });
    const text = await page.textContent("#out");
    expect(errors).toEqual([]);
    inOrder(text ?? "", [/read: hello from the page/, /translate 0x40001234 → 0x201234/, /unmapped: not-present/, /done/]);
  });
});

describe("README code blocks", () => {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const marked = [...readme.matchAll(/<!-- example: (\S+) -->\s*\n```\w*\n([\s\S]*?)```/g)];

  it("shows every example", () => {
    const shown = new Set(marked.map((m) => m[1]));
    for (const f of readdirSync(join(ROOT, "examples"))) expect(shown, `README shows no block of examples/${f}`).toContain(`examples/${f}`);
  });

  for (const [, file, block] of marked) {
    it(`its block from ${file} is in the file as written`, () => {
      const source = readFileSync(join(ROOT, file), "utf8");
      // An excerpt may drop lines ("// ...") between runs of verbatim lines.
      for (const run of block.split(/^\s*\/\/ \.\.\..*$\n?/m).map((r) => r.trimEnd()).filter((r) => r.length > 0)) {
        expect(source, `README block for ${file} is not in the file:\n${run}`).toContain(run);
      }
    });
  }
});
