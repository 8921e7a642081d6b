// The package as a user gets it: `npm pack` gives a tarball with the bundle,
// its types and the docs that belong in it; installed into a clean consumer
// project it imports from Node, type-checks through `exports`, and bundles
// with rollup. Nothing is fetched: the package has no runtime dependencies.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const bin = (name: string) => join(ROOT, "node_modules", ".bin", name);
const run = (cmd: string, args: string[], cwd: string) => execFileSync(cmd, args, { cwd, encoding: "utf8", timeout: 120_000, stdio: ["ignore", "pipe", "pipe"] });

// What the consumer runs, the same way from Node and from the bundle.
const CONSUMER = `import { createHost, PAGE_4K } from "iommu-wasm";
const host = await createHost({ ramSize: 16 * 1024 * 1024 });
const domain = host.createDomain({ format: "x86-64", levels: 4 });
domain.pageTable.map(0x1000n, 0x5000n, PAGE_4K, { write: true });
console.log("consumer: 0x" + domain.translate(0x1234n).hpa.toString(16));
`;

let work = "";
let tarball = "";
let consumer = "";

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "iommu-wasm-pack-"));
  // The bundle is already built (npm test builds first): pack without running prepare again.
  const name = run("npm", ["pack", "--ignore-scripts", "--silent", "--pack-destination", work], ROOT).trim().split("\n").pop()!;
  tarball = join(work, name);
  consumer = join(work, "consumer");
  mkdirSync(consumer);
  writeFileSync(join(consumer, "package.json"), JSON.stringify({ name: "consumer", version: "1.0.0", type: "module", private: true }));
  run("npm", ["install", tarball, "--offline", "--no-audit", "--no-fund", "--ignore-scripts", "--silent"], consumer);
}, 180_000);

afterAll(() => { if (work) rmSync(work, { recursive: true, force: true }); });

describe("npm pack", () => {
  it("holds the bundle, its types, README, LICENSE and CHANGELOG, and no sources or tests", () => {
    const files = run("tar", ["-tzf", tarball], ROOT).split("\n").filter(Boolean).map((f) => f.replace(/^package\//, ""));
    for (const f of ["package.json", "dist/iommu-wasm.js", "dist/types/index.d.ts", "bin/iommu-wasm.mjs", "README.md", "LICENSE", "CHANGELOG.md"]) expect(files).toContain(f);
    expect(files.filter((f) => /^(src|test|assembly|bench|build|node_modules)\//.test(f))).toEqual([]);
  });

  it("imports and runs in a clean consumer project from Node", () => {
    writeFileSync(join(consumer, "main.mjs"), CONSUMER);
    expect(run(process.execPath, ["main.mjs"], consumer)).toBe("consumer: 0x5234\n");
    // package.json is exported too (tools read a dependency's version through it).
    expect(run(process.execPath, ["-e", "import('iommu-wasm/package.json', { with: { type: 'json' } }).then((m) => console.log(m.default.name))"], consumer)).toBe("iommu-wasm\n");
  });

  it("installs the CLI: the consumer's node_modules/.bin/iommu-wasm runs", () => {
    expect(run(join(consumer, "node_modules", ".bin", "iommu-wasm"), ["--help"], consumer)).toMatch(/walk[\s\S]*dump[\s\S]*reserved/);
  });

  it("type-checks a TypeScript consumer through the package's exports", () => {
    // Typed as a user would: a translation may be a fault, so its hpa is asserted.
    const typed = CONSUMER.replace("const domain", "const domain: import(\"iommu-wasm\").Domain").replace(".hpa.", ".hpa!.");
    writeFileSync(join(consumer, "main.ts"), typed);
    writeFileSync(join(consumer, "tsconfig.json"), JSON.stringify({
      compilerOptions: { target: "es2022", module: "nodenext", moduleResolution: "nodenext", strict: true, noEmit: true, types: [], skipLibCheck: false },
      files: ["main.ts"],
    }));
    expect(() => run(bin("tsc"), ["-p", "tsconfig.json"], consumer)).not.toThrow();
    // A wrong use is caught, so the check above is a real one.
    writeFileSync(join(consumer, "main.ts"), typed.replace("PAGE_4K, {", "\"4096\", {"));
    expect(() => run(bin("tsc"), ["-p", "tsconfig.json"], consumer)).toThrow();
  });

  it("bundles with rollup, resolving the package through its exports, and the bundle runs", () => {
    writeFileSync(join(consumer, "main.mjs"), CONSUMER);
    // rollup alone does not resolve bare imports: a few lines do what a resolver plugin does, from package.json's exports.
    writeFileSync(join(consumer, "rollup.config.mjs"), `
import { readFileSync } from "node:fs";
import { join } from "node:path";
const pkg = join(process.cwd(), "node_modules", "iommu-wasm");
const exportsMap = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")).exports["."];
export default {
  input: "main.mjs",
  output: { file: "bundle.mjs", format: "es" },
  plugins: [{ name: "resolve-iommu-wasm", resolveId: (id) => (id === "iommu-wasm" ? join(pkg, exportsMap.import) : null) }],
};`);
    run(process.execPath, [join(ROOT, "node_modules", "rollup", "dist", "bin", "rollup"), "-c", "rollup.config.mjs", "--silent"], consumer);
    expect(readFileSync(join(consumer, "bundle.mjs"), "utf8")).not.toContain("from \"iommu-wasm\"");
    expect(run(process.execPath, ["bundle.mjs"], consumer)).toBe("consumer: 0x5234\n");
  });
});
