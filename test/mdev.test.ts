// Mediated devices (issue 9, docs/mediated-devices.md A1–A7): an mdev's
// emulated group in a container, the container with no IOMMU domain, the
// vendor driver's pins (vfio_pin_pages / vfio_unpin_pages), vfio_dma_rw,
// and the dma_unmap notification with its retry rule. Errno by errno, each
// refusal checked to change nothing; the same calls on the naive twin.
import { describe, expect, it } from "vitest";
import { createHost, IommuError, KernelBug, type Arch, type Container, type Host, type Mdev, type Process, type VfioGroup } from "../src/index.js";
import { createNaiveHost } from "../bench/naive/index.js";
import { errno } from "./support/outcome.js";

const RAM = 16 * 1024 * 1024;
const GPU = "0000:00:02.0";
const NIC = "0000:01:00.0";
const IOVA = 0x10_0000n;
const SIZE = 0x10_0000n;
const PAGE = 0x1000n;
const ARCHES: Arch[] = ["vtd", "smmuv3"];

type AnyHost = Host;
interface Rig { h: AnyHost; p: Process; c: Container; g: VfioGroup; mdev: Mdev; v: bigint }

async function makeHost(twin: boolean, arch: Arch): Promise<AnyHost> {
  return (twin ? await createNaiveHost({ ramSize: RAM, arch }) : await createHost({ ramSize: RAM, arch })) as unknown as AnyHost;
}

/**
 * A GPU driven by its vendor driver, one mdev on it, its group in a type1v2
 * container (no IOMMU domain: emulated groups only), 1 MiB of the process
 * mapped read-write at IOVA.
 */
async function rig(opts: { memlock?: bigint; twin?: boolean; arch?: Arch; unmap?: boolean } = {}): Promise<Rig> {
  const h = await makeHost(opts.twin ?? false, opts.arch ?? "vtd");
  h.addDevice({ bdf: GPU, driver: "host" });
  const mdev = h.createMdev({ parent: GPU });
  const p = h.createProcess(opts.memlock === undefined ? {} : { memlockLimit: opts.memlock });
  const c = h.openContainer({ process: p });
  const g = h.openGroup(mdev.group);
  g.setContainer(c);
  c.setIommu("type1v2");
  const v = p.mmap(SIZE);
  c.mapDma({ vaddr: v, iova: IOVA, size: SIZE, read: true, write: true });
  if (opts.unmap !== false) mdev.onDmaUnmap((iova, size) => { mdev.unpinPages(iova, Number(size / PAGE) > 512 ? 512 : Number(size / PAGE)); });
  return { h, p, c, g, mdev, v };
}

/** Pins held on a frame (the engine's count, or the twin's). */
function framePins(h: AnyHost, hpa: bigint): number {
  const any = h as unknown as { engine?: { wasm: { framePins(hpa: bigint): number } }; framePins?(hpa: bigint): number };
  return any.engine ? any.engine.wasm.framePins(hpa) : any.framePins!(hpa);
}

/** Everything a refused call must leave as it was. */
function state(r: Rig): string {
  const pins: string[] = [];
  for (let page = 0n; page < SIZE / PAGE; page++) {
    const rec = r.c.external.pinned(IOVA + page * PAGE);
    if (rec) pins.push(`${page}:${rec.hpa}x${rec.refs}:${framePins(r.h, rec.hpa)}`);
  }
  return JSON.stringify({
    locked: r.p.lockedBytes.toString(), free: r.h.ram.framesFree, pins, warnings: r.h.warnings.length,
    maps: r.c.mappings().map((m) => `${m.iova}-${m.last}`),
  });
}

/** The errno fn throws, and that nothing changed. */
function refused(r: Rig, fn: () => unknown): string {
  const before = state(r);
  const code = errno(fn);
  expect(state(r)).toBe(before);
  return code;
}

