// The shadow PPGTT (issue 9, GVT-g's per-process GTT): the guest's 4-level
// x86-64 table in guest memory (GMA → GPA), tracked and shadowed into tables
// the helper owns and DMA-maps for the GPU (GMA → IOVA), which the GPU walks
// through the parent's IOMMU domain. Trapped guest writes (new translation
// first, old one after), 2 MiB leaves as one or split, the VMM's unmap of a
// leaf frame or a table page, and the engine against the twin over random
// mixes, RAM image included.
import { Buffer } from "node:buffer";
import { describe, expect, it } from "vitest";
import { IommuError, type Arch } from "../src/index.js";
import { errno } from "./support/outcome.js";
import { GPU, GUEST, PAGE, RAM, shadowRig, type Rig, type RigOptions } from "./support/shadowrig.js";

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
const entry = (table: bigint, gma: bigint, level: number) => table + BigInt(idx(gma, level)) * 8n;

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
