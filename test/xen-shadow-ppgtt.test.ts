// A shadow PPGTT over a Xen backend (issue 10's XenGT case with per-process
// tables): the served VM's 4-level GPU table lives in its own memory; the
// backend reads it through its foreign access and write-tracks its pages, so
// the VM's own stores (vm.write) trap to the shadow; the shadow's tables are
// fresh pages of the backend at BFNs above its memory, and its leaves BFNs
// mapped by delegated mapping. The GPU's DMA by GMA goes shadow → BFN → MFN.
// Directed cases, then the engine against the twin over a random mix, every
// GPU read checked against a walk of the guest's own tables.
import { describe, expect, it } from "vitest";
import type { DmaPort, Host, ShadowGtt, Vm, XenShadowOptions } from "../src/index.js";
import { errno } from "./support/outcome.js";
import { XEN_GPU as GPU, xenWorld } from "./support/xenrig.js";
import { seededRandom } from "./support/runs.js";

const RAM = 32 << 20;
const PAGE = 0x1000n;
const BACKEND_PAGES = 64;
const GUEST_PAGES = 1024;
const P = 1n, RW = 2n, PS = 0x80n;
const PML4 = 0x1000n, PDPT = 0x2000n, PD = 0x3000n, PT = 0x4000n;
const DATA = 0x20_0000n;

const u64 = (v: bigint) => { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, v, true); return b; };
const tag = (gfn: bigint) => new TextEncoder().encode(`gfn${String(gfn).padStart(5, "0")};`);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

interface Rig { host: Host; hv: ReturnType<Host["hypervisor"]>; backend: Vm<DmaPort>; guest: Vm<DmaPort>; gtt: ShadowGtt }

async function rig(opts: { twin?: boolean; shadow?: Omit<XenShadowOptions, "vm"> } = {}): Promise<Rig> {
  const { host, hv, backend, guest } = await xenWorld({ twin: opts.twin, ram: RAM, backendPages: BACKEND_PAGES, guestPages: GUEST_PAGES });
  // Data pages carry their tag (table pages stay zero: a tag there would read as entries).
  for (let g = DATA >> 12n; g < BigInt(GUEST_PAGES); g++) guest.write(g * PAGE + 0x800n, tag(g));
  hv.serve(backend, guest);
  const gtt = backend.shadowGtt({ format: "x86-64", levels: 4 }, { vm: guest, ...opts.shadow });
  return { host, hv, backend, guest, gtt };
}

/** The guest stores an entry of its table itself. */
const store = (r: Rig, gpa: bigint, v: bigint) => r.guest.write(gpa, u64(v));
function tree(r: Rig): void {
  store(r, PML4, PDPT | P | RW);
  store(r, PDPT, PD | P | RW);
  store(r, PD, PT | P | RW);
}

/** Where the guest's own 4-level table sends gma (offset 0x800: a page's tag): the tag, or the GPU's own fault. */
function guestWalk(vm: Vm, gma: bigint): string {
  let table = PML4;
  for (let level = 3; level >= 0; level--) {
    const at = table + ((gma >> BigInt(12 + 9 * level)) & 511n) * 8n;
    const e = new DataView(vm.read(at, 8).buffer).getBigUint64(0, true);
    if ((e & P) === 0n) return "fault device-mmu";
    const addr = e & 0x000f_ffff_ffff_f000n;
    if (level === 1 && (e & PS) !== 0n) return text(tag((addr >> 12n) + ((gma >> 12n) & 511n)));
    if (level === 0) return text(tag(addr >> 12n));
    table = addr;
  }
  throw new Error("unreachable");
}

