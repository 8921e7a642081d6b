// A map over tables an unmap emptied: the large leaf takes their place and
// their pages go back, for host tables, guest tables (to the guest's
// allocator) and the container's stage 2 (a pinned map, which a failure
// undoes exactly). A table that still holds a leaf is never replaced.
import { describe, expect, it } from "vitest";
import { createHost, PAGE_2M, PAGE_4K, type Domain, type Host } from "../src/index.js";
import { errno } from "./support/outcome.js";
import * as abi from "../src/engine/abi.js";

const MiB = 1n << 20n;

/** The table pages a page table holds: the host's frames in use, less those of `baseline`. */
const held = (h: Host, baseline: number): number => baseline - h.ram.framesFree;

describe("host tables", () => {
  it("a 2 MiB map over an emptied table installs the leaf and frees the table", async () => {
    const h = await createHost({ ramSize: 16 * 1024 * 1024 });
    const free0 = h.ram.framesFree;
    const pt = h.createPageTable({ format: "vtd-sl", levels: 4 });
    const iova = 0x40000000n, hpa = 0x600000n;
    for (let o = 0n; o < 4n * PAGE_4K; o += PAGE_4K) pt.map(iova + o, hpa + o, PAGE_4K, { write: true });
    expect(pt.walk(iova).pageSize).toBe(PAGE_4K);
    expect(pt.unmap(iova, 4n * PAGE_4K)).toBe(4n * PAGE_4K);
    expect(held(h, free0)).toBe(4); // root, and the tables down to the emptied one
    pt.map(iova, hpa, PAGE_2M, { write: true });
    expect(pt.walk(iova + 0x1234n).pageSize).toBe(PAGE_2M);
    expect(held(h, free0)).toBe(3);
    pt.destroy();
    expect(h.ram.framesFree).toBe(free0);
  });

  it("a table that still holds a leaf is EEXIST, and nothing changes", async () => {
    const h = await createHost({ ramSize: 16 * 1024 * 1024 });
    const pt = h.createPageTable({ format: "x86-64", levels: 4 });
    pt.map(0x200000n, 0x400000n, PAGE_4K);
    pt.map(0x3ff000n, 0x5ff000n, PAGE_4K);
    pt.unmap(0x200000n, PAGE_4K);
    const before = { free: h.ram.framesFree, ram: h.ram.view(0, 16 * 1024 * 1024).slice() };
    expect(errno(() => pt.map(0x200000n, 0x400000n, PAGE_2M))).toBe("EEXIST");
    expect(h.ram.framesFree).toBe(before.free);
    expect(Buffer.from(h.ram.view(0, 16 * 1024 * 1024)).equals(Buffer.from(before.ram))).toBe(true);
    expect(pt.iovaToPhys(0x3ff000n)).toBe(0x5ff000n);
  });
});

/** A VT-d host whose nesting container maps a process's 4 MiB at GPA 0. */
async function nestingVm() {
  const host = await createHost({ arch: "vtd", ramSize: 32 * 1024 * 1024 });
  host.addDevice({ bdf: "0000:01:00.0" });
  const vmm = host.createProcess({ memlockLimit: 64n * MiB });
  const ram = vmm.mmap(4n * MiB);
  const c = host.openContainer({ process: vmm });
  host.openGroup(0).setContainer(c);
  c.setIommu("nesting");
  c.mapDma({ vaddr: ram, iova: 0n, size: 4n * MiB, read: true, write: true });
  return { host, vmm, ram, c };
}

describe("guest tables", () => {
  it("the tables a large leaf replaces go back to the guest's allocator", async () => {
    const { vmm, ram, c } = await nestingVm();
    let next = 0x100000n;
    const given: bigint[] = [], back: bigint[] = [];
    const pt = c.gpa.pageTable({
      format: "x86-64",
      allocTable: () => { given.push(next); next += PAGE_4K; return given[given.length - 1]; },
      freeTable: (gpa) => back.push(gpa),
    });
    pt.map(0x40200000n, 0x200000n, PAGE_4K, { write: true });
    expect(given).toHaveLength(4); // the root, then the level 3, 2 and 1 tables
    pt.unmap(0x40200000n, PAGE_4K);
    expect(back).toEqual([]);
    pt.map(0x40200000n, 0x200000n, PAGE_2M, { write: true });
    expect(back).toEqual([given[3]]);
    // The leaf is in the guest's page directory.
    const pd = given[2];
    const entry = new DataView(vmm.read(ram + pd + 8n * 1n, 8).buffer).getBigUint64(0, true);
    expect(entry & 0x80n).toBe(0x80n); // PS: a 2 MiB leaf in the page directory
    // A 1 GiB map over the emptied page directory gives it back.
    pt.unmap(0x40200000n, PAGE_2M);
    back.length = 0;
    pt.map(0x40000000n, 0n, 1n << 30n);
    expect(back).toEqual([given[2]]);
  });
});