describe("creating mdevs and their emulated groups", () => {
  it("needs a parent its vendor driver drives; UUIDs are unique; the group id comes from the real groups' space", async () => {
    const h = await createHost({ ramSize: RAM });
    h.addDevice({ bdf: NIC });
    expect(errno(() => h.createMdev({ parent: NIC }))).toBe("ENODEV");
    expect(errno(() => h.createMdev({ parent: "0000:09:00.0" }))).toBe("ENODEV");
    h.addDevice({ bdf: GPU, driver: "host" });
    expect(errno(() => h.createMdev({ parent: GPU, uuid: "not-a-uuid" }))).toBe("EINVAL");
    expect(errno(() => h.createMdev({ parent: GPU, extra: 1 } as never))).toBe("EINVAL");
    const a = h.createMdev({ parent: GPU, uuid: "C0FFEE00-0000-4000-8000-000000000000" });
    expect(a.uuid).toBe("c0ffee00-0000-4000-8000-000000000000");
    expect(errno(() => h.createMdev({ parent: GPU, uuid: a.uuid.toUpperCase() }))).toBe("EEXIST");
    const b = h.createMdev({ parent: GPU });
    expect(h.iommuGroups()).toEqual([0, 1, 2, 3]);
    expect([a.group, b.group]).toEqual([2, 3]);
    expect(h.reservedRegions(a.group)).toEqual([]);
    expect(h.mdevs()).toEqual([a, b]);
  });

  it("is removed only while its group is closed, and its group id is free again", async () => {
    const h = await createHost({ ramSize: RAM });
    h.addDevice({ bdf: GPU, driver: "host" });
    const m = h.createMdev({ parent: GPU });
    const g = h.openGroup(m.group);
    expect(errno(() => m.remove())).toBe("EBUSY");
    g.close();
    m.remove();
    expect(h.iommuGroups()).toEqual([0]);
    expect(errno(() => m.onDmaUnmap(() => {}))).toBe("ENODEV");
    expect(h.addDevice({ bdf: NIC }).group).toBe(1);
  });
});

describe("a container of emulated groups only", () => {
  it("has a driver and no domain: MAP_DMA records without looking at vaddr, GET_INFO has no IOVA ranges", async () => {
    const r = await rig();
    expect(r.c.domain).toBeUndefined();
    expect(r.c.iommuType).toBe("type1v2");
    // Nothing pinned, nothing counted by MAP_DMA.
    expect(r.p.lockedBytes).toBe(0n);
    // An unmapped vaddr is accepted (the kernel does not look until a pin).
    r.c.mapDma({ vaddr: 0x7000_0000_0000n, iova: 0x4000_0000n, size: PAGE, read: true });
    const info = r.c.getInfo();
    expect(info.iovaRanges).toEqual([]);
    expect(info.pgsizes & 0xfffn).toBe(0n);
    expect(info.pgsizes >> 12n).toBe((1n << 52n) - 1n);
    expect(errno(() => r.c.mapDma({ vaddr: r.v, iova: IOVA, size: PAGE, read: true }))).toBe("EEXIST");
    // Stage 2, dirty bits and guest tables need a domain.
    expect(errno(() => r.c.dirty.start())).toBe("EINVAL");
    expect(errno(() => r.c.gpa.read(IOVA, 8))).toBe("EINVAL");
    expect(r.c.unmapDma({ iova: 0x4000_0000n, size: PAGE })).toBe(PAGE);
  });
});

