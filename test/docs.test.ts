// The API reference (docs/api/, made by `npm run docs` from src/index.ts and
// its JSDoc) and the published types (dist/types/): the reference exists, is
// up to date, names the main public API and documents no @internal member;
// the .d.ts declare the embedded WASM as `string` (no 61 KB literal type),
// carry no @internal member, and type-check in a consumer as they stand.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const api = join(root, "docs", "api");
const types = join(root, "dist", "types");
const generatedDts = join(types, "engine", "wasm-bytes.generated.d.ts");

function files(dir: string, suffix: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    return e.isDirectory() ? files(path, suffix) : e.name.endsWith(suffix) ? [path] : [];
  }).sort();
}

const pages = (): string[] => files(api, ".md");
const page = (name: string): string => readFileSync(join(api, name), "utf8");
const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

interface InternalMember { file: string; className: string; name: string }

/**
 * Every class member of src/ whose JSDoc says @internal, with its class (and
 * the classes that extend it, which inherit the member onto their pages).
 */
function internalMembers(): { members: InternalMember[]; subclasses: Map<string, string[]> } {
  const members: InternalMember[] = [];
  const subclasses = new Map<string, string[]>();
  for (const file of files(join(root, "src"), ".ts")) {
    const lines = readFileSync(file, "utf8").split("\n");
    let className: string | undefined;
    for (let i = 0; i < lines.length; i++) {
      const decl = /^(?:export\s+)?(?:declare\s+)?(?:abstract\s+)?class\s+(\w+)(?:<[^>]*>)?(?:\s+extends\s+(\w+))?/.exec(lines[i]);
      if (decl) {
        className = decl[1];
        if (decl[2]) subclasses.set(decl[2], [...(subclasses.get(decl[2]) ?? []), decl[1]]);
        continue;
      }
      if (/^\S/.test(lines[i]) && !/^[}/*]/.test(lines[i])) className = undefined; // a top-level statement: out of the class
      if (!className || !/^\s+\/\*\*/.test(lines[i])) continue;
      let end = i;
      while (!lines[end].includes("*/")) end++;
      const comment = lines.slice(i, end + 1).join("\n");
      if (comment.includes("@internal")) {
        let next = end + 1;
        while (next < lines.length && lines[next].trim() === "") next++;
        const m = /^\s+(?:(?:public|protected|private|readonly|static|abstract|override|async|get|set)\s+)*([A-Za-z_$][\w$]*)/.exec(lines[next] ?? "");
        if (m) members.push({ file: relative(root, file), className, name: m[1] });
      }
      i = end;
    }
  }
  return { members, subclasses };
}

beforeAll(() => {
  // npm test builds first; run alone on a fresh clone, build what is missing.
  if (!existsSync(generatedDts) || !existsSync(join(root, "dist", "iommu-wasm.js"))) {
    execFileSync(process.execPath, [join(root, "scripts", "build.mjs")], { cwd: root, stdio: "inherit" });
  }
}, 180_000);

