// The shadow PPGTT (issue 9, GVT-g's per-process GTT): the guest's 4-level
// x86-64 table in guest memory (GMA → GPA), tracked and shadowed into tables
// the helper owns and DMA-maps for the GPU (GMA → IOVA), which the GPU walks
// through the parent's IOMMU domain. Trapped guest writes (new translation
// first, old one after), 2 MiB leaves as one or split, the VMM's unmap of a
// leaf frame or a table page, and the engine against the twin over random
// mixes, RAM image included.
import { Buffer } from "node:buffer";
import { describe, expect, it } from "vitest";
import { KernelBug, type Arch, type Host, type Process } from "../src/index.js";
import { errno } from "./support/outcome.js";
import { seededRandom } from "./support/runs.js";
import { GPU, GUEST, PAGE, shadowMix, shadowRig, type MixOp, type Rig, type RigOptions } from "./support/shadowrig.js";

const MB2 = 0x20_0000n;
const ARCHES: Arch[] = ["vtd", "smmuv3"];
const P = 1n, RW = 2n, PS = 0x80n;

function rig(opts: Omit<RigOptions, "shadow"> & { onUnmap?: "invalidate-shadow" | "cache-only"; pages2M?: boolean } = {}): Promise<Rig> {
  const { onUnmap, pages2M, ...rest } = opts;
  return shadowRig({ format: "x86-64", levels: 4 }, { ...rest, shadow: { ...(onUnmap ? { onUnmap } : {}), ...(pages2M !== undefined ? { pages2M } : {}) } });
}

const text = (s: string) => new TextEncoder().encode(s);
const u64 = (v: bigint) => { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, v, true); return b; };
/** The guest stores an entry itself (before the table is tracked, or bypassing the trap). */
const store = (r: Rig, gpa: bigint, v: bigint) => r.vmm.write(r.ram + gpa, u64(v));
const idx = (gma: bigint, level: number) => Number((gma >> BigInt(12 + 9 * level)) & 511n);

// A guest tree: PML4 at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000, covering GMA 0..2 MiB through the PT.
const PML4 = 0x1000n, PDPT = 0x2000n, PD = 0x3000n, PT = 0x4000n;
function guestTree(r: Rig): void {
  store(r, PML4, PDPT | P | RW);
  store(r, PDPT, PD | P | RW);
  store(r, PD, PT | P | RW);
}