describe("vfio_pin_pages", () => {
  it.each(ARCHES)("%s: pins, returns the HPAs the process has there, counts them once against memlock", async (arch) => {
    const r = await rig({ arch });
    r.p.write(r.v + 2n * PAGE, new Uint8Array([7, 8, 9]));
    const hpas = r.mdev.pinPages(IOVA, 4, { write: true });
    expect(hpas.length).toBe(4);
    expect(r.h.ram.read(hpas[2], 3)).toEqual(new Uint8Array([7, 8, 9]));
    for (const hpa of hpas) expect(framePins(r.h, hpa)).toBe(1);
    expect(r.p.lockedBytes).toBe(4n * PAGE);
    // Again: references, not new pins.
    expect(r.mdev.pinPages(IOVA + PAGE, 2)).toEqual(hpas.slice(1, 3));
    expect(framePins(r.h, hpas[1])).toBe(1);
    expect(r.c.external.pinned(IOVA + PAGE)?.refs).toBe(2);
    expect(r.p.lockedBytes).toBe(4n * PAGE);
  });

  it("refuses in the kernel's order, changing nothing", async () => {
    const r = await rig({ unmap: false });
    expect(refused(r, () => r.mdev.pinPages(IOVA, 0))).toBe("EINVAL");
    expect(refused(r, () => r.mdev.pinPages(IOVA, -1))).toBe("EINVAL");
    expect(refused(r, () => r.mdev.pinPages(IOVA, 1.5))).toBe("EINVAL");
    expect(refused(r, () => r.mdev.pinPages(IOVA + 1n, 1))).toBe("EINVAL");
    // No dma_unmap callback: EINVAL before E2BIG.
    expect(refused(r, () => r.mdev.pinPages(IOVA, 513))).toBe("EINVAL");
    r.mdev.onDmaUnmap(() => {});
    expect(refused(r, () => r.mdev.pinPages(IOVA, 513))).toBe("E2BIG");
    expect(refused(r, () => r.mdev.pinPages((1n << 64n) - PAGE, 2))).toBe("EOVERFLOW");
    // The range runs past the mapping: the first page outside it.
    expect(refused(r, () => r.mdev.pinPages(IOVA + SIZE - 2n * PAGE, 3))).toBe("EINVAL");
    expect(refused(r, () => r.mdev.pinPages(IOVA, 1, { read: "yes" } as never))).toBe("EINVAL");
    // A read-only mapping refuses a write pin; a write-only one a read pin.
    const ro = r.p.mmap(2n * PAGE);
    r.c.mapDma({ vaddr: ro, iova: 0x100_0000n, size: PAGE, read: true });
    r.c.mapDma({ vaddr: ro + PAGE, iova: 0x100_1000n, size: PAGE, write: true });
    expect(refused(r, () => r.mdev.pinPages(0x100_0000n, 1, { write: true }))).toBe("EPERM");
    expect(refused(r, () => r.mdev.pinPages(0x100_1000n, 1))).toBe("EPERM");
    expect(r.mdev.pinPages(0x100_1000n, 1, { read: false, write: true }).length).toBe(1);
    // Pages before the failing one are undone: the read-only page pins, the write-only one next to it refuses.
    r.mdev.pinPages(IOVA, 1);
    expect(refused(r, () => r.mdev.pinPages(0x100_0000n, 2))).toBe("EPERM");
  });

  it("EFAULT where the process has no page (MAP_DMA did not look), all or nothing", async () => {
    const r = await rig();
    r.mdev.pinPages(IOVA, 1);
    r.c.mapDma({ vaddr: 0x7000_0000_0000n, iova: IOVA + SIZE, size: 4n * PAGE, read: true, write: true });
    expect(refused(r, () => r.mdev.pinPages(IOVA + SIZE - 2n * PAGE, 4))).toBe("EFAULT");
    // A page the process maps read-only cannot be pinned for a writable mapping.
    const ro = r.p.mmap(PAGE, { write: false });
    r.c.mapDma({ vaddr: ro, iova: 0x200_0000n, size: PAGE, read: true, write: true });
    expect(refused(r, () => r.mdev.pinPages(0x200_0000n, 1))).toBe("EFAULT");
    // The process exits: ENODEV.
    r.p.exit();
    expect(refused(r, () => r.mdev.pinPages(IOVA + PAGE, 1))).toBe("ENODEV");
  });

  it("ENOMEM at the first page past RLIMIT_MEMLOCK, unless a hole comes first (EFAULT); pinned pages cost nothing", async () => {
    const r = await rig({ memlock: 4n * PAGE });
    r.mdev.pinPages(IOVA + PAGE, 2);
    expect(refused(r, () => r.mdev.pinPages(IOVA, 5))).toBe("ENOMEM");
    // Four pages fit: the two pinned cost nothing again.
    r.mdev.pinPages(IOVA, 4);
    expect(r.p.lockedBytes).toBe(4n * PAGE);
    // The page past the limit is in no process page: the kernel pins before it counts.
    r.c.mapDma({ vaddr: 0x7000_0000_0000n, iova: IOVA + SIZE, size: PAGE, read: true, write: true });
    r.mdev.unpinPages(IOVA, 1);
    expect(refused(r, () => r.mdev.pinPages(IOVA + SIZE - PAGE, 2))).toBe("EFAULT");
  });

  it("is refused before the device is open, and after its group leaves", async () => {
    const h = await createHost({ ramSize: RAM });
    h.addDevice({ bdf: GPU, driver: "host" });
    const m = h.createMdev({ parent: GPU });
    m.onDmaUnmap(() => {});
    expect(errno(() => m.pinPages(IOVA, 1))).toBe("EINVAL");
    const g = h.openGroup(m.group);
    const c = h.openContainer({ process: h.createProcess() });
    g.setContainer(c);
    expect(errno(() => m.pinPages(IOVA, 1))).toBe("EINVAL");
    c.setIommu("type1v2");
    expect(errno(() => m.pinPages(IOVA, 1))).toBe("EINVAL"); // no mapping yet
    g.unsetContainer();
    expect(errno(() => m.dmaRw(IOVA, 4, { write: false }))).toBe("EINVAL");
  });
});

