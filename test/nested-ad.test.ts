// Hardware-managed bits of a guest's stage-1 table in nested walks: x86-64
// A/D (and VT-d's EA under EAFE), Arm's AF (TCR.HA) and dirty state through
// DBM (TCR.HD). Each update is a guest-memory write, so it goes through
// stage 2 as a write: a table page stage 2 maps read-only faults in stage 2
// instead of being written, and stage 2's own A/D marks the page written.
import { describe, expect, it } from "vitest";
import { PAGE_4K } from "../src/index.js";
import { errno } from "./support/outcome.js";
import { armStage1, guest, ok, x86Stage1, type Guest, P, RW, US, A, D, EA, AF, AP_EL0, AP_RO, DBM } from "./support/guest.js";

const GVA = 0x40000000n;
/** The stage-1 entries a walk of GVA reads (root, PDPT, PD, PT), as GPAs. */
const X86_PATH = [0x1000n, 0x2008n, 0x3000n, 0x4000n];
/** VT-d second-level D and Arm stage 2's software dirty bit. */
const VTDSL_D = 1n << 9n, S2_DIRTY = 1n << 55n;

/** Stage 2 remaps one guest page (same frame) with new rights and invalidates. */
function s2Remap(g: Guest, gpa: bigint, write: boolean): void {
  const hpa = g.s2.pageTable.iovaToPhys(gpa)!;
  g.s2.pageTable.unmap(gpa, PAGE_4K);
  g.s2.pageTable.map(gpa, hpa, PAGE_4K, { read: true, write });
  g.s2.invalidate();
}

/** The stage-2 leaf that maps a GPA. */
const s2Leaf = (g: Guest, gpa: bigint) => g.s2.walk(gpa).steps.at(-1)!.entry;

