// The command line (bin/iommu-wasm.mjs) as a user runs it: a separate node
// process over the built bundle, RAM images written to a temp dir by the
// library itself, checked on stdout, --json, stderr and exit codes.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHost, PAGE_1G, PAGE_2M, PAGE_4K, type Host, type PageTable } from "../src/index.js";

const BIN = join(import.meta.dirname, "..", "bin", "iommu-wasm.mjs");
const MiB = 1024 * 1024;
const hex = (v: bigint | number): string => "0x" + v.toString(16);

let dir: string;

interface Run { status: number | null; stdout: string; stderr: string }

function cli(args: string[], input?: string): Run {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", input, timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A run that must succeed; its stdout. */
function ok(args: string[], input?: string): string {
  const r = cli(args, input);
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  return r.stdout;
}

/** A run that must fail as a user error: exit 1, one line on stderr, no stack trace. */
function userError(args: string[], input?: string): string {
  const r = cli(args, input);
  expect(r.status).toBe(1);
  expect(r.stdout).toBe("");
  expect(r.stderr.endsWith("\n")).toBe(true);
  expect(r.stderr.trimEnd().split("\n")).toHaveLength(1);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  return r.stderr.trimEnd();
}

function saveImage(host: Host, name: string, bytes = Number(host.ram.size)): string {
  const path = join(dir, name);
  writeFileSync(path, host.ram.read(0n, bytes));
  return path;
}

/** The walk of a fixture table, to compare the CLI against. */
const lastStep = (pt: PageTable, iova: bigint) => pt.walk(iova).steps.at(-1)!;

// ---- fixtures: built once, each a table in a RAM image written by the library

/** The demo's table: 3 × 4 KiB, 2 MiB, 1 GiB beyond RAM, a supervisor-only page, one in the upper canonical half. */
let x86: { path: string; pt: PageTable; buffer: bigint; hpa2m: bigint };
/** An x86-64 table with entries broken by hand: a reserved bit, a table outside RAM, a loop. */
let broken: { path: string; pt: PageTable };
/** Arm stage 1 (39-bit, one leaf with AF = 0), Arm stage 2 and VT-d second level (write-only leaves), x86-64 5-level. */
let others: { path: string; s1: PageTable; s2: PageTable; sl: PageTable; five: PageTable };
/** 1 GiB mapped with 4 KiB leaves, plus leaves that must not merge. */
let dense: { path: string; pt: PageTable };

beforeAll(async () => {
  if (!existsSync(join(import.meta.dirname, "..", "dist", "iommu-wasm.js"))) {
    throw new Error("dist/iommu-wasm.js is missing: run `node scripts/build.mjs` first (the CLI imports the built bundle)");
  }
  dir = mkdtempSync(join(tmpdir(), "iommu-wasm-cli-"));

  {
    const host = await createHost({ ramSize: 16 * MiB });
    const pt = host.createPageTable({ format: "x86-64", levels: 4 });
    const buffer = host.ram.allocFrames(512 * 3);
    const hpa2m = (buffer + PAGE_2M - 1n) & ~(PAGE_2M - 1n);
    pt.map(0x1000n, buffer, 3n * PAGE_4K, { write: true });
    pt.map(0x4020_0000n, hpa2m, PAGE_2M, { write: true });
    pt.map(0x8000_0000n, 0x1_0000_0000n, PAGE_1G);
    pt.map(0x4000_0000n - PAGE_4K, buffer + 3n * PAGE_4K, PAGE_4K, { user: false });
    pt.map(0xffff_8000_0000_0000n, buffer + 4n * PAGE_4K, PAGE_4K, { write: true, exec: true });
    x86 = { path: saveImage(host, "x86.bin"), pt, buffer, hpa2m };
  }
  {
    const host = await createHost({ ramSize: 4 * MiB });
    const pt = host.createPageTable({ format: "x86-64", levels: 4 });
    pt.map(0x1000n, 0x100000n, PAGE_4K, { write: true });
    pt.map(0x80_0000_0000n, 0x101000n, PAGE_4K);          // PML4E 1: gets PS, reserved at level 3
    pt.map(0x4000_0000n, 0x102000n, PAGE_4K);             // PDPTE 1: will point outside RAM
    pt.map(0xc000_0000n, 0x103000n, PAGE_4K);             // PDPTE 3: will point back at the root
    const pml4e = pt.walk(0x80_0000_0000n).steps[0];
    host.ram.writeU64(pml4e.entryAddress, pml4e.entry | 0x80n);                              // PS is reserved in a PML4E
    host.ram.writeU64(pt.walk(0x4000_0000n).steps[1].entryAddress, 0x7fff_f000n | 7n);       // a PD far past the 4 MiB
    host.ram.writeU64(pt.walk(0xc000_0000n).steps[1].entryAddress, pt.root | 7n);            // a PD that is the PML4
    broken = { path: saveImage(host, "broken.bin"), pt };
  }
  {
    const host = await createHost({ ramSize: 4 * MiB });
    const s1 = host.createPageTable({ format: "arm64", inputBits: 39 });
    s1.map(0x1000n, 0x200000n, 2n * PAGE_4K, { write: true });
    s1.map(0x4000_0000n, 0x200000n, PAGE_2M, { user: false });
    const leaf = lastStep(s1, 0x2000n);
    host.ram.writeU64(leaf.entryAddress, leaf.entry & ~(1n << 10n));   // AF = 0
    const s2 = host.createPageTable({ format: "arm64", stage: 2, inputBits: 40 });
    s2.map(0n, 0x300000n, PAGE_4K, { read: false, write: true });
    s2.map(0x1000n, 0x301000n, PAGE_4K, { write: true });
    const sl = host.createPageTable({ format: "vtd-sl", levels: 3 });
    sl.map(0x10000n, 0x100000n, 4n * PAGE_4K, { write: true });
    sl.map(0x14000n, 0x104000n, PAGE_4K, { read: false, write: true });
    const five = host.createPageTable({ format: "x86-64", levels: 5 });
    five.map(0x1_0000_0000_0000n, 0x180000n, PAGE_4K, { write: true });
    others = { path: saveImage(host, "others.bin"), s1, s2, sl, five };
  }
  {
    const host = await createHost({ ramSize: 4 * MiB });
    const pt = host.createPageTable({ format: "x86-64", levels: 4, pageSizes: [PAGE_4K] });
    pt.map(0n, 0x4000_0000n, PAGE_1G, { write: true });
    pt.map(0x8000_0000n, 0x9000_0000n, PAGE_4K);                 // then a gap in the HPAs:
    pt.map(0x8000_1000n, 0x9000_2000n, PAGE_4K);                 //   IOVAs run on, HPAs do not
    pt.map(0x8000_2000n, 0x9000_3000n, PAGE_4K, { write: true }); //   HPAs run on, permissions differ
    dense = { path: saveImage(host, "dense.bin"), pt };
  }
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("walk", () => {
  it("prints every entry read, level by level, then the HPA or the fault", () => {
    const out = ok(["walk", x86.path, "0x2abc", "0x40312345", "0x81234567", "0x5000", "--format", "x86-64", "--root", hex(x86.pt.root)]);
    const lines = out.split("\n");
    expect(lines[0]).toBe(`x86-64 4-level table at root ${hex(x86.pt.root)}, access: read`);
    for (const iova of [0x2abcn, 0x4031_2345n, 0x8123_4567n, 0x5000n]) {
      const at = lines.indexOf(`walk ${hex(iova)}:`);
      expect(at).toBeGreaterThan(0);
      const expected = x86.pt.walk(iova, "read");
      expected.steps.forEach((step, n) => {
        const name = ["PTE", "PDE", "PDPTE", "PML4E"][step.level];
        const index = Number((iova >> BigInt(12 + 9 * step.level)) & 511n);
        expect(lines[at + 1 + n]).toMatch(new RegExp(`^  L${step.level} ${name} +\\[ *${index}\\] @ +${hex(step.entryAddress)} = +${hex(step.entry)}$`));
      });
      expect(lines[at + 1 + expected.steps.length]).toMatch(/^  → /);
    }
    expect(out).toContain(`→ hpa ${hex(x86.buffer + 0x1abcn)} (4 KiB page, read/write/user)`);
    expect(out).toContain(`→ hpa ${hex(x86.hpa2m + 0x112345n)} (2 MiB page, read/write/user)`);
    expect(out).toContain("→ hpa 0x101234567 (1 GiB page, read/user), outside the image");
    expect(out).toContain("→ fault: not-present at level 0");
  });

  it("--json gives the same walk as the library, addresses as hex strings", () => {
    const json = JSON.parse(ok(["walk", x86.path, "16384", "0x40312345", "--format", "x86-64", "--root", hex(x86.pt.root), "--access", "write", "--json"]));
    expect(json.request).toEqual({ access: "write", privileged: false });
    expect(json.table).toMatchObject({ format: "x86-64", root: hex(x86.pt.root), description: "x86-64 4-level" });
    expect(json.image.size).toBe(hex(16 * MiB));
    const [fault, hit] = json.walks;
    expect(fault.iova).toBe("0x4000");
    expect(fault.fault).toEqual({ reason: "not-present", level: 0, stage: 1 });
    const expected = x86.pt.walk(0x4031_2345n, "write");
    expect(hit).toEqual({
      iova: "0x40312345",
      steps: expected.steps.map((s) => ({
        level: s.level, name: ["PTE", "PDE", "PDPTE", "PML4E"][s.level],
        index: Number((0x4031_2345n >> BigInt(12 + 9 * s.level)) & 511n), entryAddress: hex(s.entryAddress), entry: hex(s.entry),
      })),
      hpa: hex(expected.hpa!), pageSize: "0x200000", perms: expected.perms, inImage: true,
    });
  });

  it("asks as a user unless --privileged: a supervisor-only page faults, then translates", () => {
    const args = ["walk", x86.path, "0x3ffff000", "--format", "x86-64", "--root", hex(x86.pt.root)];
    expect(ok(args)).toContain("→ fault: permission at level 0");
    const privileged = ok([...args, "--privileged"]);
    expect(privileged.split("\n")[0]).toMatch(/access: privileged read$/);
    expect(privileged).toContain(`→ hpa ${hex(x86.buffer + 3n * PAGE_4K)} (4 KiB page, read)`);
  });

  it("walks the other formats with their own level names", () => {
    const five = ok(["walk", others.path, "0x1000000000000", "--format", "x86-64", "--levels", "5", "--root", hex(others.five.root)]);
    expect(five).toMatch(/^  L4 PML5E /m);
    expect(five).toContain("→ hpa 0x180000 (4 KiB page, read/write/user)");

    const s1 = ok(["walk", others.path, "0x1000", "0x2000", "--format", "arm64", "--input-bits", "39", "--root", hex(others.s1.root)]);
    expect(s1.split("\n")[0]).toBe(`arm64 stage 1, 39-bit input (3 levels) table at root ${hex(others.s1.root)}, access: read`);
    expect(s1).toMatch(/^  L2 Arm L1 /m);
    expect(s1).toMatch(/^  L0 Arm L3 /m);
    expect(s1).toContain("→ hpa 0x200000 (4 KiB page, read/write/user)");
    expect(s1).toContain("→ fault: access-flag at level 0");
    // With the hardware managing AF (TCR.HA) the same entry translates.
    expect(ok(["walk", others.path, "0x2000", "--format", "arm64", "--input-bits", "39", "--root", hex(others.s1.root), "--ha"]))
      .toContain("→ hpa 0x201000 (4 KiB page, read/write/user)");

    // Stage 2 has no privilege levels: no "user" in the permissions.
    const s2 = ["walk", others.path, "0", "--format", "arm64", "--stage", "2", "--input-bits", "40", "--root", hex(others.s2.root)];
    expect(ok(s2)).toContain("→ fault: permission at level 0");
    expect(ok([...s2, "--access", "write"])).toContain("→ hpa 0x300000 (4 KiB page, write)");
    expect(ok(["walk", others.path, "0x10000", "--format", "vtd-sl", "--levels", "3", "--root", hex(others.sl.root)]))
      .toMatch(/^  L2 SL-PDPE .*\n.*SL-PDE .*\n.*SL-PTE .*\n  → hpa 0x100000 \(4 KiB page, read\/write\)$/m);
  });
});

describe("dump", () => {
  const x86Args = () => ["dump", x86.path, "--format", "x86-64", "--root", hex(x86.pt.root)];

  it("prints every mapping as merged ranges, both canonical halves", () => {
    const lines = ok(x86Args()).trimEnd().split("\n");
    expect(lines[0]).toBe(`x86-64 4-level table at root ${hex(x86.pt.root)}, image ${x86.path} (16 MiB)`);
    const b = x86.buffer;
    const rows = lines.slice(3, 8).map((l) => l.split(/\s{2,}/));
    expect(lines[2].split(/\s{2,}/)).toEqual(["iova", "hpa", "size", "perms", "pages"]);
    expect(rows).toEqual([
      ["0x1000-0x3fff", "→", `${hex(b)}-${hex(b + 0x2fffn)}`, "12 KiB", "rw-u", "4K×3"],
      ["0x3ffff000-0x3fffffff", "→", `${hex(b + 0x3000n)}-${hex(b + 0x3fffn)}`, "4 KiB", "r---", "4K×1"],
      ["0x40200000-0x403fffff", "→", `${hex(x86.hpa2m)}-${hex(x86.hpa2m + PAGE_2M - 1n)}`, "2 MiB", "rw-u", "2M×1"],
      ["0x80000000-0xbfffffff", "→", "0x100000000-0x13fffffff", "1 GiB", "r--u", "1G×1", "outside the image"],
      ["0xffff800000000000-0xffff800000000fff", "→", `${hex(b + 0x4000n)}-${hex(b + 0x4fffn)}`, "4 KiB", "rwxu", "4K×1"],
    ]);
    expect(lines.at(-1)).toBe("5 ranges from 7 leaves, 1 GiB 2 MiB 20 KiB mapped");
  });

  it("--json lists ranges whose ends translate as the library says", () => {
    const json = JSON.parse(ok([...x86Args(), "--json"]));
    expect(json.mappings).toHaveLength(5);
    expect(json.faults).toEqual([]);
    expect(json.leaves).toBe(7);
    for (const m of json.mappings) {
      expect(x86.pt.iovaToPhys(BigInt(m.iova))).toBe(BigInt(m.hpa));
      expect(x86.pt.iovaToPhys(BigInt(m.iovaEnd))).toBe(BigInt(m.hpaEnd));
      expect(BigInt(m.iovaEnd) - BigInt(m.iova) + 1n).toBe(BigInt(m.size));
      // Just past each range, nothing continues it: unmapped, or not contiguous in HPA.
      const next = BigInt(m.iovaEnd) + 1n;
      if (next < 1n << 64n) expect(x86.pt.iovaToPhys(next)).not.toBe(BigInt(m.hpaEnd) + 1n);
    }
    expect(json.mappings[0]).toMatchObject({ perms: { read: true, write: true, exec: false, user: true }, pages: [{ size: "0x1000", count: 3 }], inImage: true });
    expect(json.mappings[3].inImage).toBe(false);
  });

  it("merges only where IOVAs and HPAs both run on with equal permissions; 1 GiB of 4 KiB leaves is one range", () => {
    const started = performance.now();
    const json = JSON.parse(ok(["dump", dense.path, "--format", "x86-64", "--root", hex(dense.pt.root), "--json"]));
    const seconds = (performance.now() - started) / 1000;
    expect(json.mappings.map((m: { iova: string; size: string; pages: unknown }) => [m.iova, m.size, m.pages])).toEqual([
      ["0x0", "0x40000000", [{ size: "0x1000", count: 262144 }]],
      ["0x80000000", "0x1000", [{ size: "0x1000", count: 1 }]],
      ["0x80001000", "0x1000", [{ size: "0x1000", count: 1 }]],
      ["0x80002000", "0x1000", [{ size: "0x1000", count: 1 }]],
    ]);
    expect(json.leaves).toBe(262144 + 3);
    // One walk per leaf or empty entry in a table reached, not per 4 KiB of the 2^48-byte input space.
    expect(json.walks).toBeLessThan(262144 + 3 + 4 * 512 * 2);
    expect(seconds).toBeLessThan(20);
  });

  it("lists faulting entries after the mappings and goes past them", () => {
    const { pt, path } = broken;
    const out = ok(["dump", path, "--format", "x86-64", "--root", hex(pt.root)]);
    expect(out).toMatch(/^0x1000-0x1fff +→ +0x100000-0x100fff +4 KiB +rw-u +4K×1$/m);
    expect(out).toContain("1 range from 1 leaf, 4 KiB mapped");
    const faults = out.slice(out.indexOf("faults:\n") + 8).trimEnd().split("\n").map((l) => l.split(/\s{2,}/));
    const pml4e = pt.walk(0x80_0000_0000n).steps[0];
    const outside = pt.walk(0x4000_0000n).steps[1];
    const loop = pt.walk(0xc000_0000n).steps[1];
    expect(faults).toEqual([
      ["0x40000000-0x7fffffff", "table-outside-ram at level 1", `entry ${hex(outside.entry)} @ ${hex(outside.entryAddress)}`],
      ["0xc0000000-0xffffffff", "table-cycle at level 2", `entry ${hex(loop.entry)} @ ${hex(loop.entryAddress)}`],
      ["0x8000000000-0xffffffffff", "reserved-bit at level 3", `entry ${hex(pml4e.entry)} @ ${hex(pml4e.entryAddress)}`],
    ]);
    const json = JSON.parse(ok(["dump", path, "--format", "x86-64", "--root", hex(pt.root), "--json"]));
    expect(json.faults.map((f: { reason: string }) => f.reason)).toEqual(["table-outside-ram", "table-cycle", "reserved-bit"]);
  });

  it("shows Arm's access flag as a fault unless --ha, and stage-2 permissions without a user bit", () => {
    const s1 = ["dump", others.path, "--format", "arm64", "--input-bits", "39", "--root", hex(others.s1.root)];
    const withoutHa = ok(s1);
    expect(withoutHa).toMatch(/^0x1000-0x1fff +→ +0x200000-0x200fff +4 KiB +rw-u +4K×1$/m);
    expect(withoutHa).toMatch(/^0x40000000-0x401fffff +→ +0x200000-0x3fffff +2 MiB +r--- +2M×1$/m);
    expect(withoutHa).toMatch(/^0x2000-0x2fff +access-flag at level 0 +entry /m);
    expect(ok([...s1, "--ha"])).toMatch(/^0x1000-0x2fff +→ +0x200000-0x201fff +8 KiB +rw-u +4K×2$/m);

    const s2 = ok(["dump", others.path, "--format", "arm64", "--stage", "2", "--input-bits", "40", "--root", hex(others.s2.root)]);
    expect(s2).toMatch(/^0x0-0xfff +→ +0x300000-0x300fff +4 KiB +-w- +4K×1$/m);
    expect(s2).toMatch(/^0x1000-0x1fff +→ +0x301000-0x301fff +4 KiB +rw- +4K×1$/m);
    const sl = ok(["dump", others.path, "--format", "vtd-sl", "--levels", "3", "--root", hex(others.sl.root)]);
    expect(sl).toMatch(/^0x10000-0x13fff +→ +0x100000-0x103fff +16 KiB +rw- +4K×4$/m);
    expect(sl).toMatch(/^0x14000-0x14fff +→ +0x104000-0x104fff +4 KiB +-w- +4K×1$/m);
  });

  it("stops at --max-walks and says where", () => {
    const out = ok(["dump", dense.path, "--format", "x86-64", "--root", hex(dense.pt.root), "--max-walks", "100"]);
    expect(out).toContain("1 range from 100 leaves, 400 KiB mapped");
    expect(out.trimEnd().split("\n").at(-1)).toBe("stopped after 100 walks at iova 0x64000 (raise --max-walks to go on)");
    const json = JSON.parse(ok(["dump", dense.path, "--format", "x86-64", "--root", hex(dense.pt.root), "--max-walks", "100", "--json"]));
    expect(json.stoppedAt).toBe("0x64000");
  });
});

describe("reserved", () => {
  const topology = {
    arch: "vtd",
    devices: [
      { bdf: "0000:00:02.0", reserved: [{ start: "0x7b000000", size: "0x4800000", type: "direct" }] },
      { bdf: "0000:01:00.0", group: 5 },
      { bdf: "0000:01:00.1", group: 5, reserved: [{ start: 0xe0000, end: "0xfffff", type: "direct-relaxable" }] },
    ],
    platformReserved: [{ start: "0xfed00000", end: "0xfed003ff", type: "reserved" }],
  };

  it("prints each group's reserved_regions and the usable IOVA ranges", () => {
    const path = join(dir, "topology.json");
    writeFileSync(path, JSON.stringify(topology));
    expect(ok(["reserved", path])).toBe([
      "vtd, aperture 0x0-0xffffffffffff",
      "",
      "/sys/kernel/iommu_groups/0/reserved_regions (0000:00:02.0):",
      "0x000000007b000000 0x000000007f7fffff direct",
      "0x00000000fed00000 0x00000000fed003ff reserved",
      "0x00000000fee00000 0x00000000feefffff msi",
      "",
      "/sys/kernel/iommu_groups/5/reserved_regions (0000:01:00.0, 0000:01:00.1):",
      "0x00000000000e0000 0x00000000000fffff direct-relaxable",
      "0x00000000fed00000 0x00000000fed003ff reserved",
      "0x00000000fee00000 0x00000000feefffff msi",
      "",
      "usable IOVA ranges (all groups in one container):",
      "0x0000000000000000 0x000000007affffff  1 GiB 944 MiB",
      "0x000000007f800000 0x00000000fecfffff  1 GiB 1013 MiB",
      "0x00000000fed00400 0x00000000fedfffff  1023 KiB",
      "0x00000000fef00000 0x0000ffffffffffff  255 TiB 1020 GiB 17 MiB",
      "",
    ].join("\n"));
  });

  it("--json, from stdin, matches the library's own topology", async () => {
    const json = JSON.parse(ok(["reserved", "-", "--json"], JSON.stringify({ ...topology, arch: "smmuv3", addressWidth: 40 })));
    const host = await createHost({ ramSize: 4096, arch: "smmuv3", addressWidth: 40, platformReserved: [{ start: 0xfed00000n, end: 0xfed003ffn, type: "reserved" }] });
    host.addDevice({ bdf: "0000:00:02.0", reserved: [{ start: 0x7b000000n, size: 0x4800000n, type: "direct" }] });
    host.addDevice({ bdf: "0000:01:00.0", group: 5 });
    host.addDevice({ bdf: "0000:01:00.1", group: 5, reserved: [{ start: 0xe0000n, end: 0xfffffn, type: "direct-relaxable" }] });
    const asHex = (r: { start: bigint; end: bigint }) => ({ start: hex(r.start), end: hex(r.end) });
    expect(json.arch).toBe("smmuv3");
    expect(json.aperture).toEqual({ start: "0x0", end: "0xffffffffff" });
    expect(json.groups.map((g: { group: number }) => g.group)).toEqual([0, 5]);
    expect(json.groups[1].devices).toEqual(["0000:01:00.0", "0000:01:00.1"]);
    for (const g of json.groups) {
      expect(g.reservedRegionsText).toBe(host.reservedRegionsText(g.group));
      expect(g.reservedRegions).toEqual(host.reservedRegions(g.group).map((r) => ({ ...asHex(r), type: r.type })));
    }
    expect(json.groups[0].reservedRegions).toContainEqual({ start: "0x8000000", end: "0x80fffff", type: "sw-msi" });
    expect(json.usableRanges).toEqual(host.usableRanges().map(asHex));
  });

  it("refuses bad topologies in one line", () => {
    expect(userError(["reserved", "-"], "{,}")).toMatch(/^reserved: topology on stdin is not valid JSON: /);
    expect(userError(["reserved", "-"], JSON.stringify({ devcies: [] })))
      .toBe('reserved: topology: unknown key "devcies" (known: arch, addressWidth, devices, platformReserved)');
    expect(userError(["reserved", "-"], JSON.stringify({ arch: "amd-vi" }))).toBe('reserved: unknown IOMMU architecture "amd-vi" (vtd or smmuv3)');
    expect(userError(["reserved", "-"], JSON.stringify({ devices: [{ bdf: "01:00.0" }] }))).toMatch(/^reserved: device address "01:00.0" is not DDDD:BB:DD.F/);
    expect(userError(["reserved", "-"], JSON.stringify({ devices: [{ bdf: "0000:01:00.0", reserved: [{ start: "0xfee0_0000", size: 1, type: "msi" }] }] })))
      .toBe('reserved: device 0 (0000:01:00.0) reserved region 0 start "0xfee0_0000" is not a number (0x... or decimal)');
    expect(userError(["reserved", join(dir, "missing.json")])).toBe(`reserved: cannot read topology ${join(dir, "missing.json")}: no such file`);
  });
});

describe("errors and usage", () => {
  it("says what is wrong with the image, the root and the format", () => {
    const table = ["--format", "x86-64", "--root", "0"];
    expect(userError(["walk", join(dir, "nope.bin"), "0", ...table])).toBe(`walk: cannot read image ${join(dir, "nope.bin")}: no such file`);
    expect(userError(["dump", dir, ...table])).toBe(`dump: cannot read image ${dir}: not a regular file`);
    const empty = join(dir, "empty.bin");
    writeFileSync(empty, new Uint8Array(0));
    expect(userError(["walk", empty, "0", ...table])).toBe(`walk: image ${empty} is empty`);
    expect(userError(["walk", x86.path, "0", "--format", "x86-64", "--root", "0x1000000"])).toBe("walk: root 0x1000000 is outside the 16 MiB image");
    expect(userError(["dump", x86.path, "--format", "x86-64", "--root", "0x1234"])).toBe("dump: root 0x1234 is not 4 KiB aligned");
    expect(userError(["walk", x86.path, "0", "--format", "riscv-sv48", "--root", "0"])).toBe('walk: unknown format "riscv-sv48" (x86-64, vtd-sl, arm64)');
    expect(userError(["walk", x86.path, "0", "--root", "0"])).toBe("walk: --format is required (x86-64, vtd-sl, arm64)");
    expect(userError(["dump", x86.path, "--format", "x86-64"])).toBe("dump: --root is required (the HPA of the top-level table)");
    // The library's own checks come through as its sentence, without the errno.
    expect(userError(["walk", x86.path, "0", ...table, "--levels", "3"])).toBe("walk: x86-64 has 4 or 5 levels, not 3");
  });

  it("takes an image that is not a whole number of pages, and checks the root against the image, not the rounded RAM", async () => {
    const host = await createHost({ ramSize: 64 * 1024 });
    const pt = host.createPageTable({ format: "x86-64" });
    pt.map(0x1000n, 0x8000n, PAGE_4K);
    // The four tables of that walk are the first four frames; the image ends 100 bytes into the fifth.
    expect(pt.walk(0x1000n).steps.every((s) => s.entryAddress < 0x4000n)).toBe(true);
    const path = saveImage(host, "odd.bin", 0x4000 + 100);
    expect(ok(["walk", path, "0x1234", "--format", "x86-64", "--root", hex(pt.root)])).toContain("→ hpa 0x8234 (4 KiB page, read/user)");
    expect(userError(["walk", path, "0x1234", "--format", "x86-64", "--root", "0x4000"]))
      .toBe("walk: root 0x4000 is outside the 16 KiB 100 bytes image");
  });

  it("refuses bad numbers, options and commands", () => {
    const base = ["walk", x86.path, "--format", "x86-64", "--root", "0"];
    expect(userError([...base, "12z"])).toBe('walk: iova "12z" is not a number (0x... or decimal)');
    expect(userError([...base, "0x10000000000000000"])).toBe("walk: iova 0x10000000000000000 does not fit in 64 bits");
    expect(userError([...base])).toBe("walk: no IOVA given (see --help)");
    expect(userError([...base, "0", "--access", "fetch"])).toBe('walk: access "fetch" is not one of read, write, exec');
    expect(userError([...base, "0", "--verbose"])).toBe("walk: unknown option '--verbose' (see --help)");
    expect(userError(["dump", x86.path, "extra", "--format", "x86-64", "--root", "0"])).toBe('dump: unexpected argument "extra" (see --help)');
    expect(userError(["translate"])).toBe('iommu-wasm: unknown command "translate" (walk, dump, reserved; see --help)');
    const bare = cli([]);
    expect(bare.status).toBe(1);
    expect(bare.stderr).toMatch(/^usage: iommu-wasm <command>/);
  });

  it("prints usage with --help, exit 0, for the tool and each command", () => {
    expect(ok(["--help"])).toMatch(/^usage: iommu-wasm <command> \[options\]\n\ncommands:\n  walk .*\n  dump .*\n  reserved /);
    expect(ok(["walk", "--help"])).toMatch(/^usage: iommu-wasm walk IMAGE IOVA\.\.\. --format F --root HPA/);
    expect(ok(["dump", "-h"])).toContain("--max-walks N");
    expect(ok(["help", "reserved"])).toContain('"platformReserved"');
  });

  it("runs as an executable through its #! line", () => {
    const r = spawnSync(BIN, ["--version"], { encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^iommu-wasm \d+\.\d+\.\d+\n$/);
  });
});