describe("vfio_unpin_pages", () => {
  it("drops references, frees the frame at the last, skips pages with none; a page in no mapping ends it with a WARN", async () => {
    const r = await rig();
    const hpas = r.mdev.pinPages(IOVA, 3);
    r.mdev.pinPages(IOVA, 1);
    expect(r.mdev.unpinPages(IOVA, 4)).toBe(4);
    expect(r.c.external.pinned(IOVA)?.refs).toBe(1);
    expect(r.c.external.pinned(IOVA + PAGE)).toBeUndefined();
    expect(framePins(r.h, hpas[1])).toBe(0);
    expect(r.p.lockedBytes).toBe(PAGE);
    r.mdev.pinPages(IOVA + SIZE - PAGE, 1);
    // The last page of the mapping, then a page past it: processed 1, a warning, the page unpinned.
    expect(r.mdev.unpinPages(IOVA + SIZE - PAGE, 2)).toBe(1);
    expect(r.c.external.pinned(IOVA + SIZE - PAGE)).toBeUndefined();
    expect(r.h.warnings.map((w) => w.where)).toEqual(["vfio_iommu_type1_unpin_pages"]);
    expect(refused(r, () => r.mdev.unpinPages(IOVA, 0))).toBe("EINVAL");
    expect(refused(r, () => r.mdev.unpinPages(IOVA, 513))).toBe("EINVAL");
    expect(refused(r, () => r.mdev.unpinPages((1n << 64n) - PAGE, 2))).toBe("EOVERFLOW");
  });

  it("a frame the process munmapped goes back to the host at the last unpin", async () => {
    const r = await rig();
    const [hpa] = r.mdev.pinPages(IOVA, 1);
    const free = r.h.ram.framesFree;
    r.p.munmap(r.v, SIZE);
    // The pinned frame stays; the other 255 go.
    expect(r.h.ram.framesFree).toBe(free + 255);
    r.mdev.unpinPages(IOVA, 1);
    expect(r.h.ram.framesFree).toBe(free + 256);
    expect(framePins(r.h, hpa)).toBe(0);
  });

  it("pins are the container's: one mdev can drop a pin another took", async () => {
    const r = await rig();
    const other = r.h.createMdev({ parent: GPU });
    const g2 = r.h.openGroup(other.group);
    g2.setContainer(r.c);
    other.onDmaUnmap(() => {});
    const [hpa] = r.mdev.pinPages(IOVA, 1);
    expect(other.unpinPages(IOVA, 1)).toBe(1);
    expect(framePins(r.h, hpa)).toBe(0);
    expect(r.c.external.pinned(IOVA)).toBeUndefined();
  });
});

describe("the parent's own DMA", () => {
  it("with no IOMMU in front, the vendor's device reaches the pinned HPAs directly; behind one, through the parent's DMA API", async () => {
    const h = await createHost({ ramSize: RAM });
    h.addDevice({ bdf: GPU, driver: "host", iommu: false });
    const m = h.createMdev({ parent: GPU });
    const p = h.createProcess();
    const c = h.openContainer({ process: p });
    h.openGroup(m.group).setContainer(c);
    c.setIommu("type1v2");
    const v = p.mmap(SIZE);
    c.mapDma({ vaddr: v, iova: IOVA, size: SIZE, read: true, write: true });
    m.onDmaUnmap(() => {});
    p.write(v + PAGE, new Uint8Array([1, 2, 3, 4]));
    const [hpa] = m.pinPages(IOVA + PAGE, 1);
    const out = new Uint8Array(4);
    expect(m.parentDma.readInto(hpa, out).bytes).toBe(4);
    expect(out).toEqual(new Uint8Array([1, 2, 3, 4]));
    // The same HPA through a parent behind an IOMMU is not mapped: DMA addresses come from its DMA API.
    const r = await rig();
    r.p.write(r.v, new Uint8Array([9, 9]));
    const [h2] = r.mdev.pinPages(IOVA, 1);
    expect(r.mdev.parentDma.readInto(h2, new Uint8Array(2)).fault?.reason).toBe("not-present");
    const bus = r.h.dmaApi(GPU).mapPage(h2, PAGE, "to-device");
    const got = new Uint8Array(2);
    expect(r.mdev.parentDma.readInto(bus, got).bytes).toBe(2);
    expect(got).toEqual(new Uint8Array([9, 9]));
  });
});

