// The io-pgtable selftest pattern (STYLE.md) for every format × levels × page
// size, plus the builder's all-or-nothing rules and the walker's fault cases.
import { describe, expect, it } from "vitest";
import { createHost, PAGE_1G, PAGE_2M, PAGE_4K, type Host, type PageTableOptions } from "../src/index.js";
import { errno as code } from "./support/outcome.js";

const MiB = 1024 * 1024;

const configs: { name: string; options: PageTableOptions; lastPage: bigint }[] = [
  { name: "x86-64 4-level", options: { format: "x86-64", levels: 4 }, lastPage: 0xfffffffffffff000n },
  { name: "x86-64 5-level", options: { format: "x86-64", levels: 5 }, lastPage: 0xfffffffffffff000n },
  { name: "arm64 48-bit", options: { format: "arm64", inputBits: 48 }, lastPage: (1n << 48n) - PAGE_4K },
  { name: "arm64 39-bit", options: { format: "arm64", inputBits: 39 }, lastPage: (1n << 39n) - PAGE_4K },
];


const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

async function host(ramMiB = 32): Promise<Host> {
  return createHost({ ramSize: ramMiB * MiB });
}

describe.each(configs)("$name selftest", ({ options, lastPage }) => {
  it("an empty table translates nothing", async () => {
    const h = await host();
    const pt = h.createPageTable(options);
    for (const iova of [0n, 0x1000n, 0x40000000n, lastPage]) expect(pt.iovaToPhys(iova)).toBeUndefined();
  });

  for (const size of [PAGE_4K, PAGE_2M, PAGE_1G]) {
    it(`maps, translates and unmaps a ${size / 1024n} KiB page`, async () => {
      const h = await host();
      const pt = h.createPageTable(options);
      const iova = size * 3n, hpa = size * 5n;
      pt.map(iova, hpa, size, { write: true });
      expect(pt.iovaToPhys(iova + 42n)).toBe(hpa + 42n);
      expect(pt.iovaToPhys(iova + size - 1n)).toBe(hpa + size - 1n);
      expect(pt.iovaToPhys(iova + size)).toBeUndefined();
      const walk = pt.walk(iova + 42n);
      expect(walk.pageSize).toBe(size);
      // An overlapping map is refused, however little it overlaps.
      expect(code(() => pt.map(iova + size - PAGE_4K, 0n, PAGE_4K * 2n))).toBe("EEXIST");
      expect(code(() => pt.map(iova - PAGE_4K, 0n, PAGE_4K * 2n))).toBe("EEXIST");
      expect(pt.iovaToPhys(iova - PAGE_4K)).toBeUndefined();
      expect(pt.unmap(iova, size)).toBe(size);
      expect(pt.iovaToPhys(iova + 42n)).toBeUndefined();
      expect(pt.unmap(iova, size)).toBe(0n);
    });
  }

  it("uses the largest page that fits", async () => {
    const h = await host();
    const pt = h.createPageTable(options);
    // 1 GiB + 2 MiB + 4 KiB, starting 4 KiB below a 2 MiB boundary.
    const iova = PAGE_1G - PAGE_4K, hpa = 2n * PAGE_1G - PAGE_4K, size = PAGE_1G + PAGE_2M + PAGE_4K;
    pt.map(iova, hpa, size);
    expect(pt.walk(iova).pageSize).toBe(PAGE_4K);
    expect(pt.walk(PAGE_1G).pageSize).toBe(PAGE_1G);
    expect(pt.walk(2n * PAGE_1G).pageSize).toBe(PAGE_2M);
    expect(pt.iovaToPhys(2n * PAGE_1G + 123n)).toBe(hpa + (2n * PAGE_1G - iova) + 123n);
    expect(pt.unmap(iova, size)).toBe(size);
  });

  it("the last page of the address space works", async () => {
    const h = await host();
    const pt = h.createPageTable(options);
    pt.map(lastPage, 0x7000n, PAGE_4K);
    expect(pt.iovaToPhys(lastPage + 0xfffn)).toBe(0x7fffn);
    expect(pt.unmap(lastPage, PAGE_4K)).toBe(PAGE_4K);
  });

  it("refuses a range outside the input address space", async () => {
    const h = await host();
    const pt = h.createPageTable(options);
    expect(code(() => pt.map(lastPage, 0n, PAGE_4K * 2n))).toBe(lastPage === 0xfffffffffffff000n ? "EOVERFLOW" : "EINVAL");
    expect(code(() => pt.map(1n << 64n, 0n, PAGE_4K))).toBe("EINVAL");
    const beyond = options.format === "arm64" ? lastPage + PAGE_4K : 1n << 47n << BigInt(options.levels === 5 ? 9 : 0);
    expect(code(() => pt.map(beyond, 0n, PAGE_4K))).toBe("EINVAL");
  });
});

