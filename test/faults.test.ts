// The fault ring (host.faults): one record per translation failure of
// translate, translateBatch and DMA, drained in order; a bounded ring that
// drops and counts the newest records when full; probe walks record nothing.
import { describe, expect, it } from "vitest";
import { createHost, type FaultRecord, type Host } from "../src/index.js";

const MiB = 1024 * 1024;
const RAM = 16 * MiB;

const READ = { read: true, write: false, exec: false, privileged: false };
const WRITE = { read: false, write: true, exec: false, privileged: false };
const EXEC = { read: false, write: false, exec: true, privileged: false };

/** A host and a domain with: 0x1000 read-only → 0x800000, 0x2000 writable → 0x801000, 0x3000 → outside RAM. */
async function setup(options: { faultRingSize?: number } = {}) {
  const host = await createHost({ ramSize: RAM, ...options });
  const domain = host.createDomain();
  domain.pageTable.map(0x1000, 0x800000, 0x1000);
  domain.pageTable.map(0x2000, 0x801000, 0x1000, { write: true });
  domain.pageTable.map(0x3000, RAM, 0x1000, { write: true });
  return { host, domain };
}

const record = (r: Partial<FaultRecord> & Pick<FaultRecord, "domain" | "address" | "reason" | "level">): FaultRecord => ({
  pasid: 0, source: 0, access: READ, stage: 1, ...r,
});

