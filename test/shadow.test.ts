// Shadow GPU page tables (issue 9, the GVT-g case): a guest's GGTT entries
// (GMA → GPA) shadowed as GMA → IOVA through an mdev's pins and the parent's
// DMA API; the GPU's DMA translated twice (shadow, then the parent's IOMMU
// domain) with faults named 'device-mmu' or 'iommu'; the VMM's unmap taking
// the shadow entries away before it returns. Directed cases, then the engine
// against the twin over random mixes, RAM image included.
import { describe, expect, it } from "vitest";
import type { Arch } from "../src/index.js";
import { errno } from "./support/outcome.js";
import { GUEST, PAGE, shadowMix, shadowRig, type MixOp, type Rig } from "./support/shadowrig.js";

const ARCHES: Arch[] = ["vtd", "smmuv3"];

function rig(opts: { twin?: boolean; arch?: Arch; onUnmap?: "invalidate-shadow" | "cache-only"; entries?: number } = {}): Promise<Rig> {
  return shadowRig({ format: "ggtt", entries: opts.entries ?? 1024 }, { twin: opts.twin, arch: opts.arch, shadow: opts.onUnmap ? { onUnmap: opts.onUnmap } : {} });
}

const pte = (gpa: bigint, write = true): bigint => gpa | 1n | (write ? 2n : 0n);
const text = (s: string) => new TextEncoder().encode(s);