describe("builder rules", () => {
  it("checks alignment, sizes and widths before touching anything", async () => {
    const h = await host();
    const pt = h.createPageTable({ physAddrWidth: 40 });
    expect(code(() => pt.map(0x1001n, 0n, PAGE_4K))).toBe("EINVAL");
    expect(code(() => pt.map(0x1000n, 0x10n, PAGE_4K))).toBe("EINVAL");
    expect(code(() => pt.map(0x1000n, 0n, 0n))).toBe("EINVAL");
    expect(code(() => pt.map(0x1000n, 0n, 0x800n))).toBe("EINVAL");
    expect(code(() => pt.map(0x1000n, 1n << 40n, PAGE_4K))).toBe("EINVAL");
    expect(code(() => pt.map(0x1000n, (1n << 64n) - PAGE_4K, PAGE_4K * 2n))).toBe("EOVERFLOW");
    expect(code(() => pt.map(0x1000n, 0n, PAGE_4K, { read: false, write: false }))).toBe("EINVAL");
    expect(code(() => pt.map(-1, 0n, PAGE_4K))).toBe("EINVAL");
    expect(code(() => h.createPageTable({ levels: 3 as 4 }))).toBe("EINVAL");
    expect(code(() => h.createPageTable({ format: "riscv" as "x86-64" }))).toBe("EOPNOTSUPP");
    expect(code(() => h.createPageTable({ pageSizes: [PAGE_2M] }))).toBe("EINVAL");
    expect(pt.iovaToPhys(0x1000n)).toBeUndefined();
  });

  it("is all or nothing when frames run out (ENOMEM leaves RAM as it was)", async () => {
    const h = await createHost({ ramSize: 2 * MiB });
    const pt = h.createPageTable({ pageSizes: [PAGE_4K] });
    pt.map(0n, 0x100000n, PAGE_4K);
    // Hold all but two frames, then ask for a map under a new PML4 slot: it needs three new tables.
    const held = h.ram.allocFrames(h.ram.framesFree - 2);
    const before = h.ram.read(0n, 2 * MiB);
    const free = h.ram.framesFree;
    const far = 1n << 39n;
    expect(code(() => pt.map(far, 0n, PAGE_4K))).toBe("ENOMEM");
    expect(h.ram.framesFree).toBe(free);
    expect(sameBytes(h.ram.read(0n, 2 * MiB), before)).toBe(true);
    h.ram.freeFrames(held, 1);
    pt.map(far, 0n, PAGE_4K);
    expect(pt.iovaToPhys(far + 1n)).toBe(1n);
  });

  it("an EEXIST part-way through a range changes nothing", async () => {
    const h = await host();
    const pt = h.createPageTable({ pageSizes: [PAGE_4K] });
    pt.map(0x10000n, 0x50000n, PAGE_4K);
    const before = h.ram.read(0n, MiB);
    expect(code(() => pt.map(0x0n, 0x100000n, 0x20000n))).toBe("EEXIST");
    expect(sameBytes(h.ram.read(0n, MiB), before)).toBe(true);
    expect(pt.iovaToPhys(0x0n)).toBeUndefined();
  });

  it("unmap never splits a leaf and skips holes", async () => {
    const h = await host();
    const pt = h.createPageTable();
    pt.map(PAGE_2M, PAGE_2M, PAGE_2M);
    pt.map(PAGE_2M * 3n, 0x1000n, PAGE_4K);
    // Half of the 2 MiB leaf: nothing happens.
    expect(pt.unmap(PAGE_2M, PAGE_2M / 2n)).toBe(0n);
    expect(pt.iovaToPhys(PAGE_2M)).toBe(PAGE_2M);
    // A range covering the leaf, a hole and the 4 KiB page.
    expect(pt.unmap(0n, PAGE_2M * 4n)).toBe(PAGE_2M + PAGE_4K);
    expect(pt.iovaToPhys(PAGE_2M)).toBeUndefined();
    expect(pt.unmap(0n, PAGE_2M * 4n)).toBe(0n);
  });

  it("destroy frees every frame the table took", async () => {
    const h = await host();
    const free = h.ram.framesFree;
    const pt = h.createPageTable({ levels: 5, pageSizes: [PAGE_4K] });
    pt.map(0x7000n, 0x1000n, PAGE_4K * 40n);
    pt.map(1n << 50n, 0x1000n, PAGE_4K);
    pt.destroy();
    expect(h.ram.framesFree).toBe(free);
    expect(code(() => pt.map(0n, 0n, PAGE_4K))).toBe("ENODEV");
  });
});

