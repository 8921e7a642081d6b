// The API-surface fuzz test (issue 20): every public method, getter and
// setter of every public class, found at run time, called with hostile
// arguments. A call may return or refuse with an IommuError; it may not throw
// anything else, trap in WASM, or change any state when it refuses.
//
// Size: IOMMU_FUZZ_CALLS calls per seed (default 8000: 10–20 s on the
// project's two shared cores; IOMMU_TEST_QUICK=1 makes it 800), and
// IOMMU_FUZZ_SEEDS seeds counting up from IOMMU_FUZZ_SEED (default 1 seed, 20).
// A long run (about a minute per 100000 calls here, most of it rebuilding hosts):
//   IOMMU_FUZZ_CALLS=100000 IOMMU_FUZZ_SEEDS=4 npx vitest run test/api-fuzz.test.ts
// A finding names its seed and call number; the same seed replays it.
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import * as api from "../src/index.js";
import { changedKeys, facadeState, shadowRam } from "./support/fuzz/fingerprint.js";
import { FuzzRun, SWEEPS, enumerate } from "./support/fuzz/runner.js";
import { INTERNAL, callableNames, readSource, type Member, type SourceFacts } from "./support/fuzz/surface.js";
import { FAILING, Tally, describeExample, report } from "./support/fuzz/tally.js";
import { GENERATOR_KEYS } from "./support/fuzz/valid.js";
import { PAGE, buildHostWorld, buildWorld, type World } from "./support/fuzz/world.js";

