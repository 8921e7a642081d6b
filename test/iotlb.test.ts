// The IOTLB: a stale entry is served until the matching invalidation and is
// gone after it, at every granularity; entries are tagged by domain and
// PASID; the cache is bounded with FIFO replacement per set.
import { describe, expect, it } from "vitest";
import { createHost, PAGE_2M, PAGE_4K, type Domain, type Host } from "../src/index.js";
import { errno as code } from "./support/outcome.js";

const MiB = 1024 * 1024;


async function setup(options: Parameters<typeof createHost>[0] = {}): Promise<{ h: Host; d: Domain }> {
  const h = await createHost({ ramSize: 16 * MiB, ...options });
  const d = h.createDomain();
  d.pageTable.map(0x10000n, 0x80000n, PAGE_4K * 4n, { write: true });
  return { h, d };
}

const hpaOf = (d: Domain, iova: bigint, pasid = 0) => d.translate(iova, "read", { pasid }).hpa;

describe("stale entries and invalidation", () => {
  it("serves a stale translation after unmap until the range is invalidated", async () => {
    const { h, d } = await setup();
    expect(hpaOf(d, 0x10000n)).toBe(0x80000n);
    expect(hpaOf(d, 0x11008n)).toBe(0x81008n);
    expect(d.pageTable.unmap(0x11000n, PAGE_4K)).toBe(PAGE_4K);
    // The walk says it is gone; the IOTLB still has it, and DMA uses it.
    expect(d.walk(0x11008n).fault?.reason).toBe("not-present");
    expect(hpaOf(d, 0x11008n)).toBe(0x81008n);
    h.ram.write(0x81008n, new Uint8Array([7, 8, 9]));
    expect(Array.from(d.dma.read(0x11008n, 3).data)).toEqual([7, 8, 9]);
    const inv = h.iotlb.stats().invalidations;
    d.invalidate({ iova: 0x11000n, npages: 1 });
    expect(h.iotlb.stats().invalidations).toBe(inv + 1);
    expect(d.translate(0x11008n).fault?.reason).toBe("not-present");
    expect(d.dma.read(0x11008n, 3).fault?.reason).toBe("not-present");
    // The neighbours were not invalidated: still hits.
    const hits = h.iotlb.stats().hits;
    expect(hpaOf(d, 0x10000n)).toBe(0x80000n);
    expect(h.iotlb.stats().hits).toBe(hits + 1);
  });

  it("a range invalidation drops a large page that overlaps it", async () => {
    const { h, d } = await setup();
    d.pageTable.map(PAGE_2M * 4n, PAGE_2M, PAGE_2M);
    expect(hpaOf(d, PAGE_2M * 4n + 0x1234n)).toBe(PAGE_2M + 0x1234n);
    d.pageTable.unmap(PAGE_2M * 4n, PAGE_2M);
    expect(hpaOf(d, PAGE_2M * 4n + 0x1234n)).toBe(PAGE_2M + 0x1234n);
    d.invalidate({ iova: PAGE_2M * 4n + 0x5000n, npages: 1 });
    expect(d.translate(PAGE_2M * 4n + 0x1234n).fault?.reason).toBe("not-present");
    expect(h.iotlb.stats().misses).toBeGreaterThan(0);
  });

  it("domain-wide and host-wide invalidation", async () => {
    const { h, d } = await setup();
    const other = h.createDomain();
    other.pageTable.map(0x10000n, 0x90000n, PAGE_4K);
    expect(hpaOf(d, 0x10000n)).toBe(0x80000n);
    expect(hpaOf(other, 0x10000n)).toBe(0x90000n);
    d.pageTable.unmap(0x10000n, PAGE_4K);
    other.pageTable.unmap(0x10000n, PAGE_4K);
    d.invalidate();
    expect(d.translate(0x10000n).fault?.reason).toBe("not-present");
    expect(hpaOf(other, 0x10000n)).toBe(0x90000n);
    h.iotlb.invalidateAll();
    expect(other.translate(0x10000n).fault?.reason).toBe("not-present");
  });

  it("entries are tagged by PASID; PASID and range invalidation respect the tag", async () => {
    const { d } = await setup();
    for (const pasid of [0, 1, 2, 3]) expect(hpaOf(d, 0x10000n, pasid)).toBe(0x80000n);
    d.pageTable.unmap(0x10000n, PAGE_4K);
    d.invalidate({ pasid: 1 });
    expect(d.translate(0x10000n, "read", { pasid: 1 }).fault?.reason).toBe("not-present");
    expect(hpaOf(d, 0x10000n, 2)).toBe(0x80000n);
    d.invalidate({ pasid: 2, iova: 0x10000n });
    expect(d.translate(0x10000n, "read", { pasid: 2 }).fault?.reason).toBe("not-present");
    expect(hpaOf(d, 0x10000n, 3)).toBe(0x80000n);
    expect(hpaOf(d, 0x10000n, 0)).toBe(0x80000n);
    // A range without a PASID covers every PASID of the domain.
    d.invalidate({ iova: 0x10000n });
    expect(d.translate(0x10000n, "read", { pasid: 3 }).fault?.reason).toBe("not-present");
    expect(d.translate(0x10000n, "read", { pasid: 0 }).fault?.reason).toBe("not-present");
  });

  it("a reused domain id never sees the old domain's entries", async () => {
    const { h, d } = await setup();
    expect(hpaOf(d, 0x10000n)).toBe(0x80000n);
    const id = d.id;
    d.destroy();
    const next = h.createDomain();
    expect(next.id).toBe(id);
    next.pageTable.map(0x10000n, 0xa0000n, PAGE_4K);
    expect(hpaOf(next, 0x10000n)).toBe(0xa0000n);
    expect(code(() => d.translate(0x10000n))).toBe("ENODEV");
  });

  it("rejects malformed invalidations", async () => {
    const { d } = await setup();
    expect(code(() => d.invalidate({ iova: 0x10001n }))).toBe("EINVAL");
    expect(code(() => d.invalidate({ iova: 0x10000n, npages: 0 }))).toBe("EINVAL");
    expect(code(() => d.invalidate({ npages: 4 }))).toBe("EINVAL");
    expect(code(() => d.invalidate({ iova: 0x10000n, npages: 1n << 60n }))).toBe("EOVERFLOW");
    expect(code(() => d.invalidate({ pasid: 1 << 20 }))).toBe("EINVAL");
    // addr 0 with 2^52 pages covers the whole space and is fine.
    d.invalidate({ iova: 0n, npages: 1n << 52n });
  });
});