describe("guest tables: the list of pages a map gives back", () => {
  it("a map that would give back more emptied tables than the list holds is ENOMEM, and nothing changes", async () => {
    const { host, c } = await nestingVm();
    let next = 0x100000n;
    const pt = c.gpa.pageTable({ format: "x86-64", allocTable: () => (next += PAGE_4K) - PAGE_4K });
    pt.map(0x40200000n, 0x200000n, PAGE_4K);
    pt.unmap(0x40200000n, PAGE_4K);
    // The engine's call, with room for no page in the list (the facade gives it the staging area after the pool).
    const e = host.engine, id = (pt as unknown as { ctx: { id: number } }).ctx.id;
    const before = Buffer.from(host.ram.view(0, 32 * 1024 * 1024));
    const prot = abi.PERM_R | abi.PERM_U;
    expect(e.wasm.ptGuestMap(id, 0x40200000n, 0x403fffffn, 0x200000n, prot, e.staging, 0, e.staging, 0)).toBe(abi.ERR_ENOMEM);
    expect(Buffer.from(host.ram.view(0, 32 * 1024 * 1024)).equals(before)).toBe(true);
    expect(e.wasm.ptGuestMap(id, 0x40200000n, 0x403fffffn, 0x200000n, prot, e.staging, 0, e.staging, 1)).toBe(abi.ST_OK);
    expect(e.wasm.guestTablesReleased()).toBe(1);
  });
});

describe("the container's stage 2", () => {
  async function setup() {
    const host = await createHost({ arch: "smmuv3", ramSize: 32 * 1024 * 1024 });
    host.addDevice({ bdf: "0000:01:00.0" });
    const vmm = host.createProcess({ memlockLimit: 64n * MiB });
    const c = host.openContainer({ process: vmm });
    const g = host.openGroup(0);
    g.setContainer(c);
    c.setIommu("type1v2");
    // Frames laid out so the process's first 512 pages are a 2 MiB-aligned
    // run. Frames are taken lowest first: the mmap takes three for its page
    // tables (the last, the one for the second 2 MiB, lands between the
    // runs, so page 512 is not next to page 511), then the pages.
    while ((host.ram.allocFrames(1) + 4n * PAGE_4K) % PAGE_2M !== 0n);
    const vaddr = vmm.mmap(4n * MiB);
    const first = vmm.pageTable.walk(vaddr, "read").hpa!;
    expect(first % PAGE_2M).toBe(0n);
    expect(vmm.pageTable.walk(vaddr + PAGE_2M - PAGE_4K, "read").hpa).toBe(first + PAGE_2M - PAGE_4K);
    expect(vmm.pageTable.walk(vaddr + PAGE_2M, "read").hpa).not.toBe(first + PAGE_2M);
    return { host, vmm, c, g, vaddr };
  }

  it("a pinned map over an emptied table gets the 2 MiB leaf; its table frame goes back", async () => {
    const { host, c, g, vaddr } = await setup();
    const iova = 0x40000000n;
    c.mapDma({ vaddr, iova, size: PAGE_4K, read: true, write: true });
    c.unmapDma({ iova, size: PAGE_4K });
    const free = host.ram.framesFree;
    c.mapDma({ vaddr, iova, size: PAGE_2M, read: true, write: true });
    expect(host.ram.framesFree).toBe(free + 1);
    const dev = g.device("0000:01:00.0");
    expect(dev.dma.read(iova + 0x1000n, 4).data).toHaveLength(4);
    expect((c.domain as unknown as Domain).walk(iova).pageSize).toBe(PAGE_2M);
  });

  it("a pinned map that fails after replacing a table is undone exactly: the table is linked back", async () => {
    const { host, vmm, c, vaddr } = await setup();
    const iova = 0x40000000n;
    c.mapDma({ vaddr, iova, size: PAGE_4K, read: true, write: true });
    c.unmapDma({ iova, size: PAGE_4K });
    // No frame left for a new table: the map's second run (at iova + 2 MiB, in an empty slot) needs one.
    while (host.ram.framesFree > 0) host.ram.allocFrames(1);
    const before = { ram: host.ram.view(0, 32 * 1024 * 1024).slice(), locked: vmm.lockedBytes };
    // The first run (2 MiB, aligned) replaces the emptied table; the second runs out of frames: ENOMEM.
    expect(errno(() => c.mapDma({ vaddr, iova, size: PAGE_2M + 0x20000n, read: true, write: true }))).toBe("ENOMEM");
    expect(host.ram.framesFree).toBe(0);
    expect(vmm.lockedBytes).toBe(before.locked);
    expect((c.domain as unknown as Domain).walk(iova).steps).toHaveLength(4); // the emptied table is linked again
    expect(Buffer.from(host.ram.view(0, 32 * 1024 * 1024)).equals(Buffer.from(before.ram))).toBe(true);
  });
});