describe("pin records under churn", () => {
  it("stay exact when the table drops the dead ones (thousands of pin/unpin cycles over many pages)", async () => {
    const r = await rig();
    const big = r.p.mmap(0x80_0000n);
    r.c.mapDma({ vaddr: big, iova: 0x100_0000n, size: 0x80_0000n, read: true, write: true });
    const [kept] = r.mdev.pinPages(IOVA, 1);
    r.mdev.pinPages(IOVA, 1);
    for (let round = 0; round < 3; round++) {
      for (let page = 0n; page < 2048n; page += 8n) {
        const hpas = r.mdev.pinPages(0x100_0000n + page * PAGE, 8);
        expect(hpas[3]).toBe(r.c.external.pinned(0x100_0000n + (page + 3n) * PAGE)!.hpa);
        expect(r.mdev.unpinPages(0x100_0000n + page * PAGE, 8)).toBe(8);
      }
    }
    expect(r.c.external.total).toBe(1);
    expect(r.c.external.pinned(IOVA)).toEqual({ hpa: kept, refs: 2 });
    expect(r.p.lockedBytes).toBe(PAGE);
    r.mdev.unpinPages(IOVA, 1);
    r.mdev.unpinPages(IOVA, 1);
    expect(r.c.external.total).toBe(0);
    expect(framePins(r.h, kept)).toBe(0);
  });
});

describe("vfio_dma_rw", () => {
  it("reads and writes through the process page tables, across mappings, pinning nothing", async () => {
    const r = await rig();
    const v2 = r.p.mmap(PAGE);
    r.c.mapDma({ vaddr: v2, iova: IOVA + SIZE, size: PAGE, read: true, write: true });
    const data = Uint8Array.from({ length: 64 }, (_, i) => i + 1);
    expect(r.mdev.dmaRw(IOVA + SIZE - 32n, data, { write: true })).toBe(64);
    expect(r.p.read(r.v + SIZE - 32n, 32)).toEqual(data.subarray(0, 32));
    expect(r.p.read(v2, 32)).toEqual(data.subarray(32));
    expect(r.mdev.dmaRw(IOVA + SIZE - 32n, 64, { write: false })).toEqual(data);
    expect(r.p.lockedBytes).toBe(0n);
  });

  it("EINVAL where nothing is mapped, EPERM by the mapping's permissions, EFAULT where the process has no page; a refusal moves nothing", async () => {
    const r = await rig();
    const before = r.p.read(r.v + SIZE - 16n, 16);
    expect(refused(r, () => r.mdev.dmaRw(IOVA + SIZE - 16n, new Uint8Array(32).fill(9), { write: true }))).toBe("EINVAL");
    expect(r.p.read(r.v + SIZE - 16n, 16)).toEqual(before);
    const ro = r.p.mmap(2n * PAGE);
    r.c.mapDma({ vaddr: ro, iova: 0x100_0000n, size: PAGE, read: true });
    r.c.mapDma({ vaddr: ro + PAGE, iova: 0x100_1000n, size: PAGE, write: true });
    expect(refused(r, () => r.mdev.dmaRw(0x100_0000n, new Uint8Array(4), { write: true }))).toBe("EPERM");
    expect(refused(r, () => r.mdev.dmaRw(0x100_1000n, new Uint8Array(4), { write: true }))).toBe("EPERM");
    expect(refused(r, () => r.mdev.dmaRw(0x100_1000n, 4, { write: false }))).toBe("EPERM");
    r.c.mapDma({ vaddr: 0x7000_0000_0000n, iova: 0x200_0000n, size: PAGE, read: true, write: true });
    expect(refused(r, () => r.mdev.dmaRw(0x200_0000n, 4, { write: false }))).toBe("EFAULT");
    expect(refused(r, () => r.mdev.dmaRw(IOVA, 0, { write: false }))).toBe("EINVAL");
    expect(refused(r, () => r.mdev.dmaRw(IOVA, new Uint8Array(0), { write: true }))).toBe("EINVAL");
    expect(refused(r, () => r.mdev.dmaRw(IOVA, 4, undefined as never))).toBe("EINVAL");
  });
});

