// User processes (issue 3): x86-64 page tables in RAM, mmap over frames
// that need not be contiguous, read/write/view through those tables, pinning
// that walks them, the locked-memory limit, munmap of pinned pages (the
// frames outlive the mapping until the DMA mapping goes), and exit().
import { Buffer } from "node:buffer";
import { describe, expect, it } from "vitest";
import {
  createHost, PAGE_4K,
  type Container, type Domain, type Host, type PageTable, type Process, type ProcessOptions, type VfioDevice,
} from "../src/index.js";
import { errno } from "./support/outcome.js";

const RAM = 16 * 1024 * 1024;
const BDF = "0000:01:00.0";
const MMAP_BASE = 0x1000_0000n;


const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const hpaOf = (p: Process, vaddr: bigint) => p.pageTable.walk(vaddr, "read").hpa;
const dom = (c: Container) => c.domain as Domain;

async function host(): Promise<Host> {
  const h = await createHost({ ramSize: RAM });
  h.addDevice({ bdf: BDF });
  return h;
}

/** A container with group 0 attached and type1v2 set, pinning from p. */
function container(h: Host, p: Process): { c: Container; d: VfioDevice } {
  const c = h.openContainer({ process: p });
  const g = h.openGroup(0);
  g.setContainer(c);
  c.setIommu("type1v2");
  return { c, d: g.device(BDF) };
}