describe("x86-64 stage 1 over VT-d second level: A/D written back through stage 2", () => {
  it("a read sets A on every entry used, a write also D on the leaf; EA stays clear without EAFE", async () => {
    const g = await guest("vtd-sl", [PAGE_4K]);
    const d = g.h.createDomain({ stage2: g.s2, format: "x86-64", root: x86Stage1(g) });
    ok(d.translate(GVA + 0x10n, "read"));
    for (const gpa of X86_PATH) expect(g.get(gpa) & (A | EA), `entry at ${gpa.toString(16)}`).toBe(A);
    expect(g.get(0x4000n) & D).toBe(0n);
    ok(d.translate(GVA + 0x10n, "write"));
    expect(g.get(0x4000n) & (A | D)).toBe(A | D);
    // Only the entries on the path: the 2 MiB leaf beside them is untouched.
    expect(g.get(0x3008n) & (A | D)).toBe(0n);
  });

  it("with EAFE, EA is set along with A, and on an entry whose A the CPU already set", async () => {
    const g = await guest("vtd-sl", [PAGE_4K]);
    const root = x86Stage1(g);
    g.put(0x4000n, 0x200000n | P | RW | US | A);
    const d = g.h.createDomain({ stage2: g.s2, format: "x86-64", root, eafe: true });
    ok(d.translate(GVA, "read"));
    for (const gpa of X86_PATH) expect(g.get(gpa) & (A | EA), `entry at ${gpa.toString(16)}`).toBe(A | EA);
  });

  it("without EAFE an entry with A already set is not written, so a read-only table page is fine", async () => {
    const g = await guest("vtd-sl", [PAGE_4K]);
    const d = g.h.createDomain({ stage2: g.s2, format: "x86-64", root: x86Stage1(g) });
    ok(d.translate(GVA, "write"));
    const before = X86_PATH.map(g.get);
    // Every table page read-only in stage 2: a warm walk only reads.
    for (const gpa of X86_PATH) s2Remap(g, gpa & ~0xfffn, false);
    d.invalidate();
    ok(d.translate(GVA, "write"));
    expect(X86_PATH.map(g.get)).toEqual(before);
    // EAFE on the same tables: EA is missing everywhere, so the first write-back faults in stage 2.
    const e = g.h.createDomain({ stage2: g.s2, format: "x86-64", root: 0x1000n, eafe: true });
    expect(e.translate(GVA).fault).toMatchObject({ reason: "permission", stage: 2 });
    expect(X86_PATH.map(g.get)).toEqual(before);
  });

  it("a table page stage 2 maps read-only: setting A faults in stage 2 and the guest entry is unchanged", async () => {
    const g = await guest("vtd-sl", [PAGE_4K]);
    const d = g.h.createDomain({ stage2: g.s2, format: "x86-64", root: x86Stage1(g) });
    s2Remap(g, 0x3000n, false);
    const r = d.translate(GVA);
    expect(r.fault).toMatchObject({ reason: "permission", stage: 2 });
    expect(g.get(0x3000n) & A).toBe(0n);
    // The entries above it were written before the walk reached it.
    expect(g.get(0x1000n) & A).toBe(A);
    // DMA reports it the same way and moves nothing.
    const dma = d.dma.read(GVA, 8);
    expect(dma.bytes).toBe(0);
    expect(dma.fault).toMatchObject({ reason: "permission", stage: 2 });
  });

  it("a write needing D on a leaf in a read-only table page faults in stage 2 after reads succeeded", async () => {
    const g = await guest("vtd-sl", [PAGE_4K]);
    const d = g.h.createDomain({ stage2: g.s2, format: "x86-64", root: x86Stage1(g) });
    ok(d.translate(GVA, "read"));
    s2Remap(g, 0x4000n, false);
    ok(d.translate(GVA, "read"));
    expect(d.translate(GVA, "write").fault).toMatchObject({ reason: "permission", stage: 2 });
    expect(g.get(0x4000n) & D).toBe(0n);
  });

  it("stage 2's dirty tracking sees the table page the walk wrote, and the data page the device wrote", async () => {
    const g = await guest("vtd-sl", [PAGE_4K], true);
    const d = g.h.createDomain({ stage2: g.s2, format: "x86-64", root: x86Stage1(g) });
    ok(d.translate(GVA, "read"));
    expect(s2Leaf(g, 0x4000n) & VTDSL_D).toBe(VTDSL_D);
    expect(s2Leaf(g, 0x200000n) & VTDSL_D).toBe(0n);
    d.dma.write(GVA, new Uint8Array([1, 2, 3]));
    expect(s2Leaf(g, 0x200000n) & VTDSL_D).toBe(VTDSL_D);
  });

  it("IOTLB: a write after a read walks again to set D, then hits", async () => {
    const g = await guest("vtd-sl", [PAGE_4K]);
    const d = g.h.createDomain({ stage2: g.s2, format: "x86-64", root: x86Stage1(g) });
    ok(d.translate(GVA, "read"));
    const s = g.h.iotlb.stats();
    ok(d.translate(GVA + 8n, "write"));
    expect(g.get(0x4000n) & D).toBe(D);
    ok(d.translate(GVA + 16n, "write"));
    const t = g.h.iotlb.stats();
    expect([t.walks - s.walks, t.hits - s.hits]).toEqual([1, 1]);
  });
});

