// Dirty tracking a migrating VMM can trust: an unmap can return the dirty
// pages of what it removes (VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP), and only
// pages a mapping covers are ever reported (never the MSI doorbell). A
// property test drives random maps, device writes, bitmap reads and unmaps
// against a model: every written page is reported exactly once, by a bitmap
// read or by the unmap that removed it, and no other page ever is.
import { describe, expect, it } from "vitest";
import { createHost, type Container, type Process, type VfioDevice } from "../src/index.js";
import { errno } from "./support/outcome.js";
import { runs } from "./support/runs.js";

const PAGE = 0x1000n;
const ARCHES = ["vtd", "smmuv3"] as const;

interface Vmm { c: Container; vmm: Process; ram: bigint; dev: VfioDevice }

/** A type1 container over 4 MiB of a process, the device of group 0 in it; nothing mapped yet. */
async function vmm(arch: "vtd" | "smmuv3"): Promise<Vmm> {
  const h = await createHost({ ramSize: 64 * 1024 * 1024, arch });
  h.addDevice({ bdf: "0000:01:00.0" });
  const vmm = h.createProcess();
  const ram = vmm.mmap(4n << 20n);
  const c = h.openContainer({ process: vmm });
  const g = h.openGroup(0);
  g.setContainer(c);
  c.setIommu("type1v2");
  return { c, vmm, ram, dev: g.device("0000:01:00.0") };
}

/** The page numbers (from iova) whose bits are set. */
function pagesOf(bitmap: Uint8Array, iova: bigint): bigint[] {
  const out: bigint[] = [];
  bitmap.forEach((byte, i) => { for (let b = 0; b < 8; b++) if (byte & (1 << b)) out.push(iova / PAGE + BigInt(i * 8 + b)); });
  return out;
}

describe.each(ARCHES)("unmap with the dirty bitmap (%s)", (arch) => {
  it("reports the written pages of every mapping it removes, read before they go", async () => {
    const { c, ram, dev } = await vmm(arch);
    c.mapDma({ vaddr: ram, iova: 0x100000n, size: 16n * PAGE, read: true, write: true });
    c.mapDma({ vaddr: ram + 16n * PAGE, iova: 0x110000n, size: 16n * PAGE, read: true, write: true });
    c.dirty.start();
    dev.dma.write(0x100000n + 3n * PAGE + 8n, new Uint8Array([1]));
    dev.dma.write(0x110000n + 15n * PAGE, new Uint8Array([2]));
    const r = c.unmapDma({ iova: 0x100000n, size: 32n * PAGE, dirtyBitmap: { pgsize: PAGE } });
    expect(r.size).toBe(32n * PAGE);
    expect(r.bitmap.length).toBe(4);
    expect(pagesOf(r.bitmap, 0x100000n)).toEqual([0x103n, 0x11fn]);
    expect(c.mappings()).toEqual([]);
    // Without dirtyBitmap the call is as before: bytes.
    c.mapDma({ vaddr: ram, iova: 0x100000n, size: 16n * PAGE, read: true, write: true });
    expect(c.unmapDma({ iova: 0x100000n, size: 16n * PAGE })).toBe(16n * PAGE);
  });

  it("refuses, changing nothing: with all, tracking not started, another pgsize, a bisected mapping", async () => {
    const { c, ram, dev } = await vmm(arch);
    c.mapDma({ vaddr: ram, iova: 0x100000n, size: 16n * PAGE, read: true, write: true });
    expect(errno(() => c.unmapDma({ iova: 0x100000n, size: 16n * PAGE, dirtyBitmap: { pgsize: PAGE } }))).toBe("EINVAL");
    c.dirty.start();
    dev.dma.write(0x100000n, new Uint8Array([1]));
    expect(errno(() => c.unmapDma({ all: true, dirtyBitmap: { pgsize: PAGE } } as never))).toBe("EINVAL");
    expect(errno(() => c.unmapDma({ iova: 0x100000n, size: 16n * PAGE, dirtyBitmap: { pgsize: 0x200000n } }))).toBe("EINVAL");
    expect(errno(() => c.unmapDma({ iova: 0x100000n, size: 8n * PAGE, dirtyBitmap: { pgsize: PAGE } }))).toBe("EINVAL");
    expect(errno(() => c.unmapDma({ iova: 0x100000n, size: 16n * PAGE, dirtyBitmap: { pgsize: PAGE, pgszie: 1 } as never }))).toBe("EINVAL");
    // A range whose bitmap would pass 256 MiB (verify_bitmap_size) is refused before anything is read.
    c.mapDma({ vaddr: ram + 16n * PAGE, iova: 1n << 45n, size: PAGE, read: true, write: true });
    expect(errno(() => c.unmapDma({ iova: 0x100000n, size: (1n << 45n) + PAGE - 0x100000n, dirtyBitmap: { pgsize: PAGE } }))).toBe("EINVAL");
    expect(c.unmapDma({ iova: 1n << 45n, size: PAGE })).toBe(PAGE);
    expect(c.mappings()).toHaveLength(1);
    // The written page is still reported: no refusal read (and cleared) the bits.
    expect(pagesOf(c.dirty.bitmap({ iova: 0x100000n, size: 16n * PAGE, pgsize: PAGE }), 0x100000n)).toEqual([0x100n]);
  });
});