describe("page tables and mmap", () => {
  it("the process's x86-64 tables live in RAM: four levels, each entry readable at its HPA", async () => {
    const h = await host();
    const free = h.ram.framesFree;
    const p = h.createProcess();
    expect(free - h.ram.framesFree).toBe(1); // the root table
    const v = p.mmap(0x3000);
    expect(v).toBe(MMAP_BASE);
    const w = p.pageTable.walk(v + 0x1234n, "read");
    expect(w.fault).toBeUndefined();
    expect(w.pageSize).toBe(PAGE_4K);
    expect(w.steps.map((s) => s.level)).toEqual([3, 2, 1, 0]);
    expect(w.steps[0].entryAddress - (p.pageTable as PageTable).root).toBe(((v >> 39n) & 0x1ffn) * 8n);
    for (const s of w.steps) {
      expect(s.entryAddress < h.ram.size).toBe(true);
      expect(h.ram.readU64(s.entryAddress)).toBe(s.entry);
    }
    // The leaf points at the frame, user-accessible and writable.
    const leaf = w.steps[3].entry;
    expect(leaf & 0x000f_ffff_ffff_f000n).toBe(w.hpa! & ~0xfffn);
    expect(leaf & 0x7n).toBe(0x7n); // P, R/W, U/S
    expect(w.hpa! & 0xfffn).toBe(0x234n);
    // 3 pages and the level 3, 2 and 1 tables.
    expect(free - h.ram.framesFree).toBe(1 + 3 + 3);
  });

  it("mmap hands out zeroed, page-rounded areas first fit; size 0 is EINVAL", async () => {
    const h = await host();
    const p = h.createProcess();
    const a = p.mmap(1);
    const b = p.mmap(0x1001);
    expect(a).toBe(MMAP_BASE);
    expect(b).toBe(MMAP_BASE + 0x1000n);
    expect(p.mappings).toEqual([{ start: a, end: a + 0x1000n }, { start: b, end: b + 0x2000n }]);
    expect(Array.from(p.read(b, 0x2000)).every((x) => x === 0)).toBe(true);
    expect(errno(() => p.mmap(0))).toBe("EINVAL");
    // Frames are zeroed even when they held another process's data.
    const q = h.createProcess();
    const x = q.mmap(0x1000);
    q.write(x, bytes("old data"));
    q.munmap(x, 0x1000);
    const c = p.mmap(0x1000);
    expect(Array.from(p.read(c, 8))).toEqual(new Array(8).fill(0));
  });

  it("mmap beyond free RAM is ENOMEM and leaves nothing mapped", async () => {
    const h = await host();
    const p = h.createProcess();
    const v = p.mmap(0x1000);
    const free = h.ram.framesFree;
    expect(errno(() => p.mmap(RAM))).toBe("ENOMEM");
    expect(h.ram.framesFree).toBe(free);
    expect(p.mappings).toEqual([{ start: v, end: v + 0x1000n }]);
    expect(errno(() => p.read(v + 0x1000n, 1))).toBe("EFAULT");
    expect(errno(() => p.mmap(1n << 47n))).toBe("ENOMEM");
    // What is left still works.
    expect(p.mmap(0x2000)).toBe(v + 0x1000n);
  });

  it("frames need not be contiguous; pinning walks the tables page by page", async () => {
    const h = await host();
    const p = h.createProcess();
    const a = p.mmap(0x1000);
    const b = p.mmap(0x1000);
    p.munmap(a, 0x1000);
    // Fits after b; its first page reuses a's frame, the second comes from the top.
    const v = p.mmap(0x3000);
    expect(v).toBe(b + 0x1000n);
    const hpas = [0n, 0x1000n, 0x2000n].map((off) => hpaOf(p, v + off)!);
    expect(hpas[1] === hpas[0] + 0x1000n).toBe(false);
    expect(new Set(hpas).size).toBe(3);
    expect(errno(() => p.view(v, 0x2000))).toBe("EINVAL"); // not physically contiguous
    p.write(v + 0xff8n, bytes("split across frames"));
    expect(text(p.read(v + 0xff8n, 19))).toBe("split across frames");
    expect(text(h.ram.read(hpas[0] + 0xff8n, 8))).toBe("split ac");
    expect(text(h.ram.read(hpas[1], 11))).toBe("ross frames");
    const { c, d } = container(h, p);
    c.mapDma({ vaddr: v, iova: 0x10_0000n, size: 0x3000, read: true, write: true });
    for (let i = 0; i < 3; i++) {
      const w = dom(c).pageTable.walk(0x10_0000n + BigInt(i) * 0x1000n);
      expect(w.hpa).toBe(hpas[i]);
      expect(w.pageSize).toBe(PAGE_4K);
    }
    expect(text(d.dma.read(0x10_0ff8n, 19).data)).toBe("split across frames");
    d.dma.write(0x10_1ffen, bytes("dev"));
    expect(text(p.read(v + 0x1ffen, 3))).toBe("dev");
  });

  it("pinning follows the tables in RAM, not a side record of mmap", async () => {
    const h = await host();
    const p = h.createProcess();
    const v = p.mmap(0x2000);
    const leaf = p.pageTable.walk(v + 0x1000n, "read").steps[3];
    const other = h.ram.allocFrames(1);
    h.ram.write(other, bytes("swapped frame"));
    // Point the second page at another frame by editing the PTE in RAM.
    h.ram.writeU64(leaf.entryAddress, (leaf.entry & ~0x000f_ffff_ffff_f000n) | other);
    expect(text(p.read(v + 0x1000n, 13))).toBe("swapped frame");
    const { c, d } = container(h, p);
    c.mapDma({ vaddr: v, iova: 0x20_0000n, size: 0x2000, read: true });
    expect(dom(c).pageTable.walk(0x20_1000n).hpa).toBe(other);
    expect(text(d.dma.read(0x20_1000n, 13).data)).toBe("swapped frame");
  });
});