describe("a shadow PPGTT", () => {
  it.each(ARCHES)("%s: the GPU reads and writes guest data by GMA through the 4-level guest table, the shadow and the IOMMU", async (arch) => {
    const r = await rig({ arch });
    guestTree(r);
    store(r, PT + 5n * 8n, 0x10_0000n | P | RW);
    r.vmm.write(r.ram + 0x10_0000n, text("guest data"));
    const root = r.gtt.setRoot(PML4);
    // The root is an IOVA of the parent's domain: the GPU reads its tables through the IOMMU.
    expect(r.h.device(GPU).dma.read(root, 8).fault).toBeUndefined();
    const got = r.gtt.dma.read(5n * PAGE, 10);
    expect(got.fault).toBeUndefined();
    expect(new TextDecoder().decode(got.data)).toBe("guest data");
    expect(r.gtt.dma.write(5n * PAGE + 0x10n, text("from the GPU")).bytes).toBe(12);
    expect(new TextDecoder().decode(r.vmm.read(r.ram + 0x10_0010n, 12))).toBe("from the GPU");
    // The guest's entries stay GPAs.
    expect(r.gtt.guestRead({ gpa: PT + 5n * 8n })).toBe(0x10_0000n | P | RW);
    expect(r.gtt.guestRead({ gpa: PML4 })).toBe(PDPT | P | RW);
    expect(r.gtt.stats()).toEqual({ shadowEntries: 4, pinnedPages: 1, scratch: 0, cacheHits: 0, cacheMisses: 1, tablePages: 4, splits2M: 0, guestTables: 4 });
    // Not mapped: the device MMU faults; a read-only leaf refuses the GPU's write there.
    expect(r.gtt.dma.read(6n * PAGE, 4).fault?.stage).toBe("device-mmu");
    r.gtt.trapWrite(PT + 6n * 8n, 0x10_1000n | P);
    expect(r.gtt.dma.read(6n * PAGE, 4).fault).toBeUndefined();
    const w = r.gtt.dma.write(6n * PAGE, new Uint8Array(4));
    expect(w.fault?.stage).toBe("device-mmu");
    expect(w.fault?.reason).toBe("permission");
    // setRoot again: the same root IOVA, the tree read afresh.
    expect(r.gtt.setRoot(PML4)).toBe(root);
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 5, pinnedPages: 2, tablePages: 4, guestTables: 4 });
  });

  it("one guest page used by many PTEs costs one pin; trapped writes add the new translation before the old one goes", async () => {
    const r = await rig();
    guestTree(r);
    r.gtt.setRoot(PML4);
    for (let i = 0n; i < 512n; i++) expect(r.gtt.trapWrite(PT + i * 8n, 0x20_0000n | P | RW)).toBe(true);
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 3 + 512, pinnedPages: 1, cacheHits: 511, cacheMisses: 1 });
    expect(r.c.external.pinned(0x20_0000n)!.refs).toBe(1);
    // Rewriting an entry with the same frame keeps the pin and the mapping.
    const live = r.dma.stats().live;
    r.gtt.trapWrite(PT, 0x20_0000n | P);
    expect(r.dma.stats().live).toBe(live);
    for (let i = 0n; i < 511n; i++) r.gtt.trapWrite(PT + i * 8n, 0n);
    expect(r.gtt.stats().pinnedPages).toBe(1);
    r.gtt.trapWrite(PT + 511n * 8n, 0x30_0000n | P | RW);
    expect(r.c.external.pinned(0x20_0000n)).toBeUndefined();
    expect(r.c.external.pinned(0x30_0000n)!.refs).toBe(1);
    expect(r.gtt.guestRead({ gpa: PT + 511n * 8n })).toBe(0x30_0000n | P | RW);
  });

  it("a PDE change reshadows: the old subtree goes (its guest table untracked), the new one is read and tracked", async () => {
    const r = await rig();
    guestTree(r);
    store(r, PT, 0x10_0000n | P | RW);
    const PT2 = 0x5000n;
    store(r, PT2, 0x11_0000n | P | RW);
    r.vmm.write(r.ram + 0x10_0000n, text("one"));
    r.vmm.write(r.ram + 0x11_0000n, text("two"));
    r.gtt.setRoot(PML4);
    expect(new TextDecoder().decode(r.gtt.dma.read(0n, 3).data)).toBe("one");
    expect(r.gtt.trapWrite(PD, PT2 | P | RW)).toBe(true);
    expect(new TextDecoder().decode(r.gtt.dma.read(0n, 3).data)).toBe("two");
    expect(r.gtt.trapWrite(PT, 0n)).toBe(false); // PT is no longer tracked
    expect(r.c.external.pinned(0x10_0000n)).toBeUndefined();
    expect(r.c.external.pinned(PT)).toBeUndefined();
    expect(r.c.external.pinned(PT2)!.refs).toBe(1);
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 4, pinnedPages: 1, tablePages: 4, guestTables: 4 });
    // A PDPE cleared: the GPU faults at its MMU, the subtree (PD, PT2, the leaf) is gone.
    r.gtt.trapWrite(PDPT, 0n);
    expect(r.gtt.dma.read(0n, 3).fault?.stage).toBe("device-mmu");
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 1, pinnedPages: 0, tablePages: 2, guestTables: 2 });
    expect(r.c.external.pinned(PD)).toBeUndefined();
  });

  it("a guest table page shared by two PDEs is shadowed for both ranges, and one trapped write changes both", async () => {
    const r = await rig();
    guestTree(r);
    store(r, PD + 8n, PT | P | RW); // GMA 2 MiB..4 MiB through the same PT
    store(r, PT + 3n * 8n, 0x10_0000n | P | RW);
    r.vmm.write(r.ram + 0x10_0000n, text("shared"));
    r.gtt.setRoot(PML4);
    for (const gma of [3n * PAGE, MB2 + 3n * PAGE]) expect(new TextDecoder().decode(r.gtt.dma.read(gma, 6).data)).toBe("shared");
    expect(r.gtt.stats()).toMatchObject({ pinnedPages: 1, cacheMisses: 1, cacheHits: 1, guestTables: 4, tablePages: 5 });
    r.vmm.write(r.ram + 0x12_0000n, text("moved"));
    r.gtt.trapWrite(PT + 3n * 8n, 0x12_0000n | P | RW);
    for (const gma of [3n * PAGE, MB2 + 3n * PAGE]) expect(new TextDecoder().decode(r.gtt.dma.read(gma, 5).data)).toBe("moved");
    // One of the two PDEs goes: the page stays tracked through the other.
    r.gtt.trapWrite(PD, 0n);
    expect(r.gtt.dma.read(3n * PAGE, 1).fault?.stage).toBe("device-mmu");
    expect(r.gtt.dma.read(MB2 + 3n * PAGE, 1).fault).toBeUndefined();
    expect(r.gtt.trapWrite(PT, 0x13_0000n | P)).toBe(true);
    expect(r.gtt.dma.read(MB2, 1).fault).toBeUndefined();
  });

  it("a write to a page that is no tracked table is ignored (false), or refused by guestWrite (EINVAL); nothing is written", async () => {
    const r = await rig();
    guestTree(r);
    r.gtt.setRoot(PML4);
    expect(r.gtt.trapWrite(0x9000n, 0x1234_5000n | P)).toBe(false);
    expect([...r.vmm.read(r.ram + 0x9000n, 8)]).toEqual(new Array(8).fill(0));
    expect(errno(() => r.gtt.guestWrite({ gpa: 0x9000n }, 1n))).toBe("EINVAL");
    expect(errno(() => r.gtt.guestRead({ gpa: 0x9000n }))).toBe("EINVAL");
  });
});