describe("the dma_unmap notification", () => {
  it("calls every registered device, newest first, with the whole mapping, before UNMAP_DMA returns; unpinned mappings below go first", async () => {
    const r = await rig({ unmap: false });
    const other = r.h.createMdev({ parent: GPU });
    r.h.openGroup(other.group).setContainer(r.c);
    const log: string[] = [];
    const low = r.p.mmap(PAGE);
    r.c.mapDma({ vaddr: low, iova: 0x1000n, size: PAGE, read: true });
    r.mdev.onDmaUnmap((iova, size) => {
      log.push(`first ${iova.toString(16)}+${size.toString(16)} maps ${r.c.mappings().length}`);
      expect(r.mdev.unpinPages(iova, 4)).toBe(4);
    });
    other.onDmaUnmap((iova) => { log.push(`second ${iova.toString(16)}`); });
    r.mdev.pinPages(IOVA, 4);
    expect(r.c.unmapDma({ all: true })).toBe(SIZE + PAGE);
    // The unpinned mapping at 0x1000 was gone when the callbacks ran; the second mdev opened last.
    expect(log).toEqual(["second 100000", "first 100000+100000 maps 1"]);
    expect(r.c.mappings()).toEqual([]);
    expect(r.p.lockedBytes).toBe(0n);
  });

  it("re-entrant pin, unpin and dma_rw work inside the callback", async () => {
    const r = await rig({ unmap: false });
    const seen: number[] = [];
    r.mdev.onDmaUnmap((iova) => {
      seen.push(r.mdev.dmaRw(iova, 4, { write: false }).length);
      r.mdev.pinPages(iova + PAGE, 1);
      r.mdev.unpinPages(iova, 2);
    });
    r.mdev.pinPages(IOVA, 1);
    r.c.unmapDma({ iova: IOVA, size: SIZE });
    expect(seen).toEqual([4]);
    expect(r.c.external.total).toBe(0);
  });

  it("a vendor that keeps its pins: 11 rounds of callbacks, then a kernel BUG; the container is wedged", async () => {
    const r = await rig({ unmap: false });
    let rounds = 0;
    r.mdev.onDmaUnmap(() => { rounds++; });
    const low = r.p.mmap(PAGE);
    r.c.mapDma({ vaddr: low, iova: 0x1000n, size: PAGE, read: true });
    const [hpa] = r.mdev.pinPages(IOVA, 1);
    let thrown: unknown;
    try { r.c.unmapDma({ all: true }); } catch (e) { thrown = e; }
    expect(thrown).toBeInstanceOf(KernelBug);
    expect(thrown).not.toBeInstanceOf(IommuError);
    expect((thrown as KernelBug).where).toBe("vfio_dma_do_unmap");
    expect(rounds).toBe(11);
    // As at the BUG: the lower mapping is gone, the stuck one stays, its pin held.
    expect(r.c.mappings().map((m) => m.iova)).toEqual([IOVA]);
    expect(framePins(r.h, hpa)).toBe(1);
    // Every later call on the container, or pinning through it, meets the same BUG.
    expect(() => r.c.mapDma({ vaddr: low, iova: 0x1000n, size: PAGE, read: true })).toThrow(KernelBug);
    expect(() => r.mdev.pinPages(IOVA, 1)).toThrow(KernelBug);
    expect(() => r.c.close()).toThrow(KernelBug);
  });

  it("a different pinned mapping starts the count again", async () => {
    const r = await rig({ unmap: false });
    const second = r.p.mmap(PAGE);
    r.c.mapDma({ vaddr: second, iova: IOVA + SIZE, size: PAGE, read: true, write: true });
    let calls = 0;
    // The lower mapping's pin goes in its 6th round, the upper one's in its 10th:
    // 16 rounds in all, more than 11, and no BUG because each mapping counts its own.
    r.mdev.onDmaUnmap((iova) => {
      calls++;
      if ((iova === IOVA && calls === 6) || (iova === IOVA + SIZE && calls === 16)) r.mdev.unpinPages(iova, 1);
    });
    r.mdev.pinPages(IOVA, 1);
    r.mdev.pinPages(IOVA + SIZE, 1);
    expect(r.c.unmapDma({ all: true })).toBe(SIZE + PAGE);
    expect(calls).toBe(16);
  });

  it("a callback that throws is a WARN and the walk goes on; an unmap from a callback that must notify again is a self-deadlock", async () => {
    const r = await rig({ unmap: false });
    let once = true;
    r.mdev.onDmaUnmap((iova) => {
      if (once) { once = false; throw new Error("vendor bug"); }
      r.mdev.unpinPages(iova, 1);
    });
    r.mdev.pinPages(IOVA, 1);
    r.c.unmapDma({ iova: IOVA, size: SIZE });
    expect(r.h.warnings.map((w) => w.where)).toEqual(["vfio_notify_dma_unmap"]);

    const s = await rig({ unmap: false });
    const other = s.p.mmap(PAGE);
    s.c.mapDma({ vaddr: other, iova: IOVA + SIZE, size: PAGE, read: true });
    s.mdev.onDmaUnmap(() => { s.c.unmapDma({ iova: IOVA + SIZE, size: PAGE }); });
    s.mdev.pinPages(IOVA, 1);
    s.mdev.pinPages(IOVA + SIZE, 1);
    expect(() => s.c.unmapDma({ iova: IOVA, size: SIZE })).toThrow(KernelBug);
  });

  it("the walk that starts again after the callbacks checks the range anew: a mapping the callback made across its end is EINVAL", async () => {
    const r = await rig({ unmap: false });
    const more = r.p.mmap(2n * PAGE);
    r.mdev.onDmaUnmap((iova) => {
      r.mdev.unpinPages(iova, 1);
      // Maps across the unmap's last byte (a hole when the unmap began).
      r.c.mapDma({ vaddr: more, iova: IOVA + SIZE + PAGE, size: 2n * PAGE, read: true });
    });
    r.mdev.pinPages(IOVA, 1);
    expect(errno(() => r.c.unmapDma({ iova: IOVA, size: SIZE + 2n * PAGE }))).toBe("EINVAL");
    expect(r.c.mappings().map((m) => m.iova)).toEqual([IOVA, IOVA + SIZE + PAGE]);
  });

  it("an unmap of a mapping nobody pinned calls no one", async () => {
    const r = await rig({ unmap: false });
    let calls = 0;
    r.mdev.onDmaUnmap(() => { calls++; });
    r.c.unmapDma({ iova: IOVA, size: SIZE });
    expect(calls).toBe(0);
  });
});