describe("fault records", () => {
  it("starts empty", async () => {
    const { host } = await setup();
    expect(host.faults.pending).toBe(0);
    expect(host.faults.overflow).toBe(0);
    expect(host.faults.drain()).toEqual([]);
  });

  it("successful translations and DMA record nothing", async () => {
    const { host, domain } = await setup();
    expect(domain.translate(0x1010n).hpa).toBe(0x800010n);
    expect(domain.translate(0x2010n, "write").hpa).toBe(0x801010n);
    expect(domain.translate(0x3000n).hpa).toBe(BigInt(RAM)); // outside RAM, still a translation
    const out = new BigUint64Array(2), st = new Uint8Array(2);
    expect(domain.translateBatch(BigUint64Array.from([0x1000n, 0x2fffn]), "read", out, st)).toBe(0);
    expect(domain.dma.read(0x1800n, 0x1000).fault).toBeUndefined();
    expect(domain.dma.write(0x2000n, new Uint8Array(16)).fault).toBeUndefined();
    expect(host.faults.pending).toBe(0);
    expect(host.faults.drain()).toEqual([]);
  });

  it("one record per fault of translate, translateBatch and DMA, in order, with every field", async () => {
    const { host, domain } = await setup();
    const other = host.createDomain();
    expect(other.id).not.toBe(domain.id);
    const d = domain.id;
    const want: FaultRecord[] = [];

    // translate: not present at the top level (empty PML4 slot).
    expect(domain.translate(0x8000000000n, "write").fault).toEqual({ reason: "not-present", level: 3, address: 0x8000000000n, stage: 1 });
    want.push(record({ domain: d, address: 0x8000000000n, access: WRITE, reason: "not-present", level: 3 }));
    expect(host.faults.pending).toBe(1);

    // translate with a PASID and a privileged write to a read-only page (after a read filled the IOTLB).
    expect(domain.translate(0x1000n, "read", { pasid: 7 }).hpa).toBe(0x800000n);
    expect(domain.translate(0x1234n, { write: true, privileged: true }, { pasid: 7 }).fault?.reason).toBe("permission");
    want.push(record({ domain: d, pasid: 7, address: 0x1234n, access: { ...WRITE, privileged: true }, reason: "permission", level: 0 }));

    // translate: fetch from a page mapped without exec; not present at level 0 and 1; non-canonical.
    expect(domain.translate(0x2000n, "exec").fault?.reason).toBe("permission");
    want.push(record({ domain: d, address: 0x2000n, access: EXEC, reason: "permission", level: 0 }));
    domain.translate(0x5008n, { read: true, write: true });
    want.push(record({ domain: d, address: 0x5008n, access: { ...READ, write: true }, reason: "not-present", level: 0 }));
    domain.translate(0x400000n);
    want.push(record({ domain: d, address: 0x400000n, reason: "not-present", level: 1 }));
    domain.translate(0x0000800000000000n);
    want.push(record({ domain: d, address: 0x0000800000000000n, reason: "non-canonical", level: 3 }));
    // The other domain's id, in its own (empty) table.
    other.translate(0x1000n, "read", { pasid: 0xfffff });
    want.push(record({ domain: other.id, pasid: 0xfffff, address: 0x1000n, reason: "not-present", level: 3 }));
    expect(host.faults.pending).toBe(want.length);

    // translateBatch, staged arrays: the two faulting entries, in array order.
    const out = new BigUint64Array(4), st = new Uint8Array(4);
    expect(domain.translateBatch(BigUint64Array.from([0x2008n, 0x7000n, 0x2000n, 0x1008n]), "write", out, st, { pasid: 3 })).toBe(2);
    want.push(record({ domain: d, pasid: 3, address: 0x7000n, access: WRITE, reason: "not-present", level: 0 }));
    want.push(record({ domain: d, pasid: 3, address: 0x1008n, access: WRITE, reason: "permission", level: 0 }));
    // translateBatch on engine memory.
    const batch = host.createTranslationBatch(3);
    batch.iovas.set([0x9000n, 0x2000n, 0x40000000n]);
    expect(domain.translateBatch(batch.iovas, "read", batch.hpas, batch.status)).toBe(2);
    want.push(record({ domain: d, address: 0x9000n, reason: "not-present", level: 0 }));
    want.push(record({ domain: d, address: 0x40000000n, reason: "not-present", level: 2 }));

    // DMA: a read that runs off the mapped pages, a write to a read-only page, output outside RAM, sg.
    expect(domain.dma.read(0x2800n, 0x1000).bytes).toBe(0x800);
    want.push(record({ domain: d, address: 0x3000n, reason: "output-outside-ram", level: 0 }));
    expect(domain.dma.write(0x1ff0n, new Uint8Array(0x20), { pasid: 9 }).bytes).toBe(0);
    want.push(record({ domain: d, pasid: 9, address: 0x1ff0n, access: WRITE, reason: "permission", level: 0 }));
    expect(domain.dma.read(0x800100n, 16, { privileged: true }).bytes).toBe(0);
    want.push(record({ domain: d, address: 0x800100n, access: { ...READ, privileged: true }, reason: "not-present", level: 1 }));
    const sg = domain.dma.sg([{ iova: 0x1000n, length: 16 }, { iova: 0x2ff0n, length: 0x20 }], new Uint8Array(0x30), { direction: "write" });
    expect(sg.segment).toBe(0); // the read-only page stops it at once
    want.push(record({ domain: d, address: 0x1000n, access: WRITE, reason: "permission", level: 0 }));
    const sgBuf = host.allocBuffer(0x30);
    const pairsBytes = host.allocBuffer(32);
    const pairs = new BigUint64Array(pairsBytes.buffer, pairsBytes.byteOffset, 4);
    pairs.set([0x1000n, 16n, 0x2ff0n, 0x20n]);
    expect(domain.dma.sg(pairs, sgBuf, { direction: "read" })).toMatchObject({ bytes: 0x20, segment: 1 });
    want.push(record({ domain: d, address: 0x3000n, reason: "output-outside-ram", level: 0 }));

    expect(host.faults.pending).toBe(want.length);
    expect(host.faults.drain()).toEqual(want);
    expect(host.faults.pending).toBe(0);
    expect(host.faults.drain()).toEqual([]);
    expect(host.faults.overflow).toBe(0);
  });

  it("each failing translation is recorded again (faults are not cached)", async () => {
    const { host, domain } = await setup();
    for (let i = 0; i < 3; i++) domain.translate(0x7000n);
    for (let i = 0; i < 2; i++) domain.translate(0x1000n, "write");
    const got = host.faults.drain();
    expect(got.map((r) => [r.address, r.reason])).toEqual([
      [0x7000n, "not-present"], [0x7000n, "not-present"], [0x7000n, "not-present"],
      [0x1000n, "permission"], [0x1000n, "permission"],
    ]);
  });

  it("drain between faults returns only the new ones", async () => {
    const { host, domain } = await setup();
    domain.translate(0x7000n);
    expect(host.faults.drain().map((r) => r.address)).toEqual([0x7000n]);
    domain.translate(0x8000n);
    domain.translate(0x9000n);
    expect(host.faults.pending).toBe(2);
    expect(host.faults.drain().map((r) => r.address)).toEqual([0x8000n, 0x9000n]);
  });
});