describe("large guest leaves", () => {
  const data = (r: Rig, gpa: bigint, s: string) => r.vmm.write(r.ram + gpa, text(s));
  const leaf2M = (r: Rig) => { guestTree(r); store(r, PD + 8n, 0x40_0000n | P | RW | PS); data(r, 0x40_0000n + 0x1_2340n, "in the big page"); };

  it("a 2 MiB guest leaf over HPA-contiguous frames is one 2 MiB shadow leaf: 512 pins, one mapping", async () => {
    const r = await rig();
    leaf2M(r);
    const live = r.dma.stats().live;
    r.gtt.setRoot(PML4);
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 4, pinnedPages: 512, splits2M: 0, tablePages: 4 });
    expect(r.dma.stats().live).toBe(live + 4); // the three shadow tables below the root, and the 2 MiB run
    const got = r.gtt.dma.read(MB2 + 0x1_2340n, 15);
    expect(new TextDecoder().decode(got.data)).toBe("in the big page");
    expect(r.gtt.guestRead({ gpa: PD + 8n })).toBe(0x40_0000n | P | RW | PS);
    expect(r.c.external.pinned(0x40_0000n + 511n * PAGE)!.refs).toBe(1);
    r.gtt.trapWrite(PD + 8n, 0n);
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 3, pinnedPages: 0 });
    expect(r.c.external.pinned(0x40_0000n)).toBeUndefined();
    expect(r.gtt.dma.read(MB2, 1).fault?.stage).toBe("device-mmu");
  });

  it("is split into 512 shadow entries when the GPU takes no 2 MiB pages (pages2M: false); the guest still sees its one entry", async () => {
    const r = await rig({ pages2M: false });
    leaf2M(r);
    r.gtt.setRoot(PML4);
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 4 + 512, pinnedPages: 512, splits2M: 1, tablePages: 5 });
    expect(new TextDecoder().decode(r.gtt.dma.read(MB2 + 0x1_2340n, 15).data)).toBe("in the big page");
    expect(r.gtt.guestRead({ gpa: PD + 8n })).toBe(0x40_0000n | P | RW | PS);
    r.gtt.trapWrite(PD + 8n, 0x40_0000n | P | PS); // read-only now
    expect(r.gtt.dma.write(MB2 + 0x1000n, new Uint8Array(1)).fault?.reason).toBe("permission");
    r.gtt.trapWrite(PD + 8n, 0n);
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 3, pinnedPages: 0, splits2M: 0, tablePages: 4 });
  });

  it("is split when its frames are not HPA-contiguous", async () => {
    // A page in the middle of the run gets another frame: unmapped, a frame taken elsewhere, mapped again.
    const r = await rig({
      before: (h, vmm, ram) => {
        vmm.munmap(ram + 0x40_0000n + 0x8_0000n, PAGE);
        h.ram.allocFrames(1);
        expect(vmm.mmap(PAGE)).toBe(ram + 0x40_0000n + 0x8_0000n);
      },
    });
    leaf2M(r);
    r.gtt.setRoot(PML4);
    expect(r.gtt.stats()).toMatchObject({ pinnedPages: 512, splits2M: 1 });
    expect(new TextDecoder().decode(r.gtt.dma.read(MB2 + 0x1_2340n, 15).data)).toBe("in the big page");
  });

  it("a 1 GiB guest leaf is not shadowed: the GPU faults at its own MMU in that GiB; the guest keeps its value", async () => {
    const r = await rig();
    guestTree(r);
    store(r, PDPT + 8n, 0x4000_0000n | P | RW | PS);
    r.gtt.setRoot(PML4);
    expect(r.gtt.dma.read(0x4000_0000n + 0x5000n, 4).fault?.stage).toBe("device-mmu");
    expect(r.gtt.guestRead({ gpa: PDPT + 8n })).toBe(0x4000_0000n | P | RW | PS);
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 3, pinnedPages: 0 });
    // So is PS in a PML4E (reserved) and a 2 MiB leaf with address bits 20:13 set.
    r.gtt.trapWrite(PML4 + 8n, 0x8000_0000n | P | PS);
    r.gtt.trapWrite(PD + 16n, 0x40_2000n | P | PS);
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 3, pinnedPages: 0 });
  });
});