describe("read, write, view", () => {
  it("read and write go through the tables; unmapped is EFAULT; read-only memory refuses writes", async () => {
    const h = await host();
    const p = h.createProcess();
    const v = p.mmap(0x2000);
    const ro = p.mmap(0x1000, { write: false });
    p.write(v + 0x10n, bytes("hello"));
    expect(text(h.ram.read(hpaOf(p, v)! + 0x10n, 5))).toBe("hello");
    expect(text(p.read(v + 0x10n, 5))).toBe("hello");
    expect(p.read(v, 0).length).toBe(0);
    expect(errno(() => p.write(ro, bytes("x")))).toBe("EFAULT");
    expect(Array.from(p.read(ro, 2))).toEqual([0, 0]);
    expect(errno(() => p.read(ro + 0x1000n, 1))).toBe("EFAULT");
    expect(errno(() => p.read(ro + 0xfffn, 2))).toBe("EFAULT"); // runs off the end
    const before = h.ram.read(hpaOf(p, v + 0x1000n)!, 4);
    // A write that runs into unmapped memory changes nothing.
    expect(errno(() => p.write(ro - 0x2n, bytes("abcd")))).toBe("EFAULT");
    expect(Array.from(h.ram.read(hpaOf(p, v + 0x1000n)!, 4))).toEqual(Array.from(before));
    expect(errno(() => p.read(1n << 47n, 1))).toBe("EFAULT");
  });

  it("view is zero-copy over contiguous memory: the process, the CPU view and devices see the same bytes", async () => {
    const h = await host();
    const p = h.createProcess();
    const v = p.mmap(0x4000);
    const hpa = hpaOf(p, v)!;
    for (let off = 0x1000n; off < 0x4000n; off += 0x1000n) expect(hpaOf(p, v + off)).toBe(hpa + off);
    const guest = p.view(v, 0x4000);
    expect(guest.length).toBe(0x4000);
    guest.set(bytes("from the view"), 0x1ff8);
    expect(text(p.read(v + 0x1ff8n, 13))).toBe("from the view");
    p.write(v + 0x3000n, bytes("from write"));
    expect(text(guest.subarray(0x3000, 0x300a))).toBe("from write");
    const { c, d } = container(h, p);
    c.mapDma({ vaddr: v, iova: 0x4000_0000n, size: 0x4000, read: true, write: true });
    d.dma.write(0x4000_0100n, bytes("device"));
    expect(text(guest.subarray(0x100, 0x106))).toBe("device");
    expect(text(d.dma.read(0x4000_1ff8n, 13).data)).toBe("from the view");
    expect(errno(() => p.view(v + 0x3000n, 0x2000))).toBe("EFAULT");
  });
});

describe("munmap", () => {
  it("returns frames, punches holes, and refuses misaligned or out-of-range addresses", async () => {
    const h = await host();
    const p = h.createProcess();
    const v = p.mmap(0x8000);
    const free = h.ram.framesFree;
    p.munmap(v + 0x2000n, 0x2000);
    expect(h.ram.framesFree).toBe(free + 2);
    expect(p.mappings).toEqual([{ start: v, end: v + 0x2000n }, { start: v + 0x4000n, end: v + 0x8000n }]);
    expect(errno(() => p.read(v + 0x2000n, 1))).toBe("EFAULT");
    expect(p.read(v + 0x1fffn, 1).length).toBe(1);
    expect(p.read(v + 0x4000n, 1).length).toBe(1);
    expect(errno(() => p.munmap(v + 0x800n, 0x1000))).toBe("EINVAL");
    expect(errno(() => p.munmap((1n << 47n) - 0x1000n, 0x2000))).toBe("EINVAL");
    // Holes inside the range are fine; a partial page rounds up.
    p.munmap(v + 0x1000n, 0x4001);
    expect(p.mappings).toEqual([{ start: v, end: v + 0x1000n }, { start: v + 0x6000n, end: v + 0x8000n }]);
    expect(h.ram.framesFree).toBe(free + 2 + 3); // pages 1, 4 and 5
    expect(errno(() => p.read(v + 0x5000n, 1))).toBe("EFAULT");
    expect(p.read(v + 0x6000n, 1).length).toBe(1);
  });

  it("pinned pages keep their frames until the DMA mapping goes; DMA still reads the old data", async () => {
    const h = await host();
    const p = h.createProcess();
    const v = p.mmap(0x4000);
    p.write(v + 0x1000n, bytes("pinned data"));
    const { c, d } = container(h, p);
    c.mapDma({ vaddr: v + 0x1000n, iova: 0x10_0000n, size: 0x2000, read: true, write: true });
    const pinnedHpa = hpaOf(p, v + 0x1000n)!;
    const free = h.ram.framesFree;
    p.munmap(v, 0x4000);
    // The two unpinned pages went back; the pinned two did not.
    expect(h.ram.framesFree).toBe(free + 2);
    expect(errno(() => p.read(v + 0x1000n, 1))).toBe("EFAULT");
    expect(text(d.dma.read(0x10_0000n, 11).data)).toBe("pinned data");
    // The pinned frames are not handed out again.
    const q = h.createProcess();
    const x = q.mmap(0x100000);
    for (let off = 0n; off < 0x100000n; off += 0x1000n) {
      const f = hpaOf(q, x + off)!;
      expect(f === pinnedHpa || f === pinnedHpa + 0x1000n).toBe(false);
    }
    q.write(x, new Uint8Array(0x100000).fill(0xee));
    expect(text(d.dma.read(0x10_0000n, 11).data)).toBe("pinned data");
    // The device can still write them; nobody else sees it.
    expect(d.dma.write(0x10_1000n, bytes("late")).fault).toBeUndefined();
    q.munmap(x, 0x100000);
    const beforeUnmap = h.ram.framesFree;
    expect(c.unmapDma({ iova: 0x10_0000n, size: 0x2000 })).toBe(0x2000n);
    expect(h.ram.framesFree).toBe(beforeUnmap + 2);
    expect(p.lockedBytes).toBe(0n);
    expect(d.dma.read(0x10_0000n, 1).fault).toBeDefined();
  });
});

