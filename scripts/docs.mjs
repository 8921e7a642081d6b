// npm run docs: the API reference, generated from the public types and their
// JSDoc (src/index.ts is the entry point) into docs/api/ as Markdown.
//
// typedoc needs the classic TypeScript compiler API, which the project's
// TypeScript 7 (the native compiler) does not have, so it runs from its own
// pinned install in tools/docs/ (typedoc, typedoc-plugin-markdown and
// typescript 5, locked by tools/docs/package-lock.json); this script runs
// `npm ci` there when that install is missing or differs from the lock. The
// root package.json and package-lock.json are not involved.
//
//   node scripts/docs.mjs              regenerate docs/api/
//   node scripts/docs.mjs --out DIR    write somewhere else
//   node scripts/docs.mjs --check      regenerate into a temporary folder and
//                                      fail (exit 1) when docs/api/ differs
//
// @internal members, private and protected members are left out
// (tools/docs/typedoc.json); so are source links, so the pages change only
// when the API or its documentation does.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const tools = join(root, "tools", "docs");
const committed = join(root, "docs", "api");

function argValue(name) {
  const i = process.argv.indexOf(name);
  if (i < 0) return undefined;
  const value = process.argv[i + 1];
  if (value === undefined || value.startsWith("--")) throw new Error(`${name} needs a value`);
  return value;
}

/** True when every package in tools/docs/package-lock.json is installed at its locked version. */
function toolsInstalled() {
  const lock = JSON.parse(readFileSync(join(tools, "package-lock.json"), "utf8"));
  for (const [path, entry] of Object.entries(lock.packages)) {
    if (path === "" || entry.optional) continue;
    const manifest = join(tools, path, "package.json");
    if (!existsSync(manifest)) return false;
    if (JSON.parse(readFileSync(manifest, "utf8")).version !== entry.version) return false;
  }
  return true;
}

function ensureTools() {
  if (toolsInstalled()) return;
  console.log("docs: installing tools/docs (typedoc, typescript 5) from tools/docs/package-lock.json");
  // Under `npm run`, npm_execpath is the npm that runs us; otherwise npm from PATH.
  const npmCli = process.env.npm_execpath;
  const [cmd, pre] = npmCli && /npm-cli\.js$/.test(npmCli) ? [process.execPath, [npmCli]] : ["npm", []];
  execFileSync(cmd, [...pre, "ci", "--prefix", tools, "--no-audit", "--no-fund", "--loglevel=error"],
    { cwd: root, stdio: "inherit", shell: cmd === "npm" && process.platform === "win32" });
}

/** src/engine/wasm-bytes.generated.ts comes from the build; the docs need the file, not a fresh one. */
function ensureGeneratedSources() {
  if (existsSync(join(root, "src", "engine", "wasm-bytes.generated.ts"))) return;
  execFileSync(process.execPath, [join(root, "scripts", "build.mjs"), "--if-stale"], { cwd: root, stdio: "inherit" });
}

function generate(out, logLevel = "Warn") {
  ensureTools();
  ensureGeneratedSources();
  execFileSync(process.execPath, [
    join(tools, "node_modules", "typedoc", "bin", "typedoc"),
    "--options", join(tools, "typedoc.json"),
    "--out", out,
    "--logLevel", logLevel,
  ], { cwd: root, stdio: "inherit" });
}

function listFiles(dir, base = dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    return entry.isDirectory() ? listFiles(path, base) : [relative(base, path).split("\\").join("/")];
  }).sort();
}

/** How the committed tree differs from a fresh one: files missing, left over, or with other contents. */
function differences(fresh, actual) {
  const a = new Set(listFiles(fresh)), b = new Set(listFiles(actual));
  const out = [];
  for (const f of a) if (!b.has(f)) out.push(`missing: ${f}`);
  for (const f of b) if (!a.has(f)) out.push(`no longer generated: ${f}`);
  for (const f of a) {
    if (b.has(f) && !readFileSync(join(fresh, f)).equals(readFileSync(join(actual, f)))) out.push(`differs: ${f}`);
  }
  return out;
}

if (process.argv.includes("--check")) {
  const scratch = mkdtempSync(join(tmpdir(), "iommu-wasm-docs-"));
  try {
    const fresh = join(scratch, "api");
    generate(fresh, "Error"); // the warnings are for `npm run docs`
    const diff = differences(fresh, committed);
    if (diff.length > 0) {
      console.error(`docs/api is out of date with src/ (${diff.length} file(s)); run \`npm run docs\` and commit docs/api:\n  ${diff.join("\n  ")}`);
      process.exit(1);
    }
    console.log(`docs/api is up to date (${listFiles(fresh).length} files)`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
} else {
  const out = resolve(root, argValue("--out") ?? committed);
  generate(out);
  console.log(`docs: ${listFiles(out).length} files in ${relative(root, out) || "."}`);
}