describe("the VMM unmaps guest memory the shadow uses", () => {
  /** One page of guest memory at GPA GUEST, in a mapping of its own. */
  const extra = (r: Rig) => {
    const v = r.vmm.mmap(PAGE);
    r.c.mapDma({ vaddr: v, iova: GUEST, size: PAGE, read: true, write: true });
    return v;
  };

  it("a leaf frame: its shadow entries are cleared before unmapDma returns (the GPU faults at its MMU); the guest's entry is unchanged", async () => {
    const r = await rig();
    const v = extra(r);
    r.vmm.write(v, text("extra"));
    guestTree(r);
    store(r, PT, GUEST | P | RW);
    store(r, PT + 8n, GUEST | P | RW);
    store(r, PT + 16n, 0x10_0000n | P | RW);
    r.gtt.setRoot(PML4);
    expect(new TextDecoder().decode(r.gtt.dma.read(PAGE, 5).data)).toBe("extra");
    const live = r.dma.stats().live;
    r.c.unmapDma({ iova: GUEST, size: PAGE });
    for (const gma of [0n, PAGE]) {
      const f = r.gtt.dma.read(gma, 4).fault;
      expect(f?.stage).toBe("device-mmu");
      expect(f?.reason).toBe("not-present");
    }
    expect(r.gtt.dma.read(2n * PAGE, 4).fault).toBeUndefined();
    expect(r.gtt.guestRead({ gpa: PT })).toBe(GUEST | P | RW);
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 4, pinnedPages: 1 });
    expect(r.dma.stats().live).toBe(live - 1);
    expect(r.h.warnings).toEqual([]);
  });

  it("a guest table page: its shadow subtree goes (the frames it alone used are unmapped and unpinned) and it is no longer tracked", async () => {
    const r = await rig();
    const v = extra(r);
    guestTree(r);
    store(r, PD, GUEST | P | RW); // the PT lives in the extra page
    r.vmm.write(v, u64(0x10_0000n | P | RW));
    r.vmm.write(v + 8n, u64(0x11_0000n | P | RW));
    r.gtt.setRoot(PML4);
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 5, pinnedPages: 2, tablePages: 4, guestTables: 4 });
    expect(r.c.external.pinned(GUEST)!.refs).toBe(1);
    r.c.unmapDma({ iova: GUEST, size: PAGE });
    expect(r.gtt.dma.read(0n, 4).fault?.stage).toBe("device-mmu");
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 2, pinnedPages: 0, tablePages: 3, guestTables: 3 });
    expect(r.gtt.trapWrite(GUEST, 0n)).toBe(false);
    expect(r.c.external.total).toBe(3); // the PML4, PDPT and PD, tracked
    // The guest maps a PT again: the PDE's write shadows it.
    store(r, PT, 0x12_0000n | P);
    r.gtt.trapWrite(PD, PT | P | RW);
    expect(r.gtt.dma.read(0n, 4).fault).toBeUndefined();
  });

  it("the root table page: the whole shadow goes, the root IOVA stays; setRoot builds it again", async () => {
    const r = await rig();
    const v = extra(r);
    guestTree(r);
    store(r, PT, 0x10_0000n | P | RW);
    r.vmm.write(v, u64(PDPT | P | RW));
    const root = r.gtt.setRoot(GUEST);
    expect(r.gtt.dma.read(0n, 4).fault).toBeUndefined();
    r.c.unmapDma({ iova: GUEST, size: PAGE });
    expect(r.gtt.dma.read(0n, 4).fault?.stage).toBe("device-mmu");
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 0, pinnedPages: 0, tablePages: 1, guestTables: 0 });
    expect(r.c.external.total).toBe(0);
    expect(r.gtt.setRoot(PML4)).toBe(root);
    expect(r.gtt.dma.read(0n, 4).fault).toBeUndefined();
  });

  it("'cache-only' (kvmgt's way) leaves entries on the dead IOVA: the GPU faults at the IOMMU, then reaches whoever gets that IOVA next", async () => {
    const r = await rig({ onUnmap: "cache-only" });
    extra(r);
    guestTree(r);
    store(r, PT, GUEST | P | RW);
    r.gtt.setRoot(PML4);
    r.c.unmapDma({ iova: GUEST, size: PAGE });
    expect(r.gtt.stats()).toMatchObject({ pinnedPages: 0, shadowEntries: 4 });
    expect(r.gtt.dma.read(0n, 4).fault?.stage).toBe("iommu");
    const secret = r.h.ram.allocFrames(1);
    r.h.ram.write(secret, text("someone else's"));
    r.dma.mapPage(secret, PAGE, "to-device");
    const leak = r.gtt.dma.read(0n, 14);
    expect(leak.fault).toBeUndefined();
    expect(new TextDecoder().decode(leak.data)).toBe("someone else's");
  });

  it("a 2 MiB run over two mappings goes whichever of them is unmapped; 'cache-only' misses it from the second (kvmgt's lookup by start) and VFIO's retry loop wedges", async () => {
    for (const onUnmap of ["invalidate-shadow", "cache-only"] as const) {
      const r = await rig({ onUnmap, chunk: 0x10_0000n });
      guestTree(r);
      store(r, PD + 8n, 0x40_0000n | P | RW | PS); // GPA 4..6 MiB: two 1 MiB mappings
      r.gtt.setRoot(PML4);
      expect(r.gtt.stats()).toMatchObject({ pinnedPages: 512, splits2M: 0 });
      if (onUnmap === "invalidate-shadow") {
        r.c.unmapDma({ iova: 0x50_0000n, size: 0x10_0000n });
        expect(r.gtt.stats()).toMatchObject({ pinnedPages: 0 });
        expect(r.gtt.dma.read(MB2, 4).fault?.stage).toBe("device-mmu");
        expect(r.c.external.pinned(0x40_0000n)).toBeUndefined();
      } else {
        expect(() => r.c.unmapDma({ iova: 0x50_0000n, size: 0x10_0000n })).toThrow(KernelBug);
      }
    }
  });

  it("destroy unmaps and unpins everything, untracks every guest table and frees every frame it took", async () => {
    const r = await rig();
    const free = r.h.ram.framesFree;
    guestTree(r);
    store(r, PD + 8n, 0x40_0000n | P | RW | PS);
    store(r, PD + 16n, 0x60_0000n | P | RW | PS);
    store(r, PT, 0x10_0000n | P | RW);
    store(r, PT + 8n, 0x9999_0000n | P | RW); // scratch
    r.gtt.setRoot(PML4);
    expect(r.gtt.stats()).toMatchObject({ scratch: 1, pinnedPages: 1025, guestTables: 4, tablePages: 4 });
    r.gtt.destroy();
    expect(r.c.external.total).toBe(0);
    expect(r.dma.stats().live).toBe(0);
    expect(errno(() => r.gtt.setRoot(PML4))).toBe("ENODEV");
    expect(errno(() => r.gtt.trapWrite(PD, 0n))).toBe("ENODEV");
    // The root and the scratch page the rig's shadow took are back too.
    expect(r.h.ram.framesFree).toBe(free + 2);
  });
});

