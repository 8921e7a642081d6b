// Nested translation: a guest's stage-1 table (in guest memory, addressed by
// GPAs) over a host stage-2 domain. Every stage-1 table read goes through
// stage 2; results combine both stages; faults say which stage failed; the
// combined IOTLB entries never outlive a stage-2 change.
import { describe, expect, it } from "vitest";
import { IommuError, PAGE_2M, PAGE_4K } from "../src/index.js";
import { errno as code } from "./support/outcome.js";
import { guest, ok, x86Stage1, P, RW, US, VALID, TABLE, AF, AP_EL0, AP_RO } from "./support/guest.js";

const MiB = 1n << 20n;

describe("nested translation: x86-64 stage 1 over VT-d second level", () => {
  it("translates GVA → GPA → HPA, and a stage-1 2 MiB page over 4 KiB stage-2 pages gives 4 KiB", async () => {
    const g = await guest("vtd-sl", [PAGE_4K]);
    const d = g.h.createDomain({ stage2: g.s2, format: "x86-64", levels: 4, root: x86Stage1(g) });
    const t = ok(d.translate(0x40000123n, "write"));
    expect(t.hpa).toBe(g.base + 0x200123n);
    expect(t.pageSize).toBe(PAGE_4K);
    const big = ok(d.translate(0x40212345n, "read"));
    expect(big.hpa).toBe(g.base + 0x412345n);
    expect(big.pageSize).toBe(PAGE_4K);
    expect(() => d.pageTable).toThrow(IommuError);
    expect(d.walk(0x40000123n).hpa).toBe(g.base + 0x200123n);
  });

  it("the smaller page size of the two stages: 2 MiB over 2 MiB stays 2 MiB", async () => {
    const g = await guest("vtd-sl", [PAGE_4K, PAGE_2M]);
    const d = g.h.createDomain({ stage2: g.s2, format: "x86-64", root: x86Stage1(g) });
    expect(g.s2.walk(0x400000n).pageSize).toBe(PAGE_2M);
    expect(ok(d.translate(0x40212345n)).pageSize).toBe(PAGE_2M);
    expect(ok(d.translate(0x40000123n)).pageSize).toBe(PAGE_4K);
  });

  it("permissions are both stages': each refusal names its stage", async () => {
    const g = await guest("vtd-sl", [PAGE_4K]);
    const d = g.h.createDomain({ stage2: g.s2, format: "x86-64", root: x86Stage1(g) });
    // Stage 1 maps 0x40200000 read-only.
    expect(d.translate(0x40200000n, "write").fault).toMatchObject({ reason: "permission", level: 1, stage: 1 });
    // Stage 2 makes the 4 KiB target read-only: a write fails there.
    g.s2.pageTable.unmap(0x200000n, PAGE_4K);
    g.s2.pageTable.map(0x200000n, g.base + 0x200000n, PAGE_4K, { read: true, write: false });
    g.s2.invalidate();
    expect(d.translate(0x40000000n, "write").fault).toMatchObject({ reason: "permission", stage: 2 });
    expect(d.translate(0x40000000n, "read").hpa).toBe(g.base + 0x200000n);
    const faults = g.h.faults.drain();
    expect(faults.map((f) => f.stage)).toEqual([1, 2]);
  });

  it("a stage-1 table or output the stage 2 does not map faults in stage 2", async () => {
    const g = await guest();
    const root = x86Stage1(g);
    // The PT points its second entry at a GPA beyond guest RAM.
    g.put(0x4000n + 8n, (32n * MiB) | P | RW | US);
    const d = g.h.createDomain({ stage2: g.s2, format: "x86-64", root });
    expect(d.translate(0x40001000n).fault).toMatchObject({ reason: "not-present", stage: 2 });
    // The PD's third entry points at a page table beyond guest RAM.
    g.put(0x3000n + 16n, (40n * MiB) | P | RW | US);
    expect(d.translate(0x40400000n).fault).toMatchObject({ reason: "not-present", stage: 2 });
    // A stage-1 hole is a stage-1 fault.
    expect(d.translate(0x80000000n).fault).toMatchObject({ reason: "not-present", stage: 1 });
    // A root outside guest RAM: the first table read faults in stage 2.
    const lost = g.h.createDomain({ stage2: g.s2, format: "x86-64", root: 48n * MiB });
    expect(lost.walk(0x40000000n).fault).toMatchObject({ reason: "not-present", stage: 2 });
  });

  it("combined IOTLB entries hit, and die with any stage-2 invalidation", async () => {
    const g = await guest("vtd-sl", [PAGE_4K]);
    const d = g.h.createDomain({ stage2: g.s2, format: "x86-64", root: x86Stage1(g) });
    expect(d.translate(0x40000010n).hpa).toBe(g.base + 0x200010n);
    const s = g.h.iotlb.stats();
    expect(d.translate(0x40000020n).hpa).toBe(g.base + 0x200020n);
    expect(g.h.iotlb.stats().hits).toBe(s.hits + 1);
    // The host moves the guest page: unmap + a range invalidation of stage 2 only.
    g.s2.pageTable.unmap(0x200000n, PAGE_4K);
    const moved = g.h.ram.allocFrames(1);
    g.s2.pageTable.map(0x200000n, moved, PAGE_4K, { read: true, write: true });
    g.s2.invalidate({ iova: 0x200000n, npages: 1 });
    expect(d.translate(0x40000020n).hpa).toBe(moved + 0x20n);
  });

  it("a guest that edits its table sees the old translation until it invalidates", async () => {
    const g = await guest();
    const d = g.h.createDomain({ stage2: g.s2, format: "x86-64", root: x86Stage1(g) });
    expect(d.translate(0x40000000n).hpa).toBe(g.base + 0x200000n);
    g.put(0x4000n, 0x300000n | P | RW | US);
    expect(d.translate(0x40000000n).hpa).toBe(g.base + 0x200000n);
    d.invalidate({ iova: 0x40000000n, npages: 1 });
    expect(d.translate(0x40000000n).hpa).toBe(g.base + 0x300000n);
  });

  it("DMA through the nested domain moves guest data and reports the failing stage", async () => {
    const g = await guest();
    const d = g.h.createDomain({ stage2: g.s2, format: "x86-64", root: x86Stage1(g) });
    g.h.ram.write(g.base + 0x200ff0n, new TextEncoder().encode("guest bytes!"));
    expect(new TextDecoder().decode(d.dma.read(0x40000ff0n, 12).data)).toBe("guest bytes!");
    g.s2.pageTable.unmap(0x400000n, PAGE_2M);
    g.s2.invalidate();
    const r = d.dma.read(0x40200000n, 16);
    expect(r.bytes).toBe(0);
    expect(r.fault).toMatchObject({ reason: "not-present", stage: 2 });
  });
});