describe("a shadow GGTT", () => {
  it.each(ARCHES)("%s: the GPU reads guest data by GMA through the shadow and the parent's IOMMU; the guest reads back its own GPAs", async (arch) => {
    const r = await rig({ arch });
    r.vmm.write(r.ram + 0x5000n, text("guest data"));
    r.gtt.guestWrite(7, pte(0x5000n));
    expect(r.gtt.guestRead(7)).toBe(pte(0x5000n));
    const got = r.gtt.dma.read(7n * PAGE, 10);
    expect(got.fault).toBeUndefined();
    expect(new TextDecoder().decode(got.data)).toBe("guest data");
    // The GPU writes through it too, and the guest sees it.
    expect(r.gtt.dma.write(7n * PAGE + 0x100n, text("from the GPU")).bytes).toBe(12);
    expect(new TextDecoder().decode(r.vmm.read(r.ram + 0x5100n, 12))).toBe("from the GPU");
    // The shadow entry holds an IOVA the parent's domain maps to the pinned frame, never a GPA.
    const hpa = r.c.external.pinned(0x5000n)!.hpa;
    const t = r.gtt.translate(7n * PAGE + 0x123n);
    expect(t.hpa).toBe(hpa + 0x123n);
    expect(t.bus! & 0xfffn).toBe(0x123n);
    expect(t.bus).not.toBe(0x5123n);
    // The parent reaches the same frame at that bus address through its own port (the IOMMU domain).
    const viaParent = new Uint8Array(10);
    expect(r.mdev.parentDma.readInto(t.bus! - 0x123n, viaParent).bytes).toBe(10);
    expect(new TextDecoder().decode(viaParent)).toBe("guest data");
    expect(r.gtt.translate(8n * PAGE)).toEqual({ fault: { reason: "not-present", stage: "device-mmu" } });
    expect(r.gtt.stats()).toEqual({ shadowEntries: 1, pinnedPages: 1, scratch: 0, cacheHits: 0, cacheMisses: 1, tablePages: 2, splits2M: 0, guestTables: 0 });
    expect(r.dma.stats().live).toBe(2); // the frame and the scratch page
    expect(hpa).toBeGreaterThan(0n);
  });

  it("a thousand entries over one guest page cost one pin and one map", async () => {
    const r = await rig();
    for (let i = 0; i < 1000; i++) r.gtt.guestWrite(i, pte(0x6000n));
    expect(r.gtt.stats()).toEqual({ shadowEntries: 1000, pinnedPages: 1, scratch: 0, cacheHits: 999, cacheMisses: 1, tablePages: 2, splits2M: 0, guestTables: 0 });
    expect(r.c.external.pinned(0x6000n)!.refs).toBe(1);
    // The last reference out unmaps and unpins.
    for (let i = 0; i < 999; i++) r.gtt.guestWrite(i, 0n);
    expect(r.gtt.stats().pinnedPages).toBe(1);
    r.gtt.guestWrite(999, pte(0x7000n));
    expect(r.gtt.stats().pinnedPages).toBe(1);
    expect(r.c.external.pinned(0x6000n)).toBeUndefined();
    expect(r.c.external.pinned(0x7000n)!.refs).toBe(1);
  });

  it("a not-present entry faults at the device MMU; a read-only one refuses the GPU's write there", async () => {
    const r = await rig();
    expect(r.gtt.dma.read(5n * PAGE, 4).fault?.stage).toBe("device-mmu");
    r.gtt.guestWrite(5, pte(0x8000n, false));
    expect(r.gtt.dma.read(5n * PAGE, 4).fault).toBeUndefined();
    const w = r.gtt.dma.write(5n * PAGE, new Uint8Array(4));
    expect(w.fault?.stage).toBe("device-mmu");
    expect(w.fault?.reason).toBe("permission");
    // Beyond the table's entries: the device MMU's input range.
    expect(r.gtt.dma.read(1024n * PAGE, 4).fault?.stage).toBe("device-mmu");
  });

  it("a frame that cannot be pinned gets the scratch page; rewriting the entry recovers", async () => {
    const r = await rig();
    // A GPA no container mapping covers: the pin is refused, the entry aims at scratch.
    r.gtt.guestWrite(9, pte(GUEST + 0x1000n));
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 1, scratch: 1, pinnedPages: 0 });
    const got = r.gtt.dma.read(9n * PAGE, 8);
    expect(got.fault).toBeUndefined();
    expect([...got.data]).toEqual(new Array(8).fill(0));
    expect(r.gtt.guestRead(9)).toBe(pte(GUEST + 0x1000n));
    r.gtt.guestWrite(9, pte(0x2000n));
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 1, scratch: 0, pinnedPages: 1 });
  });

  it("refuses bad arguments with nothing changed", async () => {
    const r = await rig();
    r.gtt.guestWrite(1, pte(0x3000n));
    const before = JSON.stringify(r.gtt.stats());
    expect(errno(() => r.gtt.guestWrite(1024, pte(0x3000n)))).toBe("EINVAL");
    expect(errno(() => r.gtt.guestWrite(-1, pte(0x3000n)))).toBe("EINVAL");
    expect(errno(() => r.gtt.guestWrite(1.5, pte(0x3000n)))).toBe("EINVAL");
    expect(errno(() => r.gtt.guestWrite(1, -1n))).toBe("EINVAL");
    expect(errno(() => r.gtt.guestRead(4096))).toBe("EINVAL");
    expect(JSON.stringify(r.gtt.stats())).toBe(before);
    expect(errno(() => r.mdev.shadowGtt({ format: "x86-64" } as never, { dma: r.dma }))).toBe("EINVAL");
    expect(errno(() => r.mdev.shadowGtt({ format: "ggtt", entries: 1000 }, { dma: r.dma }))).toBe("EINVAL");
    expect(errno(() => r.mdev.shadowGtt({ format: "ggtt", entries: 1024 }, undefined as never))).toBe("EINVAL");
    expect(errno(() => r.mdev.shadowGtt({ format: "ggtt", entries: 1024 }, { dma: r.dma, onUnmap: "sometimes" as never }))).toBe("EINVAL");
    r.h.addDevice({ bdf: "0000:00:03.0", driver: "host" });
    expect(errno(() => r.mdev.shadowGtt({ format: "ggtt", entries: 1024 }, { dma: r.h.dmaApi("0000:00:03.0") }))).toBe("EINVAL");
  });
});