describe("emulated and IOMMU groups in one container", () => {
  async function mixed(twin = false): Promise<Rig & { nic: VfioGroup }> {
    const r = await rig({ twin });
    r.h.addDevice({ bdf: NIC });
    const nic = r.h.openGroup(r.h.device(NIC).group!);
    return { ...r, nic };
  }

  it("the first IOMMU group replays every mapping into a new domain; vendor pins are not counted twice", async () => {
    const r = await mixed();
    r.p.write(r.v, new Uint8Array([5, 6, 7, 8]));
    r.mdev.pinPages(IOVA, 2);
    expect(r.p.lockedBytes).toBe(2n * PAGE);
    r.nic.setContainer(r.c);
    expect(r.c.domain).toBeDefined();
    expect(r.p.lockedBytes).toBe(SIZE);
    const out = new Uint8Array(4);
    expect(r.nic.device(NIC).dma.readInto(IOVA, out).bytes).toBe(4);
    expect(out).toEqual(new Uint8Array([5, 6, 7, 8]));
    // With a domain, new vendor pins cost nothing more.
    r.mdev.pinPages(IOVA + 8n * PAGE, 4);
    expect(r.p.lockedBytes).toBe(SIZE);
    // The IOMMU group leaves: the mappings stay, only the vendor's pins stay counted.
    r.nic.unsetContainer();
    expect(r.c.domain).toBeUndefined();
    expect(r.c.mappings().length).toBe(1);
    expect(r.p.lockedBytes).toBe(6n * PAGE);
    expect(r.nic.device(NIC).dma.readInto(IOVA, out).fault).toBeDefined();
  });

  it("a replay that fails (a vaddr the process never mapped) undoes the whole attach", async () => {
    const r = await mixed();
    r.c.mapDma({ vaddr: 0x7000_0000_0000n, iova: 0x400_0000n, size: PAGE, read: true });
    r.mdev.pinPages(IOVA, 1);
    const before = state(r);
    expect(errno(() => r.nic.setContainer(r.c))).toBe("EFAULT");
    expect(state(r)).toBe(before);
    expect(r.c.domain).toBeUndefined();
    expect(r.c.groups).toEqual([r.mdev.group]);
    expect(r.nic.container).toBeUndefined();
    // Over memlock: ENOMEM, nothing changed either.
    r.c.unmapDma({ iova: 0x400_0000n, size: PAGE });
    const tight = await rig({ memlock: SIZE - PAGE });
    tight.h.addDevice({ bdf: NIC });
    const g = tight.h.openGroup(tight.h.device(NIC).group!);
    const was = state(tight);
    expect(errno(() => g.setContainer(tight.c))).toBe("ENOMEM");
    expect(state(tight)).toBe(was);
  });

  it("the last group out leaks what a vendor still pins (a WARN), and the frames stay pinned", async () => {
    const r = await rig({ unmap: false });
    r.mdev.onDmaUnmap(() => {});
    const [hpa] = r.mdev.pinPages(IOVA, 1);
    r.g.unsetContainer();
    expect(r.h.warnings.map((w) => w.where)).toEqual(["vfio_remove_dma"]);
    expect(r.c.mappings()).toEqual([]);
    expect(framePins(r.h, hpa)).toBe(1);
    r.p.exit();
    expect(framePins(r.h, hpa)).toBe(1);
  });
});