describe("refusals", () => {
  it("bad layouts, options and addresses: EINVAL, nothing changed", async () => {
    const r = await rig();
    guestTree(r);
    r.gtt.setRoot(PML4);
    const before = JSON.stringify(r.gtt.stats());
    const guest = () => Buffer.from(r.vmm.read(r.ram, 0x5000)).toString("hex");
    const image = guest();
    expect(errno(() => r.gtt.setRoot(PML4 + 8n))).toBe("EINVAL");
    expect(errno(() => r.gtt.setRoot(GUEST + PAGE))).toBe("EINVAL"); // no mapping there
    expect(errno(() => r.gtt.setRoot(-1n))).toBe("EINVAL");
    expect(errno(() => r.gtt.trapWrite(PT + 4n, 1n))).toBe("EINVAL");
    expect(errno(() => r.gtt.trapWrite(PT, -1n))).toBe("EINVAL");
    expect(errno(() => r.gtt.guestWrite(3, 1n))).toBe("EINVAL");
    expect(errno(() => r.gtt.guestWrite({ gpa: PT, more: 1 } as never, 1n))).toBe("EINVAL");
    expect(errno(() => r.gtt.guestRead({ gpa: PT + 1n }))).toBe("EINVAL");
    expect(errno(() => r.gtt.guestRead(0))).toBe("EINVAL");
    expect(JSON.stringify(r.gtt.stats())).toBe(before);
    expect(guest()).toBe(image);
    for (const bad of [{ format: "x86-64", levels: 5 }, { format: "x86-64" }, { format: "x86-64", levels: 4, entries: 512 }, { format: "arm64", levels: 4 }]) {
      expect(errno(() => r.mdev.shadowGtt(bad as never, { dma: r.dma }))).toBe("EINVAL");
    }
    expect(errno(() => r.mdev.shadowGtt({ format: "x86-64", levels: 4 }, { dma: r.dma, pages2M: "yes" as never }))).toBe("EINVAL");
    expect(errno(() => r.mdev.shadowGtt({ format: "ggtt", entries: 512 }, { dma: r.dma, pages2M: true }))).toBe("EINVAL");
    const ggtt = r.mdev.shadowGtt({ format: "ggtt", entries: 512 }, { dma: r.dma });
    expect(errno(() => ggtt.setRoot(PML4))).toBe("EINVAL");
    expect(errno(() => ggtt.trapWrite(PT, 0n))).toBe("EINVAL");
    expect(errno(() => ggtt.guestWrite({ gpa: PT }, 0n))).toBe("EINVAL");
  });

  it("no frame left for a new shadow table: ENOMEM, the guest's entry and the shadow as they were", async () => {
    const r = await rig();
    guestTree(r);
    store(r, 0x5000n, 0x10_0000n | P | RW);
    r.gtt.setRoot(PML4);
    const before = JSON.stringify(r.gtt.stats());
    const left = r.h.ram.framesFree;
    const taken = r.h.ram.allocFrames(left);
    expect(errno(() => r.gtt.trapWrite(PD + 8n, 0x5000n | P | RW))).toBe("ENOMEM");
    expect(r.gtt.guestRead({ gpa: PD + 8n })).toBe(0n);
    expect(JSON.stringify(r.gtt.stats())).toBe(before);
    expect(errno(() => r.gtt.setRoot(PML4))).toBe("ENOMEM");
    expect(JSON.stringify(r.gtt.stats())).toBe(before);
    r.h.ram.freeFrames(taken, left);
    expect(r.gtt.trapWrite(PD + 8n, 0x5000n | P | RW)).toBe(true);
    expect(r.gtt.dma.read(MB2, 4).fault).toBeUndefined();
  });
});