describe("bounded, set-associative, FIFO", () => {
  it("counts hits and misses, and evicts the oldest entry of a full set", async () => {
    // 16 sets × 2 ways. IOVAs 1 MiB apart (page numbers multiple of 256) share a set.
    const h = await createHost({ ramSize: 16 * MiB, iotlb: { sets: 16, ways: 2 } });
    expect(h.iotlb.entries).toBe(32);
    const d = h.createDomain();
    const pages = [0n, 1n, 2n].map((k) => 0x10000000n + k * BigInt(MiB));
    pages.forEach((iova, k) => d.pageTable.map(iova, 0x100000n + BigInt(k) * PAGE_4K, PAGE_4K));
    const s0 = h.iotlb.stats();
    for (const iova of pages) d.translate(iova);
    const s1 = h.iotlb.stats();
    expect(s1.misses - s0.misses).toBe(3);
    expect(s1.evictions - s0.evictions).toBe(1); // the third fill evicts the first
    d.translate(pages[1]);
    d.translate(pages[2]);
    const s2 = h.iotlb.stats();
    expect(s2.hits - s1.hits).toBe(2);
    d.translate(pages[0]);
    const s3 = h.iotlb.stats();
    expect(s3.misses - s2.misses).toBe(1);
    expect(s3.walks - s2.walks).toBe(1);
  });

  it("a working set larger than the IOTLB keeps walking; one that fits stops", async () => {
    const h = await createHost({ ramSize: 16 * MiB, iotlb: { sets: 16, ways: 4 } });
    const d = h.createDomain({ pageSizes: [PAGE_4K] });
    d.pageTable.map(0x100000n, 0x100000n, PAGE_4K * 256n);
    const batch = (n: number) => BigUint64Array.from({ length: n }, (_, i) => 0x100000n + BigInt(i) * PAGE_4K);
    const run = (iovas: BigUint64Array) => d.translateBatch(iovas, "read", new BigUint64Array(iovas.length), new Uint8Array(iovas.length));
    const small = batch(32), large = batch(256);
    run(small);
    let s = h.iotlb.stats();
    run(small);
    expect(h.iotlb.stats().walks).toBe(s.walks);
    run(large);
    s = h.iotlb.stats();
    run(large);
    expect(h.iotlb.stats().walks - s.walks).toBe(256);
    expect(h.iotlb.stats().evictions).toBeGreaterThan(0);
  });
});