describe("engine and twin agree", () => {
  it.each(ARCHES)("%s: the same script gives the same HPAs, errnos, accounting and warnings", async (arch) => {
    const run = async (twin: boolean) => {
      const r = await rig({ twin, arch, memlock: 40n * PAGE });
      const out: unknown[] = [];
      const step = (fn: () => unknown) => {
        try {
          const v = fn();
          out.push(v instanceof BigUint64Array ? [...v].map(String) : v instanceof Uint8Array ? [...v] : typeof v === "bigint" ? String(v) : v);
        } catch (e) {
          out.push(e instanceof IommuError ? e.code : e instanceof KernelBug ? "BUG" : String(e));
        }
        out.push(state(r));
      };
      let seed = 7;
      const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
      for (let i = 0; i < 300; i++) {
        const page = BigInt(rnd(300));
        const n = 1 + rnd(24);
        switch (rnd(5)) {
          case 0: case 1: step(() => r.mdev.pinPages(IOVA + page * PAGE, n, { write: rnd(2) === 0 })); break;
          case 2: step(() => r.mdev.unpinPages(IOVA + page * PAGE, n)); break;
          case 3: step(() => rnd(2) ? r.mdev.dmaRw(IOVA + page * PAGE, n * 37, { write: false }) : r.mdev.dmaRw(IOVA + page * PAGE, new Uint8Array(n * 37).fill(i), { write: true })); break;
          default: step(() => rnd(3) === 0 ? r.p.munmap(r.v + page * PAGE, PAGE) : r.c.mapDma({ vaddr: r.p.mmap(PAGE), iova: IOVA + SIZE + page * PAGE, size: PAGE, read: true, write: rnd(2) === 0 }));
        }
      }
      step(() => r.c.unmapDma({ all: true }));
      return out;
    };
    const [engine, twin] = [await run(false), await run(true)];
    expect(engine.length).toBe(twin.length);
    for (let i = 0; i < engine.length; i++) expect(engine[i], `step ${i >> 1}`).toEqual(twin[i]);
    // The script meets every outcome it is there for.
    const seen = new Set(engine.filter((x) => typeof x === "string" && x.length < 10));
    for (const code of ["EINVAL", "EFAULT", "ENOMEM"]) expect(seen, code).toContain(code);
  });
});