describe("overflow", () => {
  const fault = (host: Host, n: number, domain: ReturnType<Host["createDomain"]>, base = 0x100000n) => {
    for (let i = 0; i < n; i++) domain.translate(base + BigInt(i) * 0x1000n);
  };

  it("a full ring keeps the oldest records and counts the dropped newest", async () => {
    const { host, domain } = await setup({ faultRingSize: 16 });
    expect(host.faults.size).toBe(16);
    fault(host, 20, domain);
    expect(host.faults.pending).toBe(16);
    expect(host.faults.overflow).toBe(4);
    const got = host.faults.drain();
    expect(got.map((r) => r.address)).toEqual(Array.from({ length: 16 }, (_, i) => 0x100000n + BigInt(i) * 0x1000n));
    expect(host.faults.pending).toBe(0);
    expect(host.faults.overflow).toBe(4);

    // After draining, new faults are recorded again.
    fault(host, 3, domain, 0x200000n);
    expect(host.faults.pending).toBe(3);
    expect(host.faults.overflow).toBe(4);
    expect(host.faults.drain().map((r) => r.address)).toEqual([0x200000n, 0x201000n, 0x202000n]);
  });

  it("the ring wraps: exactly full drops nothing, one more is counted", async () => {
    const { host, domain } = await setup({ faultRingSize: 16 });
    // Move the ring's indices off zero so the next fill wraps around the array end.
    fault(host, 5, domain, 0x300000n);
    host.faults.drain();
    fault(host, 16, domain);
    expect(host.faults.pending).toBe(16);
    expect(host.faults.overflow).toBe(0);
    domain.translate(0xabc000n);
    expect(host.faults.overflow).toBe(1);
    const got = host.faults.drain();
    expect(got.map((r) => r.address)).toEqual(Array.from({ length: 16 }, (_, i) => 0x100000n + BigInt(i) * 0x1000n));
    expect(got.every((r) => r.domain === domain.id && r.reason === "not-present" && r.level === 0)).toBe(true);
  });

  it("DMA and batch faults overflow the same way; the transfer still reports its fault", async () => {
    const { host, domain } = await setup({ faultRingSize: 16 });
    fault(host, 16, domain);
    const r = domain.dma.read(0x7000n, 16);
    expect(r.fault).toMatchObject({ reason: "not-present", address: 0x7000n });
    const out = new BigUint64Array(3), st = new Uint8Array(3);
    expect(domain.translateBatch(BigUint64Array.from([0x7000n, 0x1000n, 0x8000n]), "read", out, st)).toBe(2);
    expect(host.faults.overflow).toBe(3);
    expect(host.faults.drain()).toHaveLength(16);
  });
});

describe("probe walks record nothing", () => {
  it("domain.walk, pageTable.walk and pageTable.iovaToPhys", async () => {
    const { host, domain } = await setup();
    const pt = domain.pageTable;
    // Faulting probes of every kind.
    expect(domain.walk(0x7000n).fault).toEqual({ reason: "not-present", level: 0, stage: 1 });
    expect(domain.walk(0x8000000000n, "write").fault).toEqual({ reason: "not-present", level: 3, stage: 1 });
    expect(domain.walk(0x1000n, "write").fault).toEqual({ reason: "permission", level: 0, stage: 1 });
    expect(domain.walk(0x2000n, "exec").fault?.reason).toBe("permission");
    expect(domain.walk(0x0000800000000000n).fault?.reason).toBe("non-canonical");
    expect(pt.walk(0x400000n).fault).toEqual({ reason: "not-present", level: 1, stage: 1 });
    expect(pt.walk(0x1000n, { write: true, privileged: true }).fault?.reason).toBe("permission");
    expect(pt.iovaToPhys(0x7000n)).toBeUndefined();
    expect(pt.iovaToPhys(0x40000000n)).toBeUndefined();
    // And succeeding ones.
    expect(domain.walk(0x1008n).hpa).toBe(0x800008n);
    expect(pt.iovaToPhys(0x2010n)).toBe(0x801010n);
    expect(host.faults.pending).toBe(0);
    expect(host.faults.drain()).toEqual([]);
    // A translate of the same address does record, so the ring was live all along.
    domain.translate(0x7000n);
    expect(host.faults.drain()).toEqual([record({ domain: domain.id, address: 0x7000n, reason: "not-present", level: 0 })]);
  });
});