describe("walker faults", () => {
  async function setup() {
    const h = await host();
    const pt = h.createPageTable({ physAddrWidth: 40 });
    pt.map(0x200000n, 0x400000n, PAGE_4K, { write: false });
    const steps = pt.walk(0x200000n).steps;
    return { h, pt, steps };
  }

  it("reports each level's entry on a probe walk", async () => {
    const { h, steps } = await setup();
    expect(steps.map((s) => s.level)).toEqual([3, 2, 1, 0]);
    for (const s of steps) expect(h.ram.readU64(s.entryAddress)).toBe(s.entry);
    expect(steps[3].entry & ~0xfffn).toBe(0x400000n | (1n << 63n));
  });

  it("a reserved bit, a table outside RAM and a cycle each fault with their level", async () => {
    const { h, pt, steps } = await setup();
    const pde = steps[2];
    h.ram.writeU64(pde.entryAddress, pde.entry | (1n << 45n));
    expect(pt.walk(0x200000n).fault).toEqual({ reason: "reserved-bit", level: 1, stage: 1 });
    h.ram.writeU64(pde.entryAddress, (pde.entry & 0xfffn) | (h.ram.size + 0x1000n));
    expect(pt.walk(0x200000n).fault).toEqual({ reason: "table-outside-ram", level: 0, stage: 1 });
    // The PDE points back at the PDPT: the walk would loop without the check.
    h.ram.writeU64(pde.entryAddress, (pde.entry & 0xfffn) | (steps[1].entryAddress & ~0xfffn));
    expect(pt.walk(0x200000n).fault).toEqual({ reason: "table-cycle", level: 1, stage: 1 });
    expect(pt.walk(0x123n << 48n).fault?.reason).toBe("non-canonical");
  });

  it("permissions: read-only, user and privileged rules", async () => {
    const h = await host();
    const d = h.createDomain({ wpe: true, sre: true });
    d.pageTable.map(0x1000n, 0x5000n, PAGE_4K, { write: false, user: true });
    d.pageTable.map(0x2000n, 0x6000n, PAGE_4K, { write: true, user: false });
    expect(d.walk(0x1000n, "write").fault?.reason).toBe("permission");
    expect(d.walk(0x1000n, { write: true, privileged: true }).fault?.reason).toBe("permission");
    expect(d.walk(0x2000n, "read").fault?.reason).toBe("permission");
    expect(d.walk(0x2000n, { write: true, privileged: true }).hpa).toBe(0x6000n);
    expect(d.walk(0x2000n, "exec").fault?.reason).toBe("permission");
    // Without WPE a privileged write ignores R/W; without SRE privileged requests fail.
    const noWp = h.createDomain({ pageTable: d.pageTable, wpe: false });
    expect(noWp.walk(0x1000n, { write: true, privileged: true }).hpa).toBe(0x5000n);
    const noSre = h.createDomain({ pageTable: d.pageTable, sre: false });
    expect(noSre.walk(0x2000n, { read: true, privileged: true }).fault?.reason).toBe("permission");
  });

  it("translate sets accessed and dirty bits as the hardware does; a probe does not", async () => {
    const h = await host();
    const d = h.createDomain();
    d.pageTable.map(0x1000n, 0x5000n, PAGE_4K, { write: true });
    const leaf = () => h.ram.readU64(d.walk(0x1000n).steps[3].entryAddress);
    const A = 1n << 5n, D = 1n << 6n;
    expect(leaf() & (A | D)).toBe(0n);
    d.translate(0x1000n, "read");
    expect(leaf() & (A | D)).toBe(A);
    for (const s of d.walk(0x1000n).steps.slice(0, 3)) expect(s.entry & A).toBe(A);
    // The cached entry has no dirty bit: a write must walk again to set D.
    const walks = h.iotlb.stats().walks;
    d.translate(0x1000n, "write");
    expect(h.iotlb.stats().walks).toBe(walks + 1);
    expect(leaf() & (A | D)).toBe(A | D);
    d.translate(0x1000n, "write");
    expect(h.iotlb.stats().walks).toBe(walks + 1);
    const quiet = h.createDomain({ pageTable: d.pageTable, accessedDirty: false });
    d.pageTable.map(0x3000n, 0x5000n, PAGE_4K, { write: true });
    quiet.translate(0x3000n, "write");
    expect(h.ram.readU64(d.walk(0x3000n).steps[3].entryAddress) & (A | D)).toBe(0n);
  });

  it("arm64: access flag, APTable and the reserved level-3 encoding", async () => {
    const h = await host();
    const d = h.createDomain({ format: "arm64", inputBits: 48, physAddrWidth: 40 });
    d.pageTable.map(0x1000n, 0x5000n, PAGE_4K, { write: true, user: true });
    const steps = d.walk(0x1000n).steps;
    const leaf = steps[3];
    expect(d.walk(0x1000n, { write: true }).hpa).toBe(0x5000n);
    h.ram.writeU64(leaf.entryAddress, leaf.entry & ~(1n << 10n));
    expect(d.walk(0x1000n).fault).toEqual({ reason: "access-flag", level: 0, stage: 1 });
    h.ram.writeU64(leaf.entryAddress, leaf.entry & ~2n);
    expect(d.walk(0x1000n).fault).toEqual({ reason: "not-present", level: 0, stage: 1 });
    h.ram.writeU64(leaf.entryAddress, leaf.entry);
    // APTable[1] on the level-1 table descriptor makes everything below read-only.
    h.ram.writeU64(steps[1].entryAddress, steps[1].entry | (1n << 62n));
    expect(d.walk(0x1000n, { write: true }).fault?.reason).toBe("permission");
    expect(d.walk(0x1000n, "read").hpa).toBe(0x5000n);
    h.ram.writeU64(steps[1].entryAddress, steps[1].entry | (1n << 61n));
    expect(d.walk(0x1000n, "read").fault?.reason).toBe("permission");
    expect(d.walk(0x1000n, { read: true, privileged: true }).hpa).toBe(0x5000n);
    expect(d.walk(1n << 48n).fault?.reason).toBe("input-range");
    // An output address above the 40-bit IPS is an address-size fault.
    h.ram.writeU64(leaf.entryAddress, leaf.entry | (1n << 41n));
    expect(d.walk(0x1000n).fault).toEqual({ reason: "address-size", level: 0, stage: 1 });
  });

  it("arm64 with hardware AF sets AF in leaves only (bit 10 of a table descriptor is ignored)", async () => {
    const h = await host();
    const d = h.createDomain({ format: "arm64", accessedDirty: true });
    d.pageTable.map(0x1000n, 0x5000n, PAGE_4K);
    const leaf = d.walk(0x1000n).steps[3];
    h.ram.writeU64(leaf.entryAddress, leaf.entry & ~(1n << 10n));
    expect(d.translate(0x1000n).hpa).toBe(0x5000n);
    const steps = d.walk(0x1000n).steps;
    expect(steps[3].entry & (1n << 10n)).toBe(1n << 10n);
    for (const s of steps.slice(0, 3)) expect(s.entry & (1n << 10n)).toBe(0n);
  });
});