describe("Arm stage 1 over Arm stage 2: TCR.HA and TCR.HD", () => {
  it("AF = 0: an access-flag fault without HA; with HA the walk sets AF through stage 2", async () => {
    const g = await guest("arm64", [PAGE_4K]);
    const root = armStage1(g, AP_EL0);
    const plain = g.h.createDomain({ stage2: g.s2, format: "arm64", inputBits: 48, root });
    expect(plain.translate(GVA).fault).toMatchObject({ reason: "access-flag", stage: 1 });
    expect(g.get(0x4000n) & AF).toBe(0n);
    const ha = g.h.createDomain({ stage2: g.s2, format: "arm64", inputBits: 48, root, accessedDirty: true });
    expect(ok(ha.translate(GVA + 0x10n)).hpa).toBe(g.base + 0x200010n);
    expect(g.get(0x4000n) & AF).toBe(AF);
    // Table descriptors have no AF: bit 10 there stays as the guest wrote it.
    expect(g.get(0x3000n) & AF).toBe(0n);
  });

  it("HA with the L3 table page read-only in stage 2: the AF update faults in stage 2", async () => {
    const g = await guest("arm64", [PAGE_4K]);
    const root = armStage1(g, AP_EL0);
    s2Remap(g, 0x4000n, false);
    const ha = g.h.createDomain({ stage2: g.s2, format: "arm64", inputBits: 48, root, accessedDirty: true });
    expect(ha.translate(GVA).fault).toMatchObject({ reason: "permission", stage: 2 });
    expect(g.get(0x4000n) & AF).toBe(0n);
  });

  it("HD: a writable-clean leaf (DBM, AP[2]) is written and becomes writable-dirty; without HD it is read-only", async () => {
    const g = await guest("arm64", [PAGE_4K]);
    const root = armStage1(g, AF | AP_EL0 | AP_RO | DBM);
    const ha = g.h.createDomain({ stage2: g.s2, format: "arm64", inputBits: 48, root, accessedDirty: true });
    expect(ha.translate(GVA, "write").fault).toMatchObject({ reason: "permission", stage: 1 });
    const hd = g.h.createDomain({ stage2: g.s2, format: "arm64", inputBits: 48, root, accessedDirty: true, hd: true });
    // A read leaves it clean; the IOTLB entry it fills must not let a write through without the update.
    expect(ok(hd.translate(GVA, "read")).perms.write).toBe(true);
    expect(g.get(0x4000n) & AP_RO).toBe(AP_RO);
    hd.dma.write(GVA, new Uint8Array([7]));
    expect(g.get(0x4000n) & (AP_RO | DBM)).toBe(DBM);
    expect(g.h.ram.read(g.base + 0x200000n, 1)[0]).toBe(7);
  });

  it("HD without DBM: AP[2] still means read-only", async () => {
    const g = await guest("arm64", [PAGE_4K]);
    const root = armStage1(g, AF | AP_EL0 | AP_RO);
    const hd = g.h.createDomain({ stage2: g.s2, format: "arm64", inputBits: 48, root, accessedDirty: true, hd: true });
    expect(hd.translate(GVA, "write").fault).toMatchObject({ reason: "permission", stage: 1 });
  });

  it("stage-2 dirty tracking under a stage 1 without A/D: a write that would hit a read's entry still marks stage 2", async () => {
    const g = await guest("arm64", [PAGE_4K], true);
    const d = g.h.createDomain({ stage2: g.s2, format: "arm64", inputBits: 48, root: armStage1(g, AF | AP_EL0) });
    ok(d.translate(GVA, "read"));
    expect(s2Leaf(g, 0x200000n) & S2_DIRTY).toBe(0n);
    ok(d.translate(GVA, "write"));
    expect(s2Leaf(g, 0x200000n) & S2_DIRTY).toBe(S2_DIRTY);
  });
});

describe("A/D switches: arguments", () => {
  it("EAFE is x86-64's and needs A/D; HD is Arm stage 1's and needs HA; a refused domain leaves no context behind", async () => {
    const g = await guest("arm64", [PAGE_4K]);
    const free = g.h.ram.framesFree;
    expect(errno(() => g.h.createDomain({ stage2: g.s2, format: "arm64", root: 0x1000n, eafe: true }))).toBe("EINVAL");
    expect(errno(() => g.h.createDomain({ stage2: g.s2, format: "x86-64", root: 0x1000n, hd: true }))).toBe("EINVAL");
    expect(errno(() => g.h.createDomain({ stage2: g.s2, format: "arm64", root: 0x1000n, hd: true }))).toBe("EINVAL");
    expect(errno(() => g.h.createDomain({ stage2: g.s2, format: "x86-64", root: 0x1000n, accessedDirty: false, eafe: true }))).toBe("EINVAL");
    expect(errno(() => g.h.createDomain({ format: "arm64", stage: 2, accessedDirty: true, hd: true }))).toBe("EINVAL");
    expect(errno(() => g.h.createPageTable({ format: "vtd-sl", eafe: true }))).toBe("EINVAL");
    expect(g.h.ram.framesFree).toBe(free);
    // Single-stage domains take the switches too.
    const x = g.h.createDomain({ format: "x86-64", eafe: true });
    x.pageTable.map(0n, g.base, PAGE_4K, { write: true });
    ok(x.translate(0n));
    const root = x.walk(0n).steps[0].entryAddress;
    expect(g.h.ram.readU64(root) & (A | EA)).toBe(A | EA);
  });
});