describe("locked memory", () => {
  async function limited(options: ProcessOptions) {
    const h = await host();
    const p = h.createProcess(options);
    const v = p.mmap(0x10000);
    return { h, p, v, ...container(h, p) };
  }

  it("is unlimited by default", async () => {
    const { p, c, v } = await limited({});
    expect(p.memlockLimit).toBe((1n << 64n) - 1n);
    c.mapDma({ vaddr: v, iova: 0x10_0000n, size: 0x10000, read: true });
    expect(p.lockedBytes).toBe(0x10000n);
  });

  it("reaching the limit is fine; going over it is ENOMEM with nothing mapped, pinned or counted", async () => {
    const { h, p, c, d, v } = await limited({ memlockLimit: 0x5000 });
    expect(p.memlockLimit).toBe(0x5000n);
    c.mapDma({ vaddr: v, iova: 0x10_0000n, size: 0x3000, read: true });
    expect(p.lockedBytes).toBe(0x3000n);
    const before = { free: h.ram.framesFree, avail: c.getInfo().dmaAvail };
    const image = Buffer.from(h.ram.view(0n, RAM));
    expect(errno(() => c.mapDma({ vaddr: v + 0x3000n, iova: 0x20_0000n, size: 0x3000, read: true, write: true }))).toBe("ENOMEM");
    expect(p.lockedBytes).toBe(0x3000n);
    expect(h.ram.framesFree).toBe(before.free);
    expect(c.getInfo().dmaAvail).toBe(before.avail);
    expect(c.mappings().length).toBe(1);
    expect(Buffer.from(h.ram.view(0n, RAM)).equals(image)).toBe(true);
    expect(dom(c).pageTable.walk(0x20_0000n).fault?.reason).toBe("not-present");
    expect(d.dma.read(0x20_0000n, 4).fault).toBeDefined();
    // Exactly up to the limit.
    c.mapDma({ vaddr: v + 0x3000n, iova: 0x20_0000n, size: 0x2000, read: true });
    expect(p.lockedBytes).toBe(0x5000n);
    expect(errno(() => c.mapDma({ vaddr: v + 0x5000n, iova: 0x30_0000n, size: 0x1000, read: true }))).toBe("ENOMEM");
    // Unmapping gives the allowance back.
    c.unmapDma({ iova: 0x10_0000n, size: 0x3000 });
    expect(p.lockedBytes).toBe(0x2000n);
    c.mapDma({ vaddr: v + 0x5000n, iova: 0x30_0000n, size: 0x3000, read: true });
    expect(p.lockedBytes).toBe(0x5000n);
  });

  it("the same memory mapped twice counts twice", async () => {
    const { p, c, v } = await limited({ memlockLimit: 0x6000 });
    c.mapDma({ vaddr: v, iova: 0x10_0000n, size: 0x4000, read: true });
    expect(errno(() => c.mapDma({ vaddr: v, iova: 0x20_0000n, size: 0x4000, read: true }))).toBe("ENOMEM");
    c.mapDma({ vaddr: v, iova: 0x20_0000n, size: 0x2000, read: true });
    expect(p.lockedBytes).toBe(0x6000n);
  });

  it("is counted per process: a map may pin another process's memory", async () => {
    const { h, p, c, d } = await limited({ memlockLimit: 0x1000 });
    const q = h.createProcess({ memlockLimit: 0x4000 });
    const w = q.mmap(0x4000);
    q.write(w, bytes("from q"));
    c.mapDma({ vaddr: w, iova: 0x40_0000n, size: 0x4000, read: true, process: q });
    expect(q.lockedBytes).toBe(0x4000n);
    expect(p.lockedBytes).toBe(0n);
    expect(text(d.dma.read(0x40_0000n, 6).data)).toBe("from q");
    expect(errno(() => c.mapDma({ vaddr: w, iova: 0x50_0000n, size: 0x1000, read: true, process: q }))).toBe("ENOMEM");
    c.unmapDma({ all: true });
    expect(q.lockedBytes).toBe(0n);
  });
});

