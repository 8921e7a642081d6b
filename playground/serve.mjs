// npm run playground: serves the playground page and the built bundle on
// 127.0.0.1 only. The page needs nothing else (the WASM is inlined in the
// bundle), so the server knows a fixed list of files and answers 404 to
// anything else: there is no path from a URL to an arbitrary file on disk.
//
//   node playground/serve.mjs [--port N]    (default 5173; 0 picks a free port)
//
// Tests import start({ port: 0 }) and close the server themselves.
import { createServer } from "node:http";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..");
const BUNDLE = join(root, "dist", "iommu-wasm.js");
const DEFAULT_PORT = 5173;

const HTML = "text/html; charset=utf-8";
const JS = "text/javascript; charset=utf-8";
const CSS = "text/css; charset=utf-8";

/** URL path → [file on disk, content type]. Files are read on each request, so a rebuild shows on reload. */
const ROUTES = {
  "/": [join(here, "index.html"), HTML],
  "/index.html": [join(here, "index.html"), HTML],
  "/style.css": [join(here, "style.css"), CSS],
  "/playground.js": [join(here, "playground.js"), JS],
  "/presets.js": [join(here, "presets.js"), JS],
  "/entries.js": [join(here, "entries.js"), JS],
  "/iommu-wasm.js": [BUNDLE, JS],
};

async function answer(req, res) {
  const path = new URL(req.url ?? "/", "http://127.0.0.1").pathname;
  const route = ROUTES[path];
  if (!route || (req.method !== "GET" && req.method !== "HEAD")) {
    res.writeHead(route ? 405 : 404, { "content-type": "text/plain; charset=utf-8" }).end(route ? "GET only\n" : "not found\n");
    return;
  }
  const [file, type] = route;
  let body;
  try {
    body = await readFile(file);
  } catch {
    const hint = file === BUNDLE ? "dist/iommu-wasm.js is missing: run `npm run build`\n" : "not found\n";
    res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end(hint);
    return;
  }
  res.writeHead(200, { "content-type": type, "content-length": body.length, "cache-control": "no-store" });
  res.end(req.method === "HEAD" ? undefined : body);
}

/**
 * Starts the server on 127.0.0.1. Resolves to the page's URL and a close()
 * that stops listening and drops open (keep-alive) connections.
 */
export function start({ port = DEFAULT_PORT } = {}) {
  const server = createServer((req, res) => {
    answer(req, res).catch((e) => {
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain; charset=utf-8" });
      res.end(`server error: ${e}\n`);
    });
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      const url = `http://127.0.0.1:${server.address().port}/`;
      const close = () => new Promise((done) => {
        server.closeAllConnections();
        server.close(() => done());
      });
      resolve({ url, close });
    });
  });
}

function parsePort(argv) {
  const i = argv.indexOf("--port");
  const text = i >= 0 ? argv[i + 1] : argv.find((a) => a.startsWith("--port="))?.slice("--port=".length);
  if (text === undefined) return DEFAULT_PORT;
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`--port wants an integer 0..65535 (0: any free port), got ${JSON.stringify(text)}`);
    process.exit(2);
  }
  return port;
}

async function main() {
  const port = parsePort(process.argv.slice(2));
  if (!existsSync(BUNDLE)) {
    // Only when there is no bundle at all: `npm run playground` already builds a stale one.
    execFileSync(process.execPath, [join(root, "scripts", "build.mjs"), "--if-stale"], { cwd: root, stdio: "inherit" });
  }
  let running;
  try {
    running = await start({ port });
  } catch (e) {
    console.error(e.code === "EADDRINUSE" ? `port ${port} is in use: try --port 0 for any free port` : String(e));
    process.exit(1);
  }
  console.log(`iommu-wasm playground: ${running.url}  (Ctrl-C to stop)`);
  process.once("SIGINT", async () => {
    await running.close();
    process.exit(0);
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