describe("translateBatch", () => {
  it("translates a mixed batch, in place or staged, with the same results", async () => {
    const { h, d } = await setup();
    const iovas = [0x10008n, 0x20000n, 0x13ff8n, 0x14000n, 0x11000n];
    const expected = [0x80008n, 0n, 0x83ff8n, 0n, 0x81000n];
    const plain = { iovas: BigUint64Array.from(iovas), hpas: new BigUint64Array(5), status: new Uint8Array(5) };
    const resident = h.createTranslationBatch(5);
    resident.iovas.set(iovas);
    for (const b of [plain, resident]) {
      expect(d.translateBatch(b.iovas, "write", b.hpas, b.status)).toBe(2);
      expect(Array.from(b.hpas)).toEqual(expected);
      expect(Array.from(b.status).map((s) => s !== 0)).toEqual([false, true, false, true, false]);
    }
    expect(h.faults.drain().map((f) => f.address)).toEqual([0x20000n, 0x14000n, 0x20000n, 0x14000n]);
    expect(code(() => d.translateBatch(plain.iovas, "read", new BigUint64Array(2), plain.status))).toBe("EINVAL");
    expect(code(() => d.translateBatch(plain.iovas, { privileged: true }, plain.hpas, plain.status))).toBe("EINVAL");
  });

  it("a batch larger than the staging area works", async () => {
    const { d } = await setup();
    const n = 200_000;
    const iovas = BigUint64Array.from({ length: n }, (_, i) => 0x10000n + BigInt(i % 4) * PAGE_4K + BigInt(i % 4096));
    const out = new BigUint64Array(n), status = new Uint8Array(n);
    expect(d.translateBatch(iovas, "read", out, status)).toBe(0);
    for (const i of [0, 1, 65535, 123457, n - 1]) expect(out[i]).toBe(iovas[i] - 0x10000n + 0x80000n);
  });
});

describe("occupancy per set", () => {
  it("counts the live entries of each set: fills add, a flush of the domain or of everything empties, no set holds more than its ways", async () => {
    const host = await createHost({ ramSize: 16 * 1024 * 1024, iotlb: { sets: 16, ways: 2 } });
    const a = host.createDomain({ format: "x86-64" });
    const b = host.createDomain({ format: "x86-64" });
    a.pageTable.map(0n, 0x100000n, 0x100000n);
    b.pageTable.map(0n, 0x200000n, 0x100000n);
    const sum = () => host.iotlb.occupancy().reduce((n, x) => n + x, 0);
    expect(host.iotlb.occupancy()).toEqual(new Uint8Array(16));
    for (let i = 0n; i < 8n; i++) a.translate(i * 0x1000n);
    const { evictions } = host.iotlb.stats();
    expect(sum()).toBe(8 - evictions);
    for (let i = 0n; i < 256n; i++) b.translate(i * 0x1000n);
    const full = host.iotlb.occupancy();
    expect(full.length).toBe(16);
    expect(full.every((n) => n <= 2)).toBe(true);
    expect(sum()).toBe(32);
    // Invalidating a domain kills its entries at once (an epoch, not a scan): occupancy sees that.
    b.invalidate();
    const afterB = sum();
    expect(afterB).toBeLessThan(32);
    a.invalidate();
    expect(sum()).toBe(0);
    for (let i = 0n; i < 4n; i++) a.translate(i * 0x1000n);
    expect(sum()).toBeGreaterThan(0);
    host.iotlb.invalidateAll();
    expect(sum()).toBe(0);
  });
});

describe("translateHpa: the per-access translation", () => {
  it("agrees with translate() on hits, misses and faults, records the same faults and counts the same lookups", async () => {
    const make = async () => {
      const host = await createHost({ ramSize: 16 * 1024 * 1024, iotlb: { sets: 16, ways: 2 } });
      const d = host.createDomain({ format: "x86-64" });
      d.pageTable.map(0x10000n, 0x100000n, 0x10000n, { write: true });
      d.pageTable.map(0x200000n, 0x400000n, PAGE_2M);
      d.pageTable.map(0x30000n, 0x500000n, PAGE_4K, { user: false });
      return { host, d };
    };
    const a = await make(), b = await make();
    const iovas = [0x10000, 0x1f123, 0x10000, 0x2abcde, 0x5000, 0x30000, 0x10008, 0x3fffff, 0x400000];
    for (const iova of iovas) {
      for (const access of ["read", "write", { read: true, privileged: true }] as const) {
        const t = b.d.translate(BigInt(iova), access);
        const h = a.d.translateHpa(iova, access);
        expect(h).toBe(t.fault ? -1 : Number(t.hpa));
        // A bigint address takes the other path to the same answer.
        expect(a.d.translateHpa(BigInt(iova), access)).toBe(h);
        b.d.translate(BigInt(iova), access);
      }
    }
    expect(a.host.iotlb.stats()).toEqual(b.host.iotlb.stats());
    expect(a.host.faults.drain()).toEqual(b.host.faults.drain());
    expect(code(() => a.d.translateHpa(-1))).toBe("EINVAL");
    expect(code(() => a.d.translateHpa(0x10000, "read", { pasdi: 1 } as never))).toBe("EINVAL");
  });
});
