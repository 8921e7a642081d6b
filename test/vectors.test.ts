// Page-walk vectors whose answers come from an independent CPU MMU
// (the project's own copy in test/vectors, plus $IOMMU_VECTORS_DIR). Every file is its own test;
// every query must match, through a probe walk (no cache, no A/D) and through
// the IOTLB path (translate, with A/D updates), twice so the second pass hits.
import { describe, expect, it } from "vitest";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { createHost, type Domain, type Host } from "../src/index.js";

interface VectorFile {
  format: string;
  control: Record<string, string>;
  machine: Record<string, unknown>;
  ram_size: string;
  root: string;
  pages: { pa: string; data: string }[];
  queries: { va: string; access: "read" | "write"; priv: "supervisor" | "user"; expect: { pa?: string; fault?: boolean }; note?: string; tags?: string[] }[];
}

const dirs = [resolve(__dirname, "vectors")];
if (process.env.IOMMU_VECTORS_DIR) dirs.push(resolve(process.env.IOMMU_VECTORS_DIR));
const files = dirs.flatMap((dir) => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".json")).sort().map((f) => join(dir, f)) : []));

const bit = (v: bigint, n: number): boolean => ((v >> BigInt(n)) & 1n) === 1n;
const field = (v: bigint, lo: number, width: number): number => Number((v >> BigInt(lo)) & ((1n << BigInt(width)) - 1n));

/** Builds the domain the file's control registers describe; anything the engine cannot model throws. */
function domainFor(host: Host, doc: VectorFile): Domain {
  const c = Object.fromEntries(Object.entries(doc.control).map(([k, v]) => [k, BigInt(v)]));
  const root = BigInt(doc.root);
  if (doc.format === "x86-64-4level" || doc.format === "x86-64-5level") {
    const levels = doc.format === "x86-64-5level" ? 5 : 4;
    if (!bit(c.cr0, 31) || !bit(c.cr4, 5) || !bit(c.efer, 10)) throw new Error("x86 vectors must have paging, PAE and LMA on");
    if (bit(c.cr4, 12) !== (levels === 5)) throw new Error(`CR4.LA57 disagrees with ${doc.format}`);
    for (const [name, n] of [["SMEP", 20], ["SMAP", 21], ["PKE", 22], ["PCIDE", 17]] as const) {
      if (bit(c.cr4, n)) throw new Error(`CR4.${name} is set: not modelled`);
    }
    return host.createDomain({
      format: "x86-64", levels, root,
      physAddrWidth: Number(doc.machine.maxphyaddr),
      nx: bit(c.efer, 11),
      wpe: bit(c.cr0, 16),
      sre: true,
      accessedDirty: true,
    });
  }
  if (doc.format === "arm64-s1-4k") {
    const tcr = c.tcr_el1, sctlr = c.sctlr_el1;
    if (!bit(sctlr, 0)) throw new Error("SCTLR_EL1.M is off: stage 1 disabled");
    if (bit(sctlr, 19)) throw new Error("SCTLR_EL1.WXN is set: not modelled");
    if (c.pstate_pan !== 0n) throw new Error("PAN is set: not modelled");
    if (field(tcr, 14, 2) !== 0) throw new Error("TG0 is not the 4 KiB granule");
    if (!bit(tcr, 23)) throw new Error("EPD1 is clear: the TTBR1 region is not modelled");
    if (bit(tcr, 41)) throw new Error("HPD0 is set: not modelled");
    if (bit(tcr, 37)) throw new Error("TBI0 is set: not modelled");
    const ipsBits = [32, 36, 40, 42, 44, 48][field(tcr, 32, 3)];
    if (ipsBits === undefined) throw new Error("IPS beyond 48 bits");
    if ((c.ttbr0_el1 & 0x0000fffffffff000n) !== root) throw new Error("root differs from TTBR0_EL1");
    return host.createDomain({
      format: "arm64", root,
      inputBits: 64 - field(tcr, 0, 6),
      physAddrWidth: ipsBits,
      accessedDirty: bit(tcr, 39),
      sre: true,
      wpe: true,
    });
  }
  throw new Error(`vector format ${doc.format} is not supported by the engine`);
}

describe("page-walk vectors", () => {
  it("finds vector files", () => {
    expect(files.length).toBeGreaterThan(0);
  });

  for (const path of files) {
    const name = path.split("/").pop()!;
    it(name, async () => {
      const doc = JSON.parse(readFileSync(path, "utf8")) as VectorFile;
      const host = await createHost({ ramSize: BigInt(doc.ram_size) });
      for (const page of doc.pages) host.ram.write(BigInt(page.pa), Buffer.from(page.data, "base64"));
      const domain = domainFor(host, doc);
      const failures: string[] = [];
      for (let pass = 0; pass < 2; pass++) {
        for (const q of doc.queries) {
          const access = { [q.access]: true, privileged: q.priv === "supervisor" } as const;
          const expected = q.expect.fault ? "fault" : BigInt(q.expect.pa!).toString(16);
          const probe = domain.walk(BigInt(q.va), access);
          const t = domain.translate(BigInt(q.va), access);
          const got = [probe.fault ? "fault" : probe.hpa!.toString(16), t.fault ? "fault" : t.hpa.toString(16)];
          if (got[0] !== expected || got[1] !== expected) {
            failures.push(`${q.va} ${q.access}/${q.priv}: expected ${expected}, probe ${got[0]}${probe.fault ? ` (${probe.fault.reason} L${probe.fault.level})` : ""}, translate ${got[1]} [${(q.tags ?? []).join(",")}${q.note ? "; " + q.note : ""}]`);
          }
        }
      }
      expect(failures.slice(0, 20), `${failures.length} of ${doc.queries.length * 2} queries differ`).toEqual([]);
      const stats = host.iotlb.stats();
      expect(stats.hits).toBeGreaterThan(0);
    });
  }
});