describe("tables the builder did not make", () => {
  it("refuses to map through aliased tables (EINVAL) and changes nothing", async () => {
    const h = await host();
    const pt = h.createPageTable();
    pt.map(0n, 0x100000n, PAGE_4K);
    // The PDE of slot 0 copied into slot 1: two 2 MiB ranges share one page table.
    const pde = pt.walk(0n).steps[2];
    h.ram.writeU64(pde.entryAddress + 8n, pde.entry);
    pt.unmap(0n, PAGE_4K);
    const before = h.ram.read(0n, 4 * MiB);
    const free = h.ram.framesFree;
    expect(code(() => pt.map(0n, 0x1000n, 0x400000n))).toBe("EINVAL");
    expect(sameBytes(h.ram.read(0n, 4 * MiB), before)).toBe(true);
    expect(h.ram.framesFree).toBe(free);
  });

  it("a self-referencing root entry neither frees the root nor breaks destroy", async () => {
    const h = await host();
    const free = h.ram.framesFree;
    const pt = h.createPageTable();
    pt.map(0x1000n, 0x5000n, PAGE_4K);
    h.ram.writeU64(pt.root + 800n, pt.root | 3n);
    expect(pt.unmap(0n, 1n << 47n)).toBe(PAGE_4K);
    pt.destroy();
    expect(h.ram.framesFree).toBe(free);
    const next = h.createPageTable();
    next.map(0x1000n, 0x6000n, PAGE_4K);
    pt.destroy();
    expect(next.iovaToPhys(0x1000n)).toBe(0x6000n);
  });

  it("tables written into RAM by hand are adopted, so new tables never land on them", async () => {
    const h = await host();
    // A root and a PDPT the allocator does not know about, at frames it would hand out next.
    const root = 0x1000n, pdpt = 0x2000n;
    h.ram.writeU64(root, pdpt | 7n);
    const pt = h.createPageTable({ root });
    const free = h.ram.framesFree;
    pt.map(0x200000n, 0x300000n, PAGE_4K);
    // The PDPT was adopted and two new tables (PD, PT) came from elsewhere.
    expect(h.ram.framesFree).toBe(free - 3);
    const steps = pt.walk(0x200000n).steps;
    expect(steps[1].entryAddress & ~0xfffn).toBe(pdpt);
    for (const s of steps.slice(2)) expect([root, pdpt]).not.toContain(s.entryAddress & ~0xfffn);
    expect(pt.iovaToPhys(0x200123n)).toBe(0x300123n);
    expect(code(() => h.ram.freeFrames(root))).toBe("no error");
  });

  it("a freed root is taken back before the map allocates", async () => {
    const h = await host();
    const pt = h.createPageTable({ format: "arm64" });
    h.ram.freeFrames(pt.root);
    pt.map(0n, 0n, PAGE_4K);
    expect(pt.iovaToPhys(0x10n)).toBe(0x10n);
    expect(code(() => h.ram.freeFrames(pt.root))).toBe("no error");
  });

  // Counting stops once it passes the free frames; a full count of 2^34 leaves
  // would run for hours, far past this test's timeout.
  it("a map far larger than RAM can hold tables for ends in ENOMEM", async () => {
    const h = await host();
    const pt = h.createPageTable({ pageSizes: [PAGE_4K] });
    expect(code(() => pt.map(0n, 0n, 1n << 46n))).toBe("ENOMEM");
    expect(pt.iovaToPhys(0n)).toBeUndefined();
  }, 20_000);
});