describe("exit", () => {
  it("gives back every frame, tables included; the process is gone afterwards", async () => {
    const h = await host();
    const free = h.ram.framesFree;
    const p = h.createProcess();
    const v = p.mmap(0x30_0000);
    p.mmap(0x1000, { write: false });
    expect(h.ram.framesFree).toBeLessThan(free - 0x300);
    p.exit();
    expect(h.ram.framesFree).toBe(free);
    expect(errno(() => p.mmap(0x1000))).toBe("ENODEV");
    expect(errno(() => p.read(v, 1))).toBe("ENODEV");
    expect(errno(() => p.write(v, bytes("x")))).toBe("ENODEV");
    expect(errno(() => p.munmap(v, 0x1000))).toBe("ENODEV");
    p.exit(); // idempotent
    expect(h.ram.framesFree).toBe(free);
  });

  it("pinned frames outlive the process until the DMA mapping is removed", async () => {
    const h = await host();
    const free = h.ram.framesFree;
    const p = h.createProcess();
    const v = p.mmap(0x4000);
    p.write(v, bytes("outlives"));
    expect(free - h.ram.framesFree).toBe(1 + 3 + 4); // root, three tables, four pages
    const { c, d } = container(h, p);
    expect(free - h.ram.framesFree).toBe(1 + 3 + 4 + 1); // and the domain's root
    const beforeMap = h.ram.framesFree;
    c.mapDma({ vaddr: v, iova: 0x10_0000n, size: 0x4000, read: true, write: true });
    const tables = beforeMap - h.ram.framesFree; // the domain's tables for the mapping
    expect(tables).toBe(3);
    p.exit();
    // The process's root and tables went; the four pinned frames did not.
    expect(free - h.ram.framesFree).toBe(4 + 1 + tables);
    expect(text(d.dma.read(0x10_0000n, 8).data)).toBe("outlives");
    expect(c.unmapDma({ all: true })).toBe(0x4000n);
    expect(free - h.ram.framesFree).toBe(1 + tables);
    expect(p.lockedBytes).toBe(0n);
  });

  it("an exited process's memory cannot be pinned, even once its page-table context is reused", async () => {
    // MAP_DMA must not reach memory through a process that is gone: the
    // vaddr is no longer mapped in it (EFAULT), or the process is gone (ENODEV).
    const h = await host();
    const p1 = h.createProcess();
    const v1 = p1.mmap(0x4000);
    const { c, d } = container(h, p1);
    p1.exit();
    const p2 = h.createProcess();
    const v2 = p2.mmap(0x4000);
    p2.write(v2, bytes("p2 private"));
    expect(v2).toBe(v1);
    const free = h.ram.framesFree;
    const code = errno(() => c.mapDma({ vaddr: v1, iova: 0x10_0000n, size: 0x4000, read: true }));
    expect(["EFAULT", "ENODEV"]).toContain(code);
    expect(p1.lockedBytes).toBe(0n);
    expect(c.mappings()).toEqual([]);
    expect(h.ram.framesFree).toBe(free);
    expect(text(d.dma.read(0x10_0000n, 10).data)).not.toBe("p2 private");
  });
});