describe("the VMM unmaps guest memory the shadow uses", () => {
  it("the shadow entries go before unmapDma returns: the GPU faults at its own MMU, the guest's entry is unchanged, nothing stays pinned or mapped", async () => {
    const r = await rig();
    r.gtt.guestWrite(3, pte(0x5000n));
    r.gtt.guestWrite(4, pte(0x20_0000n));
    const live = r.dma.stats().live;
    r.c.unmapDma({ iova: 0n, size: GUEST });
    expect(r.gtt.guestRead(3)).toBe(pte(0x5000n));
    const f = r.gtt.dma.read(3n * PAGE, 4).fault;
    expect(f?.stage).toBe("device-mmu");
    expect(f?.reason).toBe("not-present");
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 0, pinnedPages: 0 });
    expect(r.dma.stats().live).toBe(live - 2);
    expect(r.c.external.total).toBe(0);
    expect(r.h.warnings).toEqual([]);
  });

  it("'cache-only' (kvmgt's way) leaves entries on the dead IOVA: the GPU faults at the IOMMU, then reaches whoever gets that IOVA next", async () => {
    const r = await rig({ onUnmap: "cache-only" });
    r.gtt.guestWrite(3, pte(0x5000n));
    r.c.unmapDma({ iova: 0n, size: GUEST });
    expect(r.gtt.stats()).toMatchObject({ pinnedPages: 0 });
    expect(r.gtt.dma.read(3n * PAGE, 4).fault?.stage).toBe("iommu");
    // Another buffer of the host driver's gets that IOVA: the GPU now reads it through the stale entry.
    const secret = r.h.ram.allocFrames(1);
    r.h.ram.write(secret, text("someone else's"));
    r.dma.mapPage(secret, PAGE, "to-device");
    const leak = r.gtt.dma.read(3n * PAGE, 14);
    expect(leak.fault).toBeUndefined();
    expect(new TextDecoder().decode(leak.data)).toBe("someone else's");
  });

  it("the vendor's own callback still runs after the shadow's, and a shadow outlives unmaps of memory it does not use", async () => {
    const r = await rig();
    const seen: bigint[] = [];
    r.mdev.onDmaUnmap((iova) => { seen.push(iova); });
    const extra = r.vmm.mmap(PAGE);
    r.c.mapDma({ vaddr: extra, iova: GUEST, size: PAGE, read: true, write: true });
    r.gtt.guestWrite(1, pte(GUEST));
    r.gtt.guestWrite(2, pte(0x1000n));
    r.c.unmapDma({ iova: GUEST, size: PAGE });
    expect(seen).toEqual([GUEST]);
    expect(r.gtt.stats()).toMatchObject({ shadowEntries: 1, pinnedPages: 1 });
    expect(r.gtt.dma.read(2n * PAGE, 4).fault).toBeUndefined();
  });

  it("destroy unmaps and unpins everything and frees the scratch page and the GGTT", async () => {
    const r = await rig();
    const free = r.h.ram.framesFree;
    r.gtt.guestWrite(1, pte(0x1000n));
    r.gtt.guestWrite(2, pte(0x9999_0000n)); // scratch
    r.gtt.destroy();
    expect(r.c.external.total).toBe(0);
    expect(r.dma.stats().live).toBe(0);
    expect(errno(() => r.gtt.guestWrite(1, 0n))).toBe("ENODEV");
    // The GGTT's two frames and the scratch page are back.
    expect(r.h.ram.framesFree).toBe(free + 3);
    // With no shadow and no callback, pins are refused again.
    expect(errno(() => r.mdev.pinPages(0n, 1))).toBe("EINVAL");
  });
});

describe("engine and twin agree on a shadow", () => {
  it.each(ARCHES)("%s: random guest GTT writes, VMM map/unmap, vendor pins and GPU DMA give the same results, stats and RAM", async (arch) => {
    const sides = [await rig({ arch }), await rig({ arch, twin: true })];
    let seed = 11;
    const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
    const ops: MixOp[] = [
      () => { const i = rnd(1024), gpa = BigInt(rnd(4096 + 64)) * PAGE, flags = BigInt(rnd(4)); return (r) => r.gtt.guestWrite(i, gpa | flags); },
      () => { const i = rnd(1024); return (r) => r.gtt.guestRead(i); },
      () => { const i = rnd(1024), len = 1 + rnd(6000), fill = rnd(256), off = BigInt(rnd(64)); return (r) => r.gtt.dma.write(BigInt(i) * PAGE + off, new Uint8Array(len).fill(fill)); },
      () => { const i = rnd(1024), len = 1 + rnd(6000); return (r) => { const x = r.gtt.dma.read(BigInt(i) * PAGE, len); return { bytes: x.bytes, fault: x.fault, sum: x.data.reduce((a, b) => a + b, 0) }; }; },
      () => { const at = BigInt(rnd(4096)) * PAGE, pages = 1 + rnd(64); return (r) => r.c.unmapDma({ iova: at, size: BigInt(pages) * PAGE }); },
      () => { const at = BigInt(rnd(4096)) * PAGE, pages = 1 + rnd(16), write = rnd(3) !== 0; return (r) => r.c.mapDma({ vaddr: r.ram + at, iova: at, size: BigInt(pages) * PAGE, read: true, write }); },
      () => { const at = BigInt(rnd(4096)) * PAGE, n = 1 + rnd(8); return (r) => r.mdev.pinPages(at, n, { write: true }); },
      () => { const at = BigInt(rnd(4096)) * PAGE, n = 1 + rnd(8); return (r) => r.mdev.unpinPages(at, n); },
      () => { const at = BigInt(rnd(4096)) * PAGE; return (r) => r.vmm.write(r.ram + at, text(`page ${at}`)); },
    ];
    shadowMix(sides, ops, 1500, rnd);
  });
});