const SRC = join(dirname(fileURLToPath(import.meta.url)), "..", "src");

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got ${raw}`);
  return n;
}

const QUICK = process.env.IOMMU_TEST_QUICK === "1";
const CALLS = envInt("IOMMU_FUZZ_CALLS", QUICK ? 800 : 8000);
const SEEDS = envInt("IOMMU_FUZZ_SEEDS", 1);
const FIRST_SEED = envInt("IOMMU_FUZZ_SEED", 20);
/** Generous: about 4 ms a call on a busy two-core machine, and never under a minute. */
const TIMEOUT_MS = Math.max(60_000, CALLS * SEEDS * 4);

const isClass = (v: unknown): v is abstract new (...a: never[]) => unknown =>
  typeof v === "function" && Function.prototype.toString.call(v).startsWith("class");

/** The package's exported functions that are not classes (createHost): fuzzed as the members of "module". */
const MODULE_FUNCTIONS = Object.fromEntries(Object.entries(api).filter(([, v]) => typeof v === "function" && !isClass(v)));

/** Exported classes an instance of which the world must hold; IommuError and KernelBug are what refusals and BUGs are, not API objects. */
const PUBLIC_CLASSES = Object.entries(api).filter(([name, v]) => isClass(v) && name !== "IommuError" && name !== "KernelBug") as [string, abstract new (...a: never[]) => unknown][];

describe("API surface fuzz", () => {
  let facts: SourceFacts;
  let world: World;
  let members: Map<string, Member[]>;

  beforeAll(async () => {
    facts = readSource(SRC);
    world = await buildWorld(MODULE_FUNCTIONS);
    members = enumerate(world, facts);
    const lines = [...members].map(([cls, list]) => `  ${cls} (${list.length}): ${list.map((m) => (m.kind === "method" ? m.name : `${m.name} [${m.kind}]`)).join(", ")}`);
    const total = [...members.values()].reduce((n, l) => n + l.length, 0);
    console.log(`API surface: ${total} public members in ${members.size} classes\n${lines.join("\n")}`);
  });

  it("skips exactly the methods and accessors src/ documents @internal", () => {
    // What a caller could reach at run time, by declaring class: an @internal field is never called, so it need not be listed.
    const callable = new Map<string, Set<string>>();
    for (const t of world.targets) for (const [cls, names] of callableNames(t.obj)) callable.set(cls, names);
    const missing = facts.internal.filter(({ cls, name }) => callable.get(cls)?.has(name) && !INTERNAL[cls]?.includes(name));
    expect(missing.map((m) => `${m.cls}.${m.name} (${m.where}): add it to INTERNAL in test/support/fuzz/surface.ts`)).toEqual([]);
    const documented = new Set(facts.internal.map((m) => `${m.cls}.${m.name}`));
    const stale = Object.entries(INTERNAL).flatMap(([cls, names]) => names.map((n) => `${cls}.${n}`)).filter((k) => !documented.has(k));
    if (stale.length > 0) console.log(`INTERNAL lists members src/ no longer documents @internal: ${stale.join(", ")}`);
  });

  it("holds an instance of every exported class, each with public members", () => {
    const absent = PUBLIC_CLASSES.filter(([, cls]) => !world.targets.some((t) => t.obj instanceof cls)).map(([name]) => name);
    expect(absent.map((name) => `${name}: add an instance to the world in test/support/fuzz/world.ts`)).toEqual([]);
    for (const [cls, list] of members) expect(list.length, `${cls} yields no public member`).toBeGreaterThan(0);
    expect(members.get("module")?.map((m) => m.name)).toContain("createHost");
    // A generator for a method that is not there has gone stale (renamed or removed).
    const enumerated = new Set([...members.values()].flat().map((m) => m.key));
    expect(GENERATOR_KEYS.filter((k) => !enumerated.has(k))).toEqual([]);
  });

  it("notices each kind of change a refusal must not make", async () => {
    // The oracle's own check: a fingerprint that missed these would pass any refusal.
    const w = await buildHostWorld("vtd");
    const ram = shadowRam(w);
    const changes: [string, () => unknown, string][] = [
      ["a RAM write", () => w.host.ram.writeU64(w.scratch, 1n), "RAM"],
      ["a frame allocation", () => w.host.ram.allocFrames(1), "frames free"],
      ["an IOTLB miss", () => w.plainDomain.translate(0x40000000n), "IOTLB misses"],
      ["a fault record", () => w.plainDomain.translate(0x7000000000n), "faults pending"],
      ["a PASID allocation", () => w.containers[1].pasid.alloc({ min: 1, max: 0xfffff }), "container 1 PASIDs"],
      ["a DMA mapping", () => w.containers[0].mapDma({ vaddr: w.spareVaddr, iova: 0x1000000n, size: PAGE, read: true }), "container 0 mappings"],
      ["a pin", () => w.containers[0].mapDma({ vaddr: w.spareVaddr + PAGE, iova: 0x2000000n, size: PAGE, read: true }), "process 0 locked"],
      ["a new device", () => w.host.addDevice({ bdf: "0000:7f:00.0" }), "devices"],
      ["a driver change", () => w.host.device("0000:05:00.1").bindDriver("vfio-pci"), "devices"],
    ];
    for (const [what, change, key] of changes) {
      const before = facadeState(w);
      change();
      const seen = [...changedKeys(before, facadeState(w)), ...(ram.same() ? [] : ["RAM"])];
      expect(seen, what).toContain(key);
      ram.resync();
    }
  });

  it("refuses hostile arguments with an IommuError, never a raw exception, a trap or a change of state", async () => {
    const tally = new Tally();
    for (let s = 0; s < SEEDS; s++) {
      const run = new FuzzRun({ seed: FIRST_SEED + s, calls: CALLS, rebuildEvery: 250, hangMs: 2000, moduleFunctions: MODULE_FUNCTIONS }, members);
      tally.merge(await run.run());
    }
    const enumerated = [...members.values()].flat();
    console.log(report(tally, enumerated.length));

    // One line per cause, so a failure names what to fix without scrolling back to the summary.
    const failures = FAILING.flatMap((c) => tally.causesOf(c).map((cause) => `${c} ×${cause.count}: ${describeExample(cause.example)}`));
    expect(failures).toEqual([]);
    // Everything enumerated was called, a few times at least (each run starts with SWEEPS rounds over every member).
    const few = Math.min(SWEEPS, Math.floor(CALLS / enumerated.length)) * SEEDS;
    const rarely = enumerated.filter((m) => (tally.callsPerMethod.get(m.key) ?? 0) < few).map((m) => m.key);
    expect(rarely).toEqual([]);
    expect(tally.callsPerMethod.size).toBeGreaterThanOrEqual(new Set(enumerated.map((m) => m.key)).size);
  }, TIMEOUT_MS);
});
