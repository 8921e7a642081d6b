// node scripts/bench-svg.mjs RESULTS.json OUT.svg: the benchmark chart from
// the JSON of an earlier run (`npm run bench -- --json RESULTS.json`), without
// running the benchmark again, e.g. to restyle docs/bench.svg or to chart a
// run made on a quiet machine. The chart code is bench/svg.ts; only it (and
// the bench/format.ts it imports) is compiled, not the runner and src/ with
// it, so the chart can be redrawn whatever state the rest of the tree is in.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error("usage: node scripts/bench-svg.mjs RESULTS.json OUT.svg");
  process.exit(2);
}

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "build/bench-svg");
execFileSync(join(root, "node_modules/.bin/tsc"), [
  "--ignoreConfig", "--outDir", out, "--rootDir", "bench", "--target", "ES2022", "--module", "ESNext",
  "--moduleResolution", "bundler", "--strict", "--skipLibCheck", "bench/svg.ts",
], { cwd: root, stdio: "inherit" });
const { benchSvg } = await import(pathToFileURL(join(out, "svg.js")).href);

let results;
try {
  results = JSON.parse(readFileSync(resolve(input), "utf8"));
} catch (e) {
  console.error(`bench-svg: cannot read ${input}: ${e.message}`);
  process.exit(1);
}
try {
  writeFileSync(resolve(output), benchSvg(results));
} catch (e) {
  console.error(`bench-svg: ${e.message}`);
  process.exit(1);
}
console.log(`wrote ${output} (${results.cases.length} cases, ${(results.limits ?? []).length} limits)`);