describe("a shadow PPGTT over a Xen backend", () => {
  it("the GPU reads the VM's data by GMA: shadow tables are the backend's pages at BFNs, leaves delegated BFNs, no MFN anywhere", async () => {
    const r = await rig();
    tree(r);
    store(r, PT + 5n * 8n, DATA | P | RW);
    const root = r.gtt.setRoot(PML4);
    // The root is a BFN above the backend's own memory: its own page, not a delegated one.
    expect(root >> 12n).toBeGreaterThanOrEqual(BigInt(BACKEND_PAGES));
    expect(r.backend.iommu.query(root >> 12n)).toBeUndefined();
    expect(r.backend.device(GPU).dma.read(root, 8).fault).toBeUndefined();
    const got = r.gtt.dma.read(5n * PAGE + 0x800n, 9);
    expect(got.fault).toBeUndefined();
    expect(text(got.data)).toBe(text(tag(DATA >> 12n)));
    // The leaf is one delegated page, listed by (vm, gfn).
    expect(r.backend.iommu.mappings().map((m) => [m.vm, m.gfn, m.write])).toEqual([[r.guest.id, DATA >> 12n, true]]);
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 4, pinnedPages: 1, tablePages: 4, guestTables: 4 });
    // The GPU writes, the VM sees it.
    expect(r.gtt.dma.write(5n * PAGE + 0x10n, new TextEncoder().encode("from the GPU")).bytes).toBe(12);
    expect(text(r.guest.read(DATA + 0x10n, 12))).toBe("from the GPU");
    // A delegated map at a shadow table's BFN is EEXIST: the page is the backend's own.
    expect(errno(() => r.backend.iommu.map({ bfn: root >> 12n, vm: r.guest, gfn: 1 }))).toBe("EEXIST");
    expect(r.backend.iommu.unmap({ bfn: root >> 12n })).toBe(0);
    expect(r.backend.device(GPU).dma.read(root, 8).fault).toBeUndefined();
  });

  it("the VM's own stores to its tracked tables trap to the shadow; stores elsewhere do not", async () => {
    const r = await rig();
    tree(r);
    r.gtt.setRoot(PML4);
    expect(r.gtt.dma.read(7n * PAGE, 4).fault?.stage).toBe("device-mmu");
    // The guest writes a PTE with a plain store: the shadow follows.
    store(r, PT + 7n * 8n, (DATA + PAGE) | P);
    expect(text(r.gtt.dma.read(7n * PAGE + 0x800n, 9).data)).toBe(text(tag((DATA >> 12n) + 1n)));
    expect(r.gtt.guestRead({ gpa: PT + 7n * 8n })).toBe((DATA + PAGE) | P);
    // Read-only leaf: the GPU's write faults at its own MMU.
    expect(r.gtt.dma.write(7n * PAGE, new Uint8Array(1)).fault?.stage).toBe("device-mmu");
    // A store of a few bytes is merged into its entry: clearing P alone takes the leaf away.
    r.guest.write(PT + 7n * 8n, new Uint8Array([Number(((DATA + PAGE) & 0xffn))]));
    expect(r.gtt.dma.read(7n * PAGE, 4).fault?.stage).toBe("device-mmu");
    expect(r.backend.iommu.mappings()).toEqual([]);
    // A store spanning two entries and the page's end into an untracked page.
    const two = new Uint8Array(16);
    two.set(u64(DATA | P | RW), 0);
    two.set(u64((DATA + 2n * PAGE) | P | RW), 8);
    r.guest.write(PT + 510n * 8n, two);
    expect(text(r.gtt.dma.read(510n * PAGE + 0x800n, 9).data)).toBe(text(tag(DATA >> 12n)));
    expect(text(r.gtt.dma.read(511n * PAGE + 0x800n, 9).data)).toBe(text(tag((DATA >> 12n) + 2n)));
    // A PDE store moves a whole subtree: the new PT page becomes tracked, the old one not.
    const PT2 = 0x5000n;
    store(r, PT2 + 3n * 8n, (DATA + 3n * PAGE) | P);
    store(r, PD, PT2 | P | RW);
    expect(text(r.gtt.dma.read(3n * PAGE + 0x800n, 9).data)).toBe(text(tag((DATA >> 12n) + 3n)));
    expect(r.gtt.dma.read(510n * PAGE, 4).fault?.stage).toBe("device-mmu");
    store(r, PT + 9n * 8n, DATA | P);
    expect(r.gtt.dma.read(9n * PAGE, 4).fault?.stage).toBe("device-mmu");
    // Data pages are not tracked: a store there is data.
    store(r, DATA, 0x1234n);
    expect(r.gtt.stats()).toMatchObject({ guestTables: 4, pinnedPages: 1 });
  });

  it("a guest 2 MiB leaf is one 2 MiB shadow leaf over 512 BFNs (MFNs need not be contiguous); pages2M: false splits it", async () => {
    for (const pages2M of [true, false]) {
      const r = await rig({ shadow: { pages2M } });
      tree(r);
      store(r, PD + 8n, DATA | P | RW | PS);
      r.gtt.setRoot(PML4);
      for (const k of [0n, 1n, 300n, 511n]) {
        const got = r.gtt.dma.read(0x20_0000n + k * PAGE + 0x800n, 9);
        expect(text(got.data), `page ${k}`).toBe(text(tag((DATA >> 12n) + k)));
      }
      const bfns = r.backend.iommu.mappings().map((m) => Number(m.bfn));
      expect(bfns.length).toBe(512);
      if (pages2M) expect(bfns[0] % 512).toBe(0);
      expect(r.gtt.stats().splits2M).toBe(pages2M ? 0 : 1);
    }
  });

  it("unserve: the default keeps the shadow entries, the GPU faults at the IOMMU, the VM's stores no longer trap; invalidate-shadow takes them away", async () => {
    for (const onUnmap of ["cache-only", "invalidate-shadow"] as const) {
      const r = await rig({ shadow: { onUnmap } });
      tree(r);
      store(r, PT + 5n * 8n, DATA | P | RW);
      r.gtt.setRoot(PML4);
      expect(r.gtt.dma.read(5n * PAGE, 4).fault).toBeUndefined();
      r.hv.unserve(r.backend, r.guest);
      const f = r.gtt.dma.read(5n * PAGE, 4).fault;
      expect(f?.stage).toBe(onUnmap === "cache-only" ? "iommu" : "device-mmu");
      expect(r.gtt.stats().guestTables).toBe(0);
      // The guest's stores are plain again; nothing reaches its memory through the GPU.
      store(r, PT + 6n * 8n, DATA | P | RW);
      expect(r.gtt.dma.read(6n * PAGE, 4).fault).toBeDefined();
      expect(r.backend.iommu.mappings()).toEqual([]);
      // The shadow cannot read the VM's tables any more.
      expect(errno(() => r.gtt.setRoot(PML4))).toBe("EPERM");
      r.gtt.destroy();
    }
  });

  it("destroying the guest or the backend frees every page the shadow took; a refused setRoot keeps nothing", async () => {
    const r = await rig();
    r.gtt.destroy();
    const free0 = r.host.ram.framesFree;
    const gtt = r.backend.shadowGtt({ format: "x86-64", levels: 4 }, { vm: r.guest });
    tree(r);
    store(r, PT, DATA | P | RW);
    gtt.setRoot(PML4);
    expect(r.host.ram.framesFree).toBeLessThan(free0);
    gtt.destroy();
    expect(r.host.ram.framesFree).toBe(free0);
    expect(r.backend.iommu.mappings()).toEqual([]);
    // The backend destroyed with a live shadow: its table pages go with it.
    const r2 = await rig();
    tree(r2);
    r2.gtt.setRoot(PML4);
    const before = r2.host.ram.framesFree;
    r2.backend.destroy();
    expect(r2.host.ram.framesFree).toBeGreaterThan(before);
    expect(errno(() => r2.gtt.setRoot(PML4))).toBe("ENODEV");
    // A root beyond the VM's memory: EINVAL, nothing tracked or taken.
    const r3 = await rig();
    const free3 = r3.host.ram.framesFree;
    expect(errno(() => r3.gtt.setRoot(BigInt(GUEST_PAGES) * PAGE))).toBe("EINVAL");
    expect(r3.gtt.stats()).toMatchObject({ guestTables: 0, shadowEntries: 0 });
    expect(r3.host.ram.framesFree).toBe(free3);
    // The guest destroyed: the backend's GPU faults; nothing of the guest's is mapped.
    tree(r3);
    store(r3, PT, DATA | P | RW);
    r3.gtt.setRoot(PML4);
    r3.guest.destroy();
    expect(r3.gtt.dma.read(0n, 4).fault?.stage).toBe("iommu");
    expect(r3.backend.iommu.mappings()).toEqual([]);
  });

  it("a store the shadow cannot take (no frame for a new shadow table) still lands; that entry is not present until the guest writes it again", async () => {
    const r = await rig();
    tree(r);
    r.gtt.setRoot(PML4);
    const PT2 = 0x5000n;
    store(r, PT2, DATA | P);
    const held: bigint[] = [];
    for (;;) { try { held.push(r.host.ram.allocFrames(1)); } catch { break; } }
    const before = r.gtt.stats();
    store(r, PD + 8n, PT2 | P | RW);
    // The guest's memory has its value; the shadow has nothing there (the GPU faults at its own MMU), and nothing leaked.
    expect(r.gtt.guestRead({ gpa: PD + 8n })).toBe(PT2 | P | RW);
    expect(r.gtt.dma.read(0x20_0000n, 4).fault?.stage).toBe("device-mmu");
    expect(r.gtt.stats()).toEqual(before);
    for (const hpa of held) r.host.ram.freeFrames(hpa, 1);
    store(r, PD + 8n, PT2 | P | RW);
    expect(text(r.gtt.dma.read(0x20_0000n + 0x800n, 9).data)).toBe(text(tag(DATA >> 12n)));
  });

  it("one ioreq server per VM: a second backend's shadow cannot track the VM's tables (EBUSY) until the first lets go; two shadows of one backend can", async () => {
    const r = await rig();
    tree(r);
    store(r, PT, DATA | P | RW);
    r.gtt.setRoot(PML4);
    r.host.addDevice({ bdf: "0000:00:03.0", driver: null });
    const other = r.hv.createVm({ name: "gpu2", memory: 16 * 4096, devices: ["0000:00:03.0"] });
    r.hv.serve(other, r.guest);
    const theirs = other.shadowGtt({ format: "x86-64", levels: 4 }, { vm: r.guest });
    expect(errno(() => theirs.setRoot(PML4))).toBe("EBUSY");
    expect(theirs.stats()).toMatchObject({ guestTables: 0, shadowEntries: 0 });
    // A second shadow of the same backend (another process's table sharing pages) tracks them too; a store reaches both.
    const second = r.backend.shadowGtt({ format: "x86-64", levels: 4 }, { vm: r.guest });
    second.setRoot(PML4);
    store(r, PT + 8n, (DATA + PAGE) | P);
    for (const g of [r.gtt, second]) expect(text(g.dma.read(PAGE + 0x800n, 9).data)).toBe(text(tag((DATA >> 12n) + 1n)));
    r.gtt.destroy();
    expect(errno(() => theirs.setRoot(PML4))).toBe("EBUSY");
    second.destroy();
    theirs.setRoot(PML4);
    expect(text(theirs.dma.read(PAGE + 0x800n, 9).data)).toBe(text(tag((DATA >> 12n) + 1n)));
  });

  it("a bus frame the backend mapped itself is never offered again for a shadow table: the shadow takes the next one", async () => {
    const r = await rig();
    tree(r);
    store(r, PT, DATA | P | RW);
    // The root took the range's first BFN; the backend maps guest pages over the next few itself.
    const first = Number(r.gtt.setRoot(PML4) >> 12n);
    r.gtt.destroy();
    const gtt = r.backend.shadowGtt({ format: "x86-64", levels: 4 }, { vm: r.guest });
    r.backend.iommu.map({ bfn: first + 2, vm: r.guest, gfn: 600, count: 3 });
    gtt.setRoot(PML4);
    expect(text(gtt.dma.read(0x800n, 9).data)).toBe(text(tag(DATA >> 12n)));
    expect(gtt.stats()).toMatchObject({ tablePages: 4, guestTables: 4 });
    // The backend's own pages are still its: nothing of the shadow's landed on them.
    expect(r.backend.iommu.mappings().filter((m) => m.gfn >= 600n).map((m) => Number(m.bfn))).toEqual([first + 2, first + 3, first + 4]);
  });

  it("options: pages2M is for a PPGTT; a bad layout is EINVAL", async () => {
    const r = await rig();
    expect(errno(() => r.backend.shadowGtt({ format: "ggtt", entries: 512 }, { vm: r.guest, pages2M: true }))).toBe("EINVAL");
    expect(errno(() => r.backend.shadowGtt({ format: "x86-64", levels: 4 }, { vm: r.guest, pages2M: "yes" as never }))).toBe("EINVAL");
    expect(errno(() => r.backend.shadowGtt({ format: "x86-64", levels: 5 } as never, { vm: r.guest }))).toBe("EINVAL");
  });

  it("engine and twin agree over a random mix of guest stores, setRoot, GPU reads and writes, and each read matches a walk of the guest's own tables", async () => {
    const sides = [await rig(), await rig({ twin: true })];
    const rnd = seededRandom();
    const tables = [PML4, PDPT, PD, PT, 0x5000n, 0x6000n];
    const INDICES = [0, 1, 2, 3, 7, 511];
    for (const s of sides) { tree(s); s.gtt.setRoot(PML4); }
    const outcomes = new Map<string, number>();
    for (let step = 0; step < 1200; step++) {
      const k = rnd(10);
      const gma = BigInt(rnd(4)) * 0x20_0000n + BigInt(rnd(8)) * PAGE + 0x800n;
      // A store to an entry of one of the guest's tables, among a few indices so trees form (and stay small).
      const level = rnd(tables.length);
      const at = tables[level] + BigInt(INDICES[rnd(INDICES.length)]) * 8n;
      const child = level < 3 ? tables[Math.min(level + 1 + rnd(2), tables.length - 1)] : DATA + BigInt(rnd(64)) * PAGE;
      const value = rnd(6) === 0 ? 0n : child | P | (rnd(3) === 0 ? 0n : RW);
      const results = sides.map((s) => {
        // Every 50 steps the tree and a leaf are stored again, so reads that reach data never rest on chance.
        if (step % 50 === 0) { tree(s); store(s, PT + (gma >> 12n & 7n) * 8n, DATA | P); return "repair"; }
        if (k < 5) { store(s, at, value); return "store"; }
        if (k < 9) {
          const got = s.gtt.dma.read(gma, 9);
          return got.fault ? `fault ${got.fault.stage}` : text(got.data);
        }
        return s.gtt.setRoot(PML4) >> 12n > 0n ? "root" : "";
      });
      expect(results[1], `step ${step} (seed ${rnd.seed})`).toEqual(results[0]);
      // A read is what a walk of the guest's own tables says: the tag of the page it names, or the GPU's own fault.
      if (step % 50 !== 0 && k >= 5 && k < 9) expect(results[0], `step ${step} (seed ${rnd.seed}), GMA ${gma.toString(16)}`).toBe(guestWalk(sides[0].guest, gma));
      const key = results[0].startsWith("gfn") ? "hit" : results[0];
      outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
    }
    console.log([...outcomes].map(([o, n]) => `${o} ${n}`).join(", "));
    expect(outcomes.get("hit") ?? 0).toBeGreaterThan(20);
    expect(outcomes.get("fault device-mmu") ?? 0).toBeGreaterThan(20);
    expect(outcomes.get("fault iommu")).toBeUndefined();
  });
});
