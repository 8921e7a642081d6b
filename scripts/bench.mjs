// npm run bench: compiles bench/ (and the src/ it imports) with tsc, then
// runs it with the arguments given after `--`.
import { execFileSync } from "node:child_process";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
execFileSync(join(root, "node_modules/.bin/tsc"), ["-p", "bench/tsconfig.json"], { cwd: root, stdio: "inherit" });
execFileSync(process.execPath, [join(root, "build/bench/bench/run.js"), ...process.argv.slice(2)], { cwd: root, stdio: "inherit" });