describe("only mapped pages are ever dirty", () => {
  it("smmuv3: a device's MSI write to the doorbell raises the interrupt and no bitmap reports the doorbell page", async () => {
    const { c, ram, dev } = await vmm("smmuv3");
    const bell = c.msiDoorbellIova!;
    expect(bell).toBe(0x8000000n);
    // Mappings on both sides of the sw-msi window, so a bitmap range holds the doorbell page.
    c.mapDma({ vaddr: ram, iova: bell - 16n * PAGE, size: 16n * PAGE, read: true, write: true });
    c.mapDma({ vaddr: ram + 16n * PAGE, iova: bell + 0x100000n, size: 16n * PAGE, read: true, write: true });
    c.dirty.start();
    expect(dev.dma.write(bell, new Uint8Array([1, 0, 0, 0])).interrupt).toBeDefined();
    dev.dma.write(bell - PAGE, new Uint8Array([1]));
    const first = bell - 16n * PAGE, size = 0x100000n + 32n * PAGE;
    expect(pagesOf(c.dirty.bitmap({ iova: first, size, pgsize: PAGE }), first)).toEqual([(bell - PAGE) / PAGE]);
    dev.dma.write(bell, new Uint8Array([1, 0, 0, 0]));
    expect(pagesOf(c.unmapDma({ iova: first, size, dirtyBitmap: { pgsize: PAGE } }).bitmap, first)).toEqual([]);
  });
});

/**
 * The property: random maps (4 KiB-granular: no 2 MiB leaf, whose dirty
 * bit would cover pages never written), device writes, bitmap reads and
 * unmaps with and without the bitmap, on both arches. The model keeps the
 * set of pages written since they were last reported.
 */
describe.each(ARCHES)("every written page is reported exactly once (%s)", (arch) => {
  it("over random maps, writes, bitmap reads and unmaps", async () => {
    const SLOTS = 8, SLOT_PAGES = 16n, BASE = 0x40000000n;
    let reported = 0, written = 0;
    for (let seed = 1; seed <= runs(6); seed++) {
      const { c, ram, dev } = await vmm(arch);
      let x = seed * 2654435761 >>> 0;
      const rnd = (n: number) => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x % n; };
      const mapped = new Set<number>();
      const dirty = new Set<bigint>();
      const slotIova = (s: number) => BASE + BigInt(s) * SLOT_PAGES * PAGE * 2n;
      const check = (bitmap: Uint8Array, iova: bigint, what: string) => {
        const got = pagesOf(bitmap, iova);
        const want = [...dirty].filter((p) => p >= iova / PAGE && p < iova / PAGE + BigInt(bitmap.length * 8)).sort((a, b) => (a < b ? -1 : 1));
        expect(got, what).toEqual(want);
        for (const p of got) dirty.delete(p);
        reported += got.length;
      };
      c.dirty.start();
      for (let step = 0; step < 300; step++) {
        const s = rnd(SLOTS), iova = slotIova(s);
        switch (rnd(6)) {
          case 0: // map a slot (16 pages of the process) if it is free
            if (!mapped.has(s)) { c.mapDma({ vaddr: ram + BigInt(s) * SLOT_PAGES * PAGE, iova, size: SLOT_PAGES * PAGE, read: true, write: true }); mapped.add(s); }
            break;
          case 1: case 2: { // a device write, maybe across a page boundary, maybe into nothing
            const at = iova + BigInt(rnd(Number(SLOT_PAGES * PAGE) + 0x2000)) - 0x1000n;
            const len = 1 + rnd(0x1800);
            const r = dev.dma.write(at < 0n ? 0n : at, new Uint8Array(len).fill(7));
            const start = at < 0n ? 0n : at;
            for (let p = start / PAGE; p <= (start + BigInt(Math.max(r.bytes, 1)) - 1n) / PAGE && r.bytes > 0; p++) { dirty.add(p); written++; }
            break;
          }
          case 3: // a bitmap read of one mapped slot, or of two neighbours
            if (mapped.has(s)) check(c.dirty.bitmap({ iova, size: SLOT_PAGES * PAGE, pgsize: PAGE }), iova, `bitmap of slot ${s}`);
            break;
          case 4: // unmap with the bitmap
            if (mapped.has(s)) { check(c.unmapDma({ iova, size: SLOT_PAGES * PAGE, dirtyBitmap: { pgsize: PAGE } }).bitmap, iova, `unmap of slot ${s}`); mapped.delete(s); }
            break;
          case 5: // unmap without it: those pages are the caller's to lose
            if (mapped.has(s)) {
              c.unmapDma({ iova, size: SLOT_PAGES * PAGE });
              mapped.delete(s);
              for (const p of [...dirty]) if (p >= iova / PAGE && p < iova / PAGE + SLOT_PAGES) dirty.delete(p);
            }
            break;
        }
      }
      // At the end one bitmap over every slot reports what is left, and nothing else.
      check(c.dirty.bitmap({ iova: slotIova(0), size: slotIova(SLOTS) - slotIova(0) - SLOT_PAGES * PAGE, pgsize: PAGE }), slotIova(0), "final bitmap");
      expect(dirty.size).toBe(0);
    }
    // The run proves something: pages were written and reported.
    expect(written).toBeGreaterThan(0);
    expect(reported).toBeGreaterThan(runs(6) * 5);
  });
});
