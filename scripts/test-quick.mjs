// npm run test:quick: the whole suite with a tenth of each property test's
// runs (test/support/runs.ts), for iterating; `npm test` keeps full strength.
import { spawnSync } from "node:child_process";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const vitest = join(root, "node_modules", "vitest", "vitest.mjs");
const run = spawnSync(process.execPath, [vitest, "run", ...process.argv.slice(2)], {
  cwd: root, stdio: "inherit", env: { ...process.env, IOMMU_TEST_QUICK: "1" },
});
process.exit(run.status ?? 1);
