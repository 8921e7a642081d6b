// The ggtt format (an Intel GPU global GTT, the package's model): one level,
// entry n at root + 8n for the 4 KiB page n; bit 0 present, bit 1 writable,
// bits 12..38 the page; an index at or above `entries` is an input-range
// fault. The vectors below are entries written by hand and the answers
// worked out by hand from those rules (not by running the engine); then the
// builder's encodings, the options' refusals, and faults through a domain.
import { describe, expect, it } from "vitest";
import { createHost, PAGE_2M, PAGE_4K, type Host, type PageTable } from "../src/index.js";
import { createNaiveHost } from "../bench/naive/index.js";
import { errno } from "./support/outcome.js";

const MiB = 1n << 20n;
const RW = { read: true, write: true } as const;

/** Both sides: every check here must hold for the engine and for its twin alike. */
const SIDES = [
  { side: "engine", make: (ramSize: number) => createHost({ ramSize }) as Promise<Host> },
  { side: "twin", make: (ramSize: number) => createNaiveHost({ ramSize }) as unknown as Promise<Host> },
];

describe.each(SIDES)("ggtt on the $side", ({ make }) => {
  it("hand-written entries translate as the rules say", async () => {
    const h = await make(16 << 20);
    const pt = h.createPageTable({ format: "ggtt", entries: 1024 });
    // 1024 entries: 8 KiB of entries, two frames; GMAs below 4 MiB (22 bits).
    expect([pt.format.levels, pt.format.inputBits, pt.format.physAddrWidth, pt.format.rootFrames]).toEqual([1, 22, 39, 2]);
    const put = (index: bigint, entry: bigint) => h.ram.writeU64(pt.root + index * 8n, entry);
    // Entry 5: P|W, page 0x12_3456_7000 (bits 12..38 all used up to bit 36).
    put(5n, 0x0000001234567003n);
    // Entry 6: P only, page 0x1000; bits 63..39 and 11..2 set, all ignored.
    put(6n, 0xffffff8000001ffdn);
    // Entry 7: W without P: not present.
    put(7n, 0x0000000000abc002n);
    // Entry 1023, the last one (in the second frame of the array): P|W, page 0x7f_ffff_f000, the top of 39 bits.
    put(1023n, 0x0000007ffffff003n);

    const rw = pt.walk(0x5abcn, "write");
    expect(rw.hpa).toBe(0x1234567abcn);
    expect(rw.pageSize).toBe(PAGE_4K);
    expect(rw.perms).toEqual({ read: true, write: true, exec: true, user: true });
    expect(rw.steps).toEqual([{ level: 0, entryAddress: pt.root + 0x28n, entry: 0x0000001234567003n }]);

    const ro = pt.walk(0x6010n);
    expect([ro.hpa, ro.perms?.write]).toEqual([0x1010n, false]);
    expect(pt.walk(0x6010n, "write").fault).toEqual({ reason: "permission", level: 0, stage: 1 });
    // No privilege levels and no execute control: a privileged read and a fetch of a present page are allowed.
    expect(pt.walk(0x6010n, { read: true, privileged: true }).hpa).toBe(0x1010n);
    expect(pt.walk(0x6010n, "exec").hpa).toBe(0x1010n);

    expect(pt.walk(0x7000n).fault).toEqual({ reason: "not-present", level: 0, stage: 1 });
    expect(pt.walk(0x8000n).fault).toEqual({ reason: "not-present", level: 0, stage: 1 });
    expect(pt.iovaToPhys(0x3ff123n)).toBe(0x7ffffff123n);
    // Index 1024 and beyond: an input-range fault, before any entry is read.
    const past = pt.walk(0x400000n);
    expect(past.fault).toEqual({ reason: "input-range", level: 0, stage: 1 });
    expect(past.steps).toEqual([]);
    expect(pt.walk(1n << 39n).fault?.reason).toBe("input-range");
  });

  it("the builder writes P, W and the page; unmap clears the entry", async () => {
    const h = await make(16 << 20);
    const pt = h.createPageTable({ format: "ggtt", entries: 512 });
    const entry = (index: bigint) => h.ram.readU64(pt.root + index * 8n);
    pt.map(0x3000n, 0xabc000n, PAGE_4K, { write: true });
    pt.map(0x4000n, 0x55000n, 2n * PAGE_4K, { write: false });
    // Write-only cannot be said (a present entry is readable): it comes out read-write.
    pt.map(0x10000n, 0x7ffffff000n, PAGE_4K, { read: false, write: true });
    expect([entry(3n), entry(4n), entry(5n), entry(16n)]).toEqual([0xabc003n, 0x55001n, 0x56001n, 0x7ffffff003n]);
    expect(pt.iovaToPhys(0x5042n)).toBe(0x56042n);
    expect(errno(() => pt.map(0x5000n, 0x1000n, PAGE_4K, RW))).toBe("EEXIST");
    // Past the 512 entries (2 MiB of input), past the 39-bit output, a 2 MiB page size: EINVAL, nothing written.
    expect(errno(() => pt.map(0x1ff000n, 0n, 2n * PAGE_4K, RW))).toBe("EINVAL");
    expect(errno(() => pt.map(0x20000n, 1n << 39n, PAGE_4K, RW))).toBe("EINVAL");
    expect(errno(() => pt.map(0x20000n, (1n << 39n) - PAGE_4K, 2n * PAGE_4K, RW))).toBe("EINVAL");
    expect(entry(0x20n)).toBe(0n);
    expect(pt.unmap(0x3000n, 3n * PAGE_4K)).toBe(3n * PAGE_4K);
    expect([entry(3n), entry(4n), entry(5n)]).toEqual([0n, 0n, 0n]);
    expect(pt.unmap(0x3000n, PAGE_4K)).toBe(0n);
    expect(errno(() => pt.unmap(0x1ff000n, 2n * PAGE_4K))).toBe("EINVAL");
    // The whole space in one map: 512 leaves of 4 KiB, one entry each.
    pt.unmap(0n, 2n * MiB);
    pt.map(0n, 0x200000n, 2n * MiB, RW);
    expect(pt.walk(0x1ff000n).pageSize).toBe(PAGE_4K);
    expect(entry(511n)).toBe(0x3ff003n);
  });

  it("refuses options it cannot be, changing nothing", async () => {
    const h = await make(8 << 20);
    // One frame taken: no 8 MiB run is left for a 2^20-entry array.
    h.ram.allocFrames(1);
    const free = h.ram.framesFree;
    const bad: [Record<string, unknown>, string][] = [
      [{ format: "ggtt" }, "EINVAL"], // no size
      [{ format: "ggtt", entries: 1000 }, "EINVAL"],
      [{ format: "ggtt", entries: 256 }, "EINVAL"],
      [{ format: "ggtt", entries: 2 ** 21 }, "EINVAL"],
      [{ format: "ggtt", entries: 1.5 }, "EINVAL"],
      [{ format: "ggtt", entries: "1024" }, "EINVAL"],
      [{ format: "ggtt", entries: 1024, inputBits: 23 }, "EINVAL"],
      [{ format: "ggtt", inputBits: 33 }, "EINVAL"],
      [{ format: "ggtt", entries: 1024, levels: 2 }, "EINVAL"],
      [{ format: "ggtt", entries: 1024, stage: 1 }, "EINVAL"],
      [{ format: "ggtt", entries: 1024, physAddrWidth: 48 }, "EINVAL"],
      [{ format: "ggtt", entries: 1024, pageSizes: [PAGE_4K, PAGE_2M] }, "EINVAL"],
      [{ format: "x86-64", entries: 1024 }, "EINVAL"],
      // The 2^20 entries take 8 MiB of contiguous RAM: more than is left.
      [{ format: "ggtt", entries: 2 ** 20 }, "ENOMEM"],
      // A root whose last frames lie past RAM.
      [{ format: "ggtt", entries: 4096, root: (8n * MiB) - 4n * PAGE_4K }, "EFAULT"],
    ];
    for (const [options, code] of bad) {
      expect(errno(() => h.createPageTable(options)), JSON.stringify(options, (_, v) => (typeof v === "bigint" ? `${v}` : v))).toBe(code);
      expect(h.ram.framesFree).toBe(free);
    }
    expect(h.createPageTable({ format: "ggtt", inputBits: 21 }).format.rootFrames).toBe(1);
  });

  it("a root in RAM is adopted whole, and destroy gives back every frame", async () => {
    const h = await make(16 << 20);
    const free = h.ram.framesFree;
    const made = h.createPageTable({ format: "ggtt", entries: 4096 });
    expect(free - h.ram.framesFree).toBe(8);
    made.destroy();
    expect(h.ram.framesFree).toBe(free);
    // A root the allocator does not hold (written by hand) is claimed, all 8 frames, and released with the table.
    const root = 12n * MiB;
    h.ram.writeU64(root + 4095n * 8n, 0x9000n | 1n);
    const adopted: PageTable = h.createPageTable({ format: "ggtt", entries: 4096, root });
    expect(free - h.ram.framesFree).toBe(8);
    expect(adopted.iovaToPhys(0xfff000n)).toBe(0x9000n);
    adopted.destroy();
    expect(h.ram.framesFree).toBe(free);
    // One from allocFrames stays the caller's.
    const frames = h.ram.allocFrames(8);
    h.createPageTable({ format: "ggtt", entries: 4096, root: frames }).destroy();
    expect(h.ram.framesFree).toBe(free - 8);
  });

  it("a domain over a ggtt table: IOTLB hits, faults recorded with their reasons, DMA stops at the first bad page", async () => {
    const h = await make(16 << 20);
    const d = h.createDomain({ format: "ggtt", entries: 512 });
    const page = h.ram.allocFrames(2);
    d.pageTable.map(0x1000n, page, PAGE_4K, RW);
    d.pageTable.map(0x2000n, page + PAGE_4K, PAGE_4K, { write: false });
    expect(d.translate(0x1008n, "write").hpa).toBe(page + 8n);
    const hits = h.iotlb.stats().hits;
    expect(d.translate(0x1010n, "read").hpa).toBe(page + 0x10n);
    expect(h.iotlb.stats().hits).toBe(hits + 1);
    expect(d.translate(0x2000n, "write").fault).toMatchObject({ reason: "permission", level: 0, stage: 1 });
    expect(d.translate(0x3000n).fault).toMatchObject({ reason: "not-present", level: 0, stage: 1 });
    expect(d.translate(0x200000n).fault).toMatchObject({ reason: "input-range", level: 0, stage: 1 });
    expect(h.faults.drain().map((f) => [f.reason, f.address])).toEqual([["permission", 0x2000n], ["not-present", 0x3000n], ["input-range", 0x200000n]]);
    // A write across the read-only page writes the first page only.
    const w = d.dma.write(0x1ff0n, new Uint8Array(0x20).fill(0xab));
    expect(w.bytes).toBe(0x10);
    expect(w.fault).toMatchObject({ reason: "permission", address: 0x2000n, stage: 1 });
    expect(h.ram.read(page + 0xff0n, 0x10)).toEqual(new Uint8Array(0x10).fill(0xab));
    const r = d.dma.read(0x1ff8n, 0x10);
    expect(r.bytes).toBe(0x10);
    // Clearing an entry and invalidating that page makes it unreachable.
    d.pageTable.unmap(0x1000n, PAGE_4K);
    d.invalidate({ iova: 0x1000n });
    expect(d.translate(0x1008n).fault).toMatchObject({ reason: "not-present" });
  });
});