describe("API reference (docs/api)", () => {
  it("exists, with an index and a page per public class", () => {
    expect(existsSync(join(api, "README.md")), "docs/api/README.md: run `npm run docs`").toBe(true);
    expect(pages().length).toBeGreaterThan(5);
  });

  it("names the main public API", () => {
    const index = page("README.md");
    for (const cls of ["Host", "Container", "VfioGroup", "VfioDevice", "Domain", "PageTable", "IommuError"]) {
      expect(page(`classes/${cls}.md`)).toMatch(new RegExp(`^# Class: ${cls}\\b`));
      expect(index, `index links ${cls}`).toContain(`](classes/${cls}.md)`);
    }
    expect(index).toMatch(/^### createHost\(\)$/m);
    expect(index).toMatch(/\*\*createHost\*\*\(`options\?`\): `Promise`\\<\[`Host`\]\(classes\/Host\.md\)\\>/);
  });

  it("links only to pages that exist", () => {
    for (const file of pages()) {
      for (const [, target] of readFileSync(file, "utf8").matchAll(/\]\(([^)#\s]+\.md)(?:#[^)]*)?\)/g)) {
        if (/^[a-z]+:/.test(target)) continue;
        expect(existsSync(resolve(dirname(file), target)), `${relative(root, file)} links ${target}`).toBe(true);
      }
    }
  });

  it("documents no @internal member", () => {
    const found: string[] = [];
    for (const file of pages()) {
      const text = readFileSync(file, "utf8");
      for (const name of ["attachGroup", "detachGroup", "bindStage1", "unbindStage1", "liveId"]) {
        if (text.includes(name)) found.push(`${relative(root, file)} mentions ${name}`);
      }
    }
    const { members, subclasses } = internalMembers();
    expect(members.length, "@internal members found in src").toBeGreaterThan(10);
    expect(members.map((m) => m.name)).toEqual(expect.arrayContaining(["attachGroup", "detachGroup", "bindStage1", "liveId"]));
    for (const m of members) {
      for (const cls of [m.className, ...(subclasses.get(m.className) ?? [])]) {
        const path = join(api, "classes", `${cls}.md`);
        if (!existsSync(path)) continue; // a class the package does not export
        const text = readFileSync(path, "utf8");
        const heading = m.name === "constructor" ? /^## Constructors$/m : new RegExp(`^#{2,4} ${escape(m.name)}(\\(\\))?$`, "m");
        if (heading.test(text)) found.push(`${relative(root, path)} documents ${m.className}.${m.name}, @internal in ${m.file}`);
      }
    }
    expect(found).toEqual([]);
  });

  it("is up to date with src (`npm run docs` regenerates it)", () => {
    const run = spawnSync(process.execPath, [join(root, "scripts", "docs.mjs"), "--check"], { cwd: root, encoding: "utf8" });
    expect(run.status, `${run.stdout}\n${run.stderr}`).toBe(0);
    expect(run.stdout).toMatch(/docs\/api is up to date/);
  }, 180_000);
});

describe("published types (dist/types)", () => {
  it("declare the embedded WASM as string, not a 61 KB literal type", () => {
    const dts = readFileSync(generatedDts, "utf8");
    expect(dts).toMatch(/^export declare const ENGINE_WASM_BASE64: string;$/m);
    expect(dts).not.toMatch(/ENGINE_WASM_BASE64\s*=/);
    expect(dts).not.toContain('"AGFzbQ'); // base64 of the WASM magic
    expect(statSync(generatedDts).size).toBeLessThan(1024);
    // No other declaration file holds a long literal either.
    for (const file of files(types, ".d.ts")) {
      expect(readFileSync(file, "utf8"), relative(root, file)).not.toMatch(/"[A-Za-z0-9+/=]{200,}"/);
    }
  });

  it("carry no @internal member", () => {
    for (const file of files(types, ".d.ts")) {
      expect(readFileSync(file, "utf8"), relative(root, file)).not.toContain("@internal");
    }
  });

  it("type-check in a consumer (skipLibCheck off), without the internal members", () => {
    const dir = mkdtempSync(join(tmpdir(), "iommu-wasm-types-"));
    try {
      const index = JSON.stringify(join(types, "index.js"));
      const generated = JSON.stringify(join(types, "engine", "wasm-bytes.generated.js"));
      writeFileSync(join(dir, "consumer.ts"), `
import { createHost, IommuError, PAGE_4K, type Host, type Container, type VfioGroup, type Domain, type PageTable, type HostOptions } from ${index};
import { ENGINE_WASM_BASE64 } from ${generated};
export async function use(options: HostOptions): Promise<string> {
  const host: Host = await createHost(options);
  const domain: Domain = host.createDomain({ format: "x86-64" });
  const table: PageTable = domain.pageTable;
  table.map(0x1000n, 0x2000n, PAGE_4K);
  const container: Container = host.openContainer();
  const group: VfioGroup = host.openGroup(1);
  // @ts-expect-error @internal: not in the published types
  container.attachGroup(1, { forget() {} });
  // @ts-expect-error @internal
  container.detachGroup(1);
  // @ts-expect-error @internal
  domain.liveId();
  // @ts-expect-error @internal
  group.domainId();
  const wide: typeof ENGINE_WASM_BASE64 = "any string";
  return wide + String(new IommuError("EINVAL", "x").code);
}
`);
      writeFileSync(join(dir, "tsconfig.json"), JSON.stringify({
        compilerOptions: {
          target: "ES2022", module: "ESNext", moduleResolution: "bundler", lib: ["ES2022", "DOM"],
          strict: true, skipLibCheck: false, types: [], noEmit: true,
        },
        files: ["consumer.ts"],
      }));
      const run = spawnSync(process.execPath, [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", join(dir, "tsconfig.json")], { cwd: dir, encoding: "utf8" });
      expect(run.status, `${run.stdout}\n${run.stderr}`).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