/** The GPA the guest's own tables (in VMM memory) give for gma, walked as the GPU would: undefined where it would fault. */
function guestWalk(r: Rig, root: bigint, gma: bigint): bigint | undefined {
  let table = root;
  for (let level = 3; level >= 0; level--) {
    if (table >= GUEST) return undefined;
    const pte = new DataView(r.vmm.read(r.ram + table + BigInt(idx(gma, level)) * 8n, 8).buffer).getBigUint64(0, true);
    if ((pte & P) === 0n) return undefined;
    const addr = pte & 0x000f_ffff_ffff_f000n;
    if (level === 0) return addr | (gma & 0xfffn);
    if ((pte & PS) !== 0n) return level === 1 && (pte & 0x1f_e000n) === 0n ? addr | (gma & (MB2 - 1n)) : undefined;
    table = addr;
  }
  return undefined;
}

describe("engine and twin agree on a shadow PPGTT", () => {
  const CHUNK = 0x4_0000n; // guest memory in 64 mappings of 256 KiB
  const cases: [Arch, boolean][] = [["vtd", true], ["smmuv3", true], ["vtd", false]];
  it.each(cases)("%s, pages2M %s: random guest table writes, setRoot, VMM map/unmap, vendor pins and GPU DMA give the same results, stats and RAM", async (arch, pages2M) => {
    // One page of the 2 MiB run at GPA 6 MiB on another frame: a 2 MiB leaf there is split.
    const before = (h: Host, vmm: Process, ram: bigint) => {
      vmm.munmap(ram + 0x60_0000n + 0x3_0000n, PAGE);
      h.ram.allocFrames(1);
      vmm.mmap(PAGE);
    };
    const sides = [await rig({ arch, pages2M, chunk: CHUNK, before }), await rig({ arch, pages2M, chunk: CHUNK, before, twin: true })];
    const rnd = seededRandom(7);
    // Guest tables live in the 8 pages from GPA 0x1000; entries are picked among a few indices so trees form.
    const IDX = [0n, 1n, 511n];
    const tablePage = () => BigInt(1 + rnd(8)) * PAGE;
    const at = () => tablePage() + IDX[rnd(IDX.length)] * 8n;
    const value = (): bigint => {
      const k = rnd(10);
      if (k < 5) return tablePage() | P | (rnd(4) !== 0 ? RW : 0n);
      if (k < 7) return (BigInt(rnd(4096 + 64)) * PAGE) | P | (rnd(3) !== 0 ? RW : 0n);
      if (k < 8) return (BigInt(rnd(9)) * MB2) | P | PS | (rnd(2) !== 0 ? RW : 0n);
      if (k < 9) return 0n;
      return (BigInt(rnd(2 ** 20)) * PAGE) | BigInt(rnd(256));
    };
    const gma = (): bigint => {
      const [i4, i3, i2] = [IDX[rnd(IDX.length)], IDX[rnd(IDX.length)], IDX[rnd(IDX.length)]];
      const i1 = rnd(2) === 0 ? IDX[rnd(IDX.length)] : BigInt(rnd(512));
      const g = (i4 << 39n) | (i3 << 30n) | (i2 << 21n) | (i1 << 12n) | BigInt(rnd(4096));
      return i4 >= 256n ? g | 0xffff_0000_0000_0000n : g;
    };
    const ops: [number, MixOp][] = [
      [6, () => { const a = at(), v = value(); return (r) => r.gtt.trapWrite(a, v) || (store(r, a, v), "stored"); }],
      [1, () => { const a = tablePage(); return (r) => { r.gtt.setRoot(a); roots.set(r, a); return true; }; }],
      [1, () => { const a = at(); return (r) => r.gtt.guestRead({ gpa: a }); }],
      [3, () => {
        const g = gma(), len = 1 + rnd(6000);
        return (r) => {
          const x = r.gtt.dma.read(g, len);
          if (!x.fault || x.bytes > 0) reads.push(`${sides.indexOf(r)} ${checkRead(r, g, x.data)}`);
          return { bytes: x.bytes, fault: x.fault, sum: x.data.reduce((a, b) => a + b, 0) };
        };
      }],
      // The GPU's writes keep off the guest's table pages (where the guest maps them as data): those writes are not trapped.
      [2, () => { const g = gma(), len = 1 + rnd(6000), fill = rnd(256); return (r) => (touchesTables(r, g, len) ? "skipped" : r.gtt.dma.write(g, new Uint8Array(len).fill(fill))); }],
      // The chunk holding the guest tables goes now and then, and comes back soon after.
      [1, () => { const a = BigInt(rnd(8) === 0 ? 0 : 1 + rnd(63)) * CHUNK, n = 1n + BigInt(rnd(3)); return (r) => r.c.unmapDma({ iova: a, size: n * CHUNK }); }],
      [1, () => { const a = BigInt(rnd(2) === 0 ? 0 : rnd(64)) * CHUNK, write = rnd(8) !== 0; return (r) => r.c.mapDma({ vaddr: r.ram + a, iova: a, size: CHUNK, read: true, write }); }],
      [1, () => { const a = BigInt(rnd(4096)) * PAGE, n = 1 + rnd(8); return (r) => r.mdev.pinPages(a, n, { write: true }); }],
      [1, () => { const a = BigInt(rnd(4096)) * PAGE, n = 1 + rnd(8); return (r) => r.mdev.unpinPages(a, n); }],
      // Data only: the guest's own stores to its tables are trapped (trapWrite above).
      [1, () => { const a = BigInt(16 + rnd(4080)) * PAGE; return (r) => r.vmm.write(r.ram + a, text(`page ${a}`)); }],
    ];
    // The oracle: a GPU read that got bytes got the guest's own, at the GPA the guest's tables give (a frame outside guest memory: the scratch page).
    const roots = new Map<Rig, bigint>(sides.map((r) => [r, PML4]));
    const reads: string[] = [];
    const checkRead = (r: Rig, g: bigint, data: Uint8Array): string => {
      const gpa = guestWalk(r, roots.get(r)!, g);
      expect(gpa, `GMA ${g.toString(16)} is not mapped in the guest's tables`).toBeDefined();
      const n = Math.min(data.length, Number(PAGE - (g & (PAGE - 1n))));
      if (gpa! < GUEST && Buffer.from(data.subarray(0, n)).equals(Buffer.from(r.vmm.read(r.ram + gpa!, n)))) return "guest";
      // Else a leaf whose frame could not be mapped when it was shadowed (beyond guest memory, or its mapping gone or read-only then).
      expect(r.gtt.stats().scratch, `GMA ${g.toString(16)} → GPA ${gpa!.toString(16)}`).toBeGreaterThan(0);
      return "scratch";
    };
    const touchesTables = (r: Rig, g: bigint, len: number): boolean => {
      for (let p = g & ~(PAGE - 1n); p < g + BigInt(len); p += PAGE) {
        const gpa = guestWalk(r, roots.get(r)!, p);
        if (gpa !== undefined && gpa < 16n * PAGE) return true;
      }
      return false;
    };
    const weighted = ops.flatMap(([w, op]) => new Array<typeof op>(w).fill(op));
    for (const r of sides) {
      // A first tree: PML4 0x1000 → PDPT 0x2000 → PD 0x3000 → PT 0x4000, a 4 KiB leaf and a 2 MiB one.
      guestTree(r);
      store(r, PT, 0x10_0000n | P | RW);
      store(r, PD + 8n, 0x60_0000n | P | RW | PS);
      r.gtt.setRoot(PML4);
    }
    shadowMix(sides, weighted, 1500, rnd);
    // The GPU reached guest data through trees the mix built, many times.
    expect(reads.filter((x) => x === "0 guest").length).toBeGreaterThan(15);
    // Torn down, both give back the same: nothing pinned for the shadow, the same frames free.
    for (const r of sides) r.gtt.destroy();
    expect(sides[1].h.ram.framesFree).toBe(sides[0].h.ram.framesFree);
    expect(sides[1].c.external.total).toBe(sides[0].c.external.total);
  });
});