describe("nested translation: Arm stage 1 over Arm stage 2", () => {
  it("translates through both stages with AP and S2AP both applied", async () => {
    const g = await guest("arm64", [PAGE_4K]);
    // 48-bit stage 1: L0 0x1000, L1 0x2000, L2 0x3000, L3 0x4000; VA 0x40000000 → IPA 0x200000, EL0 read-only.
    g.put(0x1000n, 0x2000n | VALID | TABLE);
    g.put(0x2000n + 8n, 0x3000n | VALID | TABLE);
    g.put(0x3000n, 0x4000n | VALID | TABLE);
    g.put(0x4000n, 0x200000n | VALID | TABLE | AF | AP_EL0 | AP_RO);
    const d = g.h.createDomain({ stage2: g.s2, format: "arm64", inputBits: 48, root: 0x1000n });
    expect(d.translate(0x40000abcn).hpa).toBe(g.base + 0x200abcn);
    expect(d.translate(0x40000abcn, "write").fault).toMatchObject({ reason: "permission", stage: 1 });
    g.s2.pageTable.unmap(0x200000n, PAGE_4K);
    g.s2.pageTable.map(0x200000n, g.base + 0x200000n, PAGE_4K, { read: false, write: true });
    g.s2.invalidate();
    expect(d.translate(0x40000abcn).fault).toMatchObject({ reason: "permission", stage: 2 });
  });
});

describe("nested domains: arguments", () => {
  it("refuses stage-2 formats as stage 1, nesting twice, and a first-stage stage 2", async () => {
    const g = await guest();
    const d = g.h.createDomain({ stage2: g.s2, format: "x86-64", root: 0x1000n });
    expect(code(() => g.h.createDomain({ stage2: d, format: "x86-64", root: 0x1000n }))).toBe("EINVAL");
    expect(code(() => g.h.createDomain({ stage2: g.s2, format: "vtd-sl", root: 0x1000n }))).toBe("EINVAL");
    const first = g.h.createDomain({ format: "x86-64" });
    expect(code(() => g.h.createDomain({ stage2: first, format: "x86-64", root: 0x1000n }))).toBe("EINVAL");
    expect(code(() => g.h.createDomain({ stage2: g.s2, format: "x86-64", root: 0x1001n }))).toBe("EINVAL");
    expect(code(() => d.pageTable)).toBe("EOPNOTSUPP");
    // A stage 2 does not go while a nested domain uses it (its id could be handed to another owner's table).
    expect(code(() => g.s2.destroy())).toBe("EBUSY");
    expect(d.translate(0x40000000n).fault?.reason).not.toBe("no-context");
    d.destroy();
    g.s2.destroy();
    expect(code(() => g.h.createDomain({ stage2: g.s2, format: "x86-64", root: 0x1000n }))).toBe("ENODEV");
  });
});
