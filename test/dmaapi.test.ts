// The host DMA API (dma-iommu over a group's default domain, and dma-direct
// for a device with no IOMMU): the engine against its naive twin over random
// map_page / unmap_page / map_sg / unmap_sg / set_mask / device DMA / driver
// changes, comparing every result and errno, the stats, and RAM at the end;
// then the rules one by one, each refusal leaving everything as it was.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { createHost, type Host } from "../src/index.js";
import { createNaiveHost } from "../bench/naive/index.js";
import { attempt, errno } from "./support/outcome.js";
import { expectSame, show } from "./support/compare.js";
import { seededBytes } from "./support/bytes.js";
import { mayMiss, params } from "./support/runs.js";
import * as abi from "../src/engine/abi.js";

type Any = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const RAM = 8 << 20;
const PAGE = 4096n;
const DIRS = ["to-device", "from-device", "bidirectional"] as const;
/** Two devices of one group, one of a group of its own, one with no IOMMU (dma-direct). */
const BDFS = ["0000:02:00.0", "0000:02:00.1", "0000:03:00.0", "0000:04:00.0"];

type Op =
  | { t: "map"; dev: number; hpa: bigint; size: bigint; dir: number }
  | { t: "unmap"; dev: number; pick: number; sizeDelta: bigint; dir: number | "same" }
  | { t: "mapSg"; dev: number; segs: { hpa: bigint; length: number }[]; dir: number }
  | { t: "unmapSg"; dev: number; pick: number }
  | { t: "mask"; dev: number; bits: number }
  | { t: "dma"; dev: number; pick: number; off: number; len: number; write: boolean; seed: number }
  | { t: "driver"; dev: number; driver: "host" | "vfio-pci" | null }
  | { t: "stats"; dev: number };

interface Side { host: Any; pages: { dev: number; dma: bigint; size: bigint; dir: string }[]; sgs: { dev: number; m: Any }[]; stats: Map<string, number> }

function apply(side: Side, op: Op): unknown {
  const bdf = BDFS[op.dev];
  const api = () => side.host.dmaApi(bdf);
  switch (op.t) {
    case "map": {
      const dma = api().mapPage(op.hpa, op.size, DIRS[op.dir]);
      side.pages.push({ dev: op.dev, dma, size: op.size, dir: DIRS[op.dir] });
      return dma;
    }
    case "unmap": {
      const p = side.pages[op.pick % Math.max(1, side.pages.length)];
      if (!p) return api().unmapPage(0x1000n, PAGE, "to-device");
      const r = api().unmapPage(p.dma, p.size + op.sizeDelta, op.dir === "same" ? p.dir : DIRS[op.dir]);
      side.pages.splice(side.pages.indexOf(p), 1);
      return r;
    }
    case "mapSg": {
      const m = api().mapSg(op.segs, DIRS[op.dir]);
      side.sgs.push({ dev: op.dev, m });
      return m;
    }
    case "unmapSg": {
      const s = side.sgs[op.pick % Math.max(1, side.sgs.length)];
      if (!s) return "none";
      const r = api().unmapSg(s.m);
      side.sgs.splice(side.sgs.indexOf(s), 1);
      return r;
    }
    case "mask": return api().setMask(op.bits);
    case "dma": {
      const targets = [...side.pages.map((p) => p.dma), ...side.sgs.map((s) => s.m.iova as bigint)];
      const at = (targets[op.pick % Math.max(1, targets.length)] ?? 0xfffff000n) + BigInt(op.off);
      const port = side.host.device(bdf).dma;
      return op.write ? port.write(at, seededBytes(op.seed, op.len)) : port.read(at, op.len);
    }
    case "driver": return side.host.device(bdf).bindDriver(op.driver);
    case "stats": return api().stats();
  }
}

async function makeSide(make: (o: object) => Promise<Any>, vfioSecond: boolean): Promise<Side> {
  const host = await make({ arch: "vtd", ramSize: RAM, iotlb: { sets: 16, ways: 2 } });
  host.addDevice({ bdf: BDFS[0], driver: "host" });
  host.addDevice({ bdf: BDFS[1], driver: "host", group: 0 });
  host.addDevice({ bdf: BDFS[2], driver: vfioSecond ? "vfio-pci" : "host" });
  // A 2 MiB mask: about half the buffers are out of its reach.
  host.addDevice({ bdf: BDFS[3], driver: "host", iommu: false, dmaMask: 21 });
  // Data the devices read: a pattern over RAM.
  host.ram.write(0x100000n, seededBytes(7, 0x200000));
  return { host, pages: [], sgs: [], stats: new Map() };
}

const stats = new Map<string, number>();
const note = (k: string) => stats.set(k, (stats.get(k) ?? 0) + 1);

async function run(ops: Op[], vfioSecond: boolean): Promise<void> {
  const engine = await makeSide(createHost, vfioSecond), twin = await makeSide(createNaiveHost as never, vfioSecond);
  ops.forEach((op, n) => {
    const t = attempt(() => apply(twin, op)), e = attempt(() => apply(engine, op));
    expectSame(t, e, `step ${n} ${show(op)}`);
    const what = "error" in e ? `${op.t}:${e.error}` : `${op.t}:ok`;
    const moved = op.t === "dma" && "ok" in e && (e.ok as Any).bytes > 0;
    note(what);
    if (moved) note("dma:moved");
    if (op.dev === 3) note(moved ? "direct:dma:moved" : `direct:${what}`);
    expectSame(twin.host.iotlb.stats(), engine.host.iotlb.stats(), `step ${n}: IOTLB counters`);
  });
  expectSame(twin.host.faults.drain(), engine.host.faults.drain(), "fault records");
  expect(Buffer.from(engine.host.ram.view(0, RAM)).equals(Buffer.from(twin.host.ram.view(0, RAM)))).toBe(true);
}

const dev = fc.nat(3);
const hpaArb = fc.oneof(
  fc.tuple(fc.nat(0x1ff), fc.nat(4095)).map(([p, o]) => 0x100000n + BigInt(p) * PAGE + BigInt(o)),
  fc.constantFrom(0n, BigInt(RAM) - 1n, BigInt(RAM), 1n << 40n),
);
const sizeArb = fc.oneof(fc.constantFrom(1n, 8n, 4095n, 4096n, 4097n, 0x10000n, 0x21000n, 0n), fc.bigInt({ min: 1n, max: 0x40000n }));
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 10, arbitrary: fc.record({ t: fc.constant("map" as const), dev, hpa: hpaArb, size: sizeArb, dir: fc.nat(2) }) },
  { weight: 6, arbitrary: fc.record({ t: fc.constant("unmap" as const), dev, pick: fc.nat(), sizeDelta: fc.constantFrom(0n, 0n, 0n, 1n, PAGE), dir: fc.oneof(fc.constant("same" as const), fc.nat(2)) }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("mapSg" as const), dev, segs: fc.array(fc.record({ hpa: hpaArb, length: fc.oneof(fc.integer({ min: 1, max: 9000 }), fc.constant(4096)) }), { maxLength: 5 }), dir: fc.nat(2) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("unmapSg" as const), dev, pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("mask" as const), dev, bits: fc.constantFrom(32, 64, 40, 21, 20, 11, 65) }) },
  { weight: 8, arbitrary: fc.record({ t: fc.constant("dma" as const), dev, pick: fc.nat(), off: fc.nat(9000), len: fc.integer({ min: 1, max: 5000 }), write: fc.boolean(), seed: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("driver" as const), dev, driver: fc.constantFrom("host" as const, "vfio-pci" as const, null) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("stats" as const), dev }) },
);

describe("the DMA API on the engine and on the naive twin agree", () => {
  it("on random map/unmap/map_sg/unmap_sg, masks, driver changes and device DMA", async () => {
    await fc.assert(fc.asyncProperty(fc.array(opArb, { maxLength: 80, size: "max" }), fc.boolean(), (ops, vfioSecond) => run(ops, vfioSecond)), params(40));
  }, 120_000);

  it("with IOVA space nearly exhausted: a 20-bit mask, map until ENOMEM, unmap, map again", async () => {
    const fill: fc.Arbitrary<Op[]> = fc.array(fc.record({ t: fc.constant("map" as const), dev: fc.constant(0), hpa: hpaArb, size: fc.constantFrom(PAGE, 3n * PAGE, 0x20000n), dir: fc.nat(2) }), { minLength: 200, maxLength: 300 });
    await fc.assert(fc.asyncProperty(fill, fc.array(opArb, { maxLength: 40 }), (maps, tail) =>
      run([{ t: "mask", dev: 0, bits: 20 }, ...maps, ...tail], false)), params(10));
  }, 120_000);

  it("on a directed sequence that meets the rarer outcomes the random runs may miss", async () => {
    const direct = 3;
    const before = new Map(stats);
    await run([
      { t: "map", dev: direct, hpa: 0x100000n, size: PAGE, dir: 0 },
      { t: "map", dev: direct, hpa: 0x300000n, size: PAGE, dir: 0 }, // above its 2 MiB mask: ENOMEM
      { t: "dma", dev: direct, pick: 0, off: 0, len: 16, write: false, seed: 1 },
      { t: "unmap", dev: direct, pick: 0, sizeDelta: 0n, dir: "same" },
      { t: "mapSg", dev: direct, segs: [{ hpa: 0x100000n, length: 4096 }, { hpa: 0x102000n, length: 100 }], dir: 1 },
      { t: "mapSg", dev: direct, segs: [{ hpa: 0x300000n, length: 4096 }], dir: 1 }, // EIO
      { t: "unmapSg", dev: direct, pick: 0 },
      { t: "driver", dev: direct, driver: "vfio-pci" }, // no IOMMU group: EINVAL
      { t: "mask", dev: 0, bits: 65 },
      { t: "driver", dev: 2, driver: null },
      { t: "map", dev: 2, hpa: 0x100000n, size: PAGE, dir: 0 }, // no driver: ENODEV
    ], false);
    for (const k of ["direct:map:ok", "direct:map:ENOMEM", "direct:dma:moved", "direct:unmap:ok", "direct:mapSg:ok", "direct:mapSg:EIO",
      "direct:unmapSg:ok", "direct:driver:EINVAL", "mask:EINVAL", "driver:ok", "map:ENODEV"]) expect(stats.get(k) ?? 0, k).toBeGreaterThan(before.get(k) ?? 0);
  });

  it("exercised what it claims to", () => {
    const mustSee = ["map:ok", "map:ENOMEM", "map:EINVAL", "unmap:ok", "unmap:EINVAL", "mapSg:ok", "mapSg:EINVAL", "unmapSg:ok",
      "mask:ok", "mask:EIO", "mask:EINVAL", "dma:moved", "driver:EBUSY", "driver:ok", "map:EBUSY", "map:ENODEV",
      "direct:map:ok", "direct:map:ENOMEM", "direct:unmap:ok", "direct:mapSg:ok", "direct:mapSg:EIO", "direct:unmapSg:ok", "direct:driver:EINVAL", "direct:dma:moved"];
    const missed = mustSee.filter((k) => !stats.has(k));
    expect(missed.length, `never met: ${missed.join(", ")}`).toBeLessThanOrEqual(mayMiss(mustSee.length));
  });
});

describe("DMA API rules", () => {
  async function host(): Promise<Host> {
    const h = await createHost({ arch: "smmuv3", ramSize: 16 << 20 });
    h.addDevice({ bdf: "0000:02:00.0", driver: "host" });
    return h;
  }
  const state = (h: Host) => ({ stats: h.dmaApi("0000:02:00.0").stats(), free: h.ram.framesFree, ram: Buffer.from(h.ram.view(0, 16 << 20)) });
  const same = (a: ReturnType<typeof state>, b: ReturnType<typeof state>) => expect(show(a.stats) === show(b.stats) && a.free === b.free && a.ram.equals(b.ram)).toBe(true);

  it("maps top-down below 4 GiB first, size-aligned, the page offset kept; the direction sets the permissions", async () => {
    const h = await host();
    const api = h.dmaApi("0000:02:00.0");
    api.setMask(64);
    expect(api.mapPage(0x200123n, 16n, "to-device")).toBe(0xfffff123n);
    // 3 pages take a 4-page, 16 KiB-aligned slot: the highest below the first is 0xffff8000.
    expect(api.mapPage(0x300000n, 3n * PAGE, "from-device")).toBe(0xffff8000n);
    const dev = h.device("0000:02:00.0");
    expect(dev.dma.read(0xfffff123n, 16).bytes).toBe(16);
    expect(dev.dma.write(0xfffff123n, new Uint8Array(4)).fault?.reason).toBe("permission");
    expect(dev.dma.read(0xffff8000n, 4).fault?.reason).toBe("permission");
    expect(dev.dma.write(0xffff8000n, new Uint8Array(4)).bytes).toBe(4);
  });

  it("an unmapped page is unreachable at once (the IOTLB is invalidated before the IOVA is free), and the next map of that size reuses it", async () => {
    const h = await host();
    const api = h.dmaApi("0000:02:00.0");
    const dev = h.device("0000:02:00.0");
    const dma = api.mapPage(0x200000n, PAGE, "bidirectional");
    const into = new Uint8Array(8);
    // A miss that fills the IOTLB, then hits (which the per-call memo remembers).
    for (let i = 0; i < 3; i++) expect(dev.dma.readInto(dma, into).bytes).toBe(8);
    api.unmapPage(dma, PAGE, "bidirectional");
    expect(dev.dma.readInto(dma, into).fault?.reason).toBe("not-present");
    expect(dev.dma.read(dma, 8).fault?.reason).toBe("not-present");
    expect(api.mapPage(0x400000n, PAGE, "to-device")).toBe(dma);
    expect(api.stats().rcacheHits).toBe(1);
  });

  it("refusals change nothing: bad direction, zero size, not RAM, unknown address, wrong size or direction, twice", async () => {
    const h = await host();
    const api = h.dmaApi("0000:02:00.0");
    const dma = api.mapPage(0x200000n, PAGE, "to-device");
    const before = state(h);
    expect(errno(() => api.mapPage(0x200000n, PAGE, "both" as never))).toBe("EINVAL");
    expect(errno(() => api.mapPage(0x200000n, 0n, "to-device"))).toBe("EINVAL");
    expect(errno(() => api.mapPage(BigInt(16 << 20) - 8n, 16n, "to-device"))).toBe("EINVAL");
    expect(errno(() => api.unmapPage(dma + PAGE, PAGE, "to-device"))).toBe("EINVAL");
    expect(errno(() => api.unmapPage(dma, 2n * PAGE, "to-device"))).toBe("EINVAL");
    expect(errno(() => api.unmapPage(dma, PAGE, "from-device"))).toBe("EINVAL");
    expect(errno(() => api.mapSg([], "to-device"))).toBe("EINVAL");
    expect(errno(() => api.setMask(11))).toBe("EIO");
    same(before, state(h));
    api.unmapPage(dma, PAGE, "to-device");
    expect(errno(() => api.unmapPage(dma, PAGE, "to-device"))).toBe("EINVAL");
  });

  it("exhausted IOVA space is ENOMEM (DMA_MAPPING_ERROR): no mapping made, nothing written", async () => {
    const h = await host();
    const api = h.dmaApi("0000:02:00.0");
    api.setMask(16); // 16 pages, page 0 never handed out
    const dmas = Array.from({ length: 15 }, () => api.mapPage(0x200000n, PAGE, "to-device"));
    expect(new Set(dmas).size).toBe(15);
    const before = state(h);
    expect(errno(() => api.mapPage(0x200000n, PAGE, "to-device"))).toBe("ENOMEM");
    // The allocator's counters move (a miss, as the kernel counts it); the mappings, tables and RAM do not.
    const after = state(h);
    expect([after.stats.live, after.stats.iovaBytes, after.free]).toEqual([before.stats.live, before.stats.iovaBytes, before.free]);
    expect(after.ram.equals(before.ram)).toBe(true);
  });

  it("map_sg: one IOVA range, segments merged where they meet on a page boundary", async () => {
    const h = await host();
    const api = h.dmaApi("0000:02:00.0");
    const m = api.mapSg([{ hpa: 0x200800n, length: 0x800 }, { hpa: 0x300000n, length: 0x1000 }, { hpa: 0x400010n, length: 16 }], "bidirectional");
    expect(m.bytes).toBe(3n * PAGE); // each segment's own page
    expect(m.segments).toEqual([{ dma: m.iova + 0x800n, length: 0x1800 }, { dma: m.iova + 0x2010n, length: 16 }]);
    const dev = h.device("0000:02:00.0");
    h.ram.write(0x300000n, new Uint8Array([9, 8, 7]));
    expect(Array.from(dev.dma.read(m.iova + 0x1000n, 3).data)).toEqual([9, 8, 7]);
    api.unmapSg(m);
    expect(dev.dma.read(m.iova + 0x1000n, 3).fault?.reason).toBe("not-present");
  });

  it("who owns the device: VFIO (EBUSY), nobody (ENODEV), a host driver; the driver cannot let go while mappings live", async () => {
    const h = await host();
    h.addDevice({ bdf: "0000:05:00.0" });
    expect(errno(() => h.dmaApi("0000:05:00.0"))).toBe("EBUSY");
    h.device("0000:05:00.0").bindDriver(null);
    expect(errno(() => h.dmaApi("0000:05:00.0"))).toBe("ENODEV");
    expect(errno(() => h.dmaApi("0000:09:00.0"))).toBe("ENODEV");
    const api = h.dmaApi("0000:02:00.0");
    const dev = h.device("0000:02:00.0");
    const dma = api.mapPage(0x200000n, PAGE, "to-device");
    expect(errno(() => dev.bindDriver("vfio-pci"))).toBe("EBUSY");
    api.unmapPage(dma, PAGE, "to-device");
    dev.bindDriver("vfio-pci");
    expect(errno(() => api.mapPage(0x200000n, PAGE, "to-device"))).toBe("EBUSY");
    // Owned by VFIO now: the host device's own port reaches nothing.
    expect(dev.dma.read(dma, 4).fault?.reason).toBe("no-context");
  });

  it("the spec's dmaMask is the mask the DMA API starts with (12..64 bits: EINVAL, EIO below 12, nothing added); default 32", async () => {
    const h = await host();
    expect(h.dmaApi("0000:02:00.0").mask).toBe(0xffffffffn);
    for (const [bits, code] of [[65, "EINVAL"], [12.5, "EINVAL"], ["32", "EINVAL"], [11, "EIO"], [-1, "EIO"]] as const) {
      expect(errno(() => h.addDevice({ bdf: "0000:05:00.0", driver: "host", dmaMask: bits as never }))).toBe(code);
      expect(errno(() => h.device("0000:05:00.0"))).toBe("ENODEV");
    }
    expect(h.iommuGroups()).toEqual([0]);
    h.addDevice({ bdf: "0000:05:00.0", driver: "host", dmaMask: 20 });
    const api = h.dmaApi("0000:05:00.0");
    expect(api.mask).toBe(0xfffffn);
    // The IOVA comes from below the mask: the top page under 1 MiB.
    expect(api.mapPage(0x200000n, PAGE, "to-device")).toBe(0xff000n);
    h.addDevice({ bdf: "0000:06:00.0", driver: "host", dmaMask: 64 });
    expect(h.dmaApi("0000:06:00.0").mask).toBe((1n << 64n) - 1n);
  });

  it("reserved regions are never handed out (VT-d's interrupt window)", async () => {
    const h = await createHost({ arch: "vtd", ramSize: 16 << 20 });
    h.addDevice({ bdf: "0000:02:00.0", driver: "host" });
    const api = h.dmaApi("0000:02:00.0");
    // Top-down from 4 GiB in 1 MiB steps: the window [0xfee00000, 0xfeefffff] is skipped.
    for (let i = 0; i < 300; i++) {
      const d = api.mapPage(0x200000n, 0x100000n, "to-device");
      expect(d + 0x100000n <= 0xfee00000n || d > 0xfeefffffn).toBe(true);
    }
  });
});

describe("live mappings (the DMA API's record of what is mapped)", () => {
  it("keep every live record through churn and compaction, and forget every unmapped one", async () => {
    const { LiveMappings } = await import("../src/dmaapi/live.js");
    const live = new LiveMappings<{ pages: bigint; direction: string; sg: boolean }>();
    const model = new Map<number, bigint>();
    let seed = 1;
    const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    // Many maps, then most of them unmapped: the dead records outnumber the live ones, and the table is rebuilt.
    for (let k = 0; k < 6000; k++) { live.set(k * 5, { pages: 1n, direction: "to-device", sg: false }); model.set(k * 5, 1n); }
    for (let k = 0; k < 5000; k++) { live.delete(k * 5); model.delete(k * 5); }
    for (let i = 0; i < 20000; i++) {
      const k = Math.floor(rnd() * 30000);
      if (rnd() < 0.45) { live.set(k, { pages: BigInt(i), direction: "to-device", sg: false }); model.set(k, BigInt(i)); }
      else { live.delete(k); model.delete(k); }
      if (i % 997 === 0) {
        expect(live.size).toBe(model.size);
        for (let j = 0; j < 30000; j += 7) expect(live.get(j)?.pages).toBe(model.get(j));
        expect([...live.values()].map((m) => m.pages).sort()).toEqual([...model.values()].sort());
      }
    }
  });
});

describe("DMA API refusals that need an unusual state", () => {
  it("unmapSg of what is not a scatter-gather mapping, or with another direction, is EINVAL; the mapping stays", async () => {
    const h = await createHost({ arch: "vtd", ramSize: 16 << 20 });
    h.addDevice({ bdf: "0000:02:00.0", driver: "host" });
    const api = h.dmaApi("0000:02:00.0");
    const m = api.mapSg([{ hpa: 0x200000n, length: 64 }], "to-device");
    const page = api.mapPage(0x300000n, PAGE, "to-device");
    expect(errno(() => api.unmapSg({ ...m, direction: "from-device" }))).toBe("EINVAL");
    expect(errno(() => api.unmapSg({ ...m, iova: page }))).toBe("EINVAL");
    expect(errno(() => api.unmapSg({ ...m, iova: m.iova + 1n }))).toBe("EINVAL");
    expect(errno(() => api.unmapPage(m.iova, PAGE, "to-device"))).toBe("EINVAL");
    expect(h.device("0000:02:00.0").dma.read(m.iova, 8).bytes).toBe(8);
    api.unmapSg(m);
    expect(api.stats().live).toBe(1);
  });

  it("a scatter list's segments: numbers are addresses too; a bad shape, a getter that throws or an unknown key is EINVAL, nothing mapped", async () => {
    const h = await createHost({ arch: "vtd", ramSize: 16 << 20 });
    h.addDevice({ bdf: "0000:02:00.0", driver: "host" });
    const api = h.dmaApi("0000:02:00.0");
    const throwing = Object.defineProperty({ length: 16 }, "hpa", { enumerable: true, get() { throw new Error("no"); } });
    const bad = [[throwing], [{ hpa: 0x1000n, length: 0 }], [{ hpa: 0x1000n, length: 1.5 }], [{ hpa: -1, length: 16 }], [{ hpa: 0x1000n, length: 16, dir: 1 }],
      [new Map()], [{ hpa: "0x1000", length: 16 }], [{ hpa: 0x1000n, length: 2 ** 32 }], [{ hpa: 1n << 64n, length: 16 }]];
    bad.forEach((segs, i) => expect(errno(() => api.mapSg(segs as never, "to-device")), `case ${i}`).toBe("EINVAL"));
    expect(api.stats().live).toBe(0);
    const m = api.mapSg([{ hpa: 0x200000, length: 16 }, { length: 8, hpa: 0x300000n }], "to-device");
    expect(m.segments.map((s) => s.length)).toEqual([16, 8]);
  });

  it("no frame left for the page table: ENOMEM, and the IOVA goes back (the next map gets it)", async () => {
    const h = await createHost({ arch: "vtd", ramSize: 16 << 20 });
    h.addDevice({ bdf: "0000:02:00.0", driver: "host" });
    const api = h.dmaApi("0000:02:00.0");
    const held: bigint[] = [];
    while (h.ram.framesFree > 0) held.push(h.ram.allocFrames(1));
    expect(errno(() => api.mapPage(held[0], PAGE, "to-device"))).toBe("ENOMEM");
    expect(api.stats().live).toBe(0);
    for (const f of held) h.ram.freeFrames(f);
    expect(api.mapPage(0x200000n, PAGE, "to-device")).toBe(0xfffff000n);
  });

  it("map_sg is one data-plane call for the whole list; a refusal gives the IOVA back (nothing to unmap: the call is all or nothing)", async () => {
    const { DmaApi } = await import("../src/dmaapi/dmaapi.js");
    const { DmaCookie, IommuMapper } = await import("../src/dmaapi/iommu.js");
    const { IovaDomain } = await import("../src/dmaapi/iova.js");
    const calls: string[] = [];
    let refuse = true;
    const hex = (v: bigint) => v.toString(16);
    const domain = {
      id: 1,
      map: (iova: bigint, last: bigint) => { calls.push(`map ${hex(iova)}-${hex(last)}`); return abi.ST_OK; },
      mapList: (entries: BigUint64Array) => {
        const triples = [];
        for (let k = 0; k < entries.length; k += 3) triples.push(`${hex(entries[k])}-${hex(entries[k + 1])}>${hex(entries[k + 2])}`);
        calls.push(`mapList ${triples.join(" ")}`);
        return refuse ? abi.ERR_ENOMEM : abi.ST_OK;
      },
      unmap: (iova: bigint, last: bigint) => { calls.push(`unmap ${hex(iova)}-${hex(last)}`); return last - iova + 1n; },
      flush: (iova: bigint, last: bigint) => { calls.push(`flush ${hex(iova)}-${hex(last)}`); },
    };
    const iova = new IovaDomain({ startPfn: 1n });
    const api = new DmaApi("0000:02:00.0", new IommuMapper(new DmaCookie(domain, iova, (1n << 48n) - 1n)), 16n << 20n, 32, () => undefined);
    const segs = [{ hpa: 0x200010n, length: 4096 }, { hpa: 0x300000n, length: 4096 }];
    expect(errno(() => api.mapSg(segs, "bidirectional"))).toBe("ENOMEM");
    // One call with every segment in its own pages (the first spans two); nothing else touches the table.
    expect(calls).toEqual(["mapList ffffc000-ffffdfff>200000 ffffe000-ffffefff>300000"]);
    expect(iova.stats().allocated).toBe(0);
    expect(api.stats().live).toBe(0);
    refuse = false;
    expect(api.mapSg(segs, "bidirectional").iova).toBe(0xffffc000n);
    expect(api.stats().live).toBe(1);
  });

  it("map_sg where the page table runs out at a later segment leaves nothing mapped (engine and twin alike)", async () => {
    for (const make of [createHost, createNaiveHost as unknown as typeof createHost]) {
      const h = await make({ arch: "vtd", ramSize: 16 << 20 });
      h.addDevice({ bdf: "0000:02:00.0", driver: "host" });
      const api = h.dmaApi("0000:02:00.0");
      // 2 MiB + 4 KiB take a 4 MiB-aligned range (0xffc00000): the first segment is one 2 MiB leaf
      // (two new tables above it), the second a 4 KiB page that needs a third table.
      const segs = [{ hpa: 0x200000n, length: 0x200000 }, { hpa: 0x600000n, length: 0x1000 }];
      const held: bigint[] = [];
      while (h.ram.framesFree > 2) held.push(h.ram.allocFrames(1));
      const ram = Buffer.from(h.ram.view(0, 16 << 20));
      expect(errno(() => api.mapSg(segs, "to-device"))).toBe("ENOMEM");
      expect(h.ram.framesFree).toBe(2);
      expect(Buffer.from(h.ram.view(0, 16 << 20)).equals(ram)).toBe(true);
      expect(api.stats().live).toBe(0);
      expect(h.device("0000:02:00.0").dma.read(0xffc00000n, 8).fault?.reason).toBe("not-present");
      h.ram.freeFrames(held.pop()!);
      const m = api.mapSg(segs, "to-device");
      expect(m.iova).toBe(0xffc00000n);
      expect(h.ram.framesFree).toBe(0);
      h.ram.write(0x600000n, new Uint8Array([5, 6]));
      expect(Array.from(h.device("0000:02:00.0").dma.read(0xffe00000n, 2).data)).toEqual([5, 6]);
    }
  });

  it("the data plane's mapList: an entry that fails (EEXIST) undoes the ones before it, tables and all (engine and twin alike)", async () => {
    for (const make of [createHost, createNaiveHost as unknown as typeof createHost]) {
      const h = await make({ arch: "vtd", ramSize: 16 << 20 });
      const d = h.createDomain({ format: "vtd-sl", inputBits: 48 });
      const plane = (h as Any).plane;
      d.pageTable.map(0x50000000n, 0x500000n, 0x1000n, { read: true });
      const free = h.ram.framesFree;
      const prot = abi.PERM_R | abi.PERM_W;
      // A page in a table that exists, one far away (new tables), then one overlapping the first.
      const clash = new BigUint64Array([0x50001000n, 0x50001fffn, 0x200000n, 0x8000000000n, 0x8000001fffn, 0x300000n, 0x50001000n, 0x50001fffn, 0x400000n]);
      expect(plane.mapList(d.id, clash, prot)).toBe(abi.ERR_EEXIST);
      expect(h.ram.framesFree).toBe(free);
      expect([d.pageTable.iovaToPhys(0x50001000n), d.pageTable.iovaToPhys(0x8000000000n), d.pageTable.iovaToPhys(0x50000000n)]).toEqual([undefined, undefined, 0x500000n]);
      // A leaf that replaces an emptied table is undone too: the table comes back.
      d.pageTable.map(0x1000000n, 0x200000n, 0x1000n, { read: true });
      d.pageTable.unmap(0x1000000n, 0x1000n);
      const tables = h.ram.framesFree;
      const replace = new BigUint64Array([0x1000000n, 0x11fffffn, 0x200000n, 0x40000000n, 0x40000fffn, 0x200000n, 0x40000000n, 0x40000fffn, 0x200000n]);
      expect(plane.mapList(d.id, replace, prot)).toBe(abi.ERR_EEXIST);
      expect(h.ram.framesFree).toBe(tables);
      expect(d.pageTable.iovaToPhys(0x1000000n)).toBe(undefined);
      expect(plane.mapList(d.id, replace.subarray(0, 6), prot)).toBe(abi.ST_OK);
      expect([d.pageTable.iovaToPhys(0x1000123n), d.pageTable.iovaToPhys(0x40000123n)]).toEqual([0x200123n, 0x200123n]);
    }
  });
});

describe("devices with no IOMMU in front (dma-direct)", () => {
  const BDF = "0000:04:00.0";
  async function host(arch: "vtd" | "smmuv3" = "smmuv3", spec: object = {}): Promise<Host> {
    const h = await createHost({ arch, ramSize: 16 << 20 });
    h.addDevice({ bdf: BDF, iommu: false, driver: "host", ...spec });
    return h;
  }
  const state = (h: Host) => ({ stats: show(h.dmaApi(BDF).stats()), free: h.ram.framesFree, ram: Buffer.from(h.ram.view(0, 16 << 20)) });
  const same = (a: ReturnType<typeof state>, b: ReturnType<typeof state>) => expect(a.stats === b.stats && a.free === b.free && a.ram.equals(b.ram)).toBe(true);

  it("are in no IOMMU group; mapPage returns the physical address, and the device reaches it whatever the direction", async () => {
    const h = await host();
    const dev = h.device(BDF);
    expect([dev.iommu, dev.group, h.iommuGroups()]).toEqual([false, null, []]);
    const api = h.dmaApi(BDF);
    expect([api.direct, api.domainId, api.mask]).toEqual([true, 0, 0xffffffffn]);
    h.ram.write(0x200123n, new Uint8Array([1, 2, 3]));
    expect(api.mapPage(0x200123n, 3n, "to-device")).toBe(0x200123n);
    expect(Array.from(dev.dma.read(0x200123n, 3).data)).toEqual([1, 2, 3]);
    // No IOMMU enforces the direction: the write lands.
    expect(dev.dma.write(0x200123n, new Uint8Array([9])).bytes).toBe(1);
    expect(h.ram.read(0x200123n, 1)[0]).toBe(9);
    // Beyond RAM the identity view has nothing: a fault, as any DMA outside RAM.
    expect(dev.dma.read(BigInt(16 << 20), 4).fault?.reason).toBe("not-present");
    expect(api.stats()).toEqual({ live: 1, iovaBytes: 0n, treeAllocs: 0, rcacheHits: 0, rcacheMisses: 0, above32: false });
  });

  it("reach RAM whoever owns them (nothing stands in the way), through one identity context with the largest leaves", async () => {
    const h = await createHost({ arch: "vtd", ramSize: 16 << 20 });
    const before = h.ram.framesFree;
    h.addDevice({ bdf: BDF, iommu: false });
    // Tables for 16 MiB of 2 MiB leaves: the root, one table per level below it down to the 2 MiB one.
    const tables = before - h.ram.framesFree;
    expect(tables).toBeGreaterThan(0);
    expect(tables).toBeLessThanOrEqual(4);
    h.addDevice({ bdf: "0000:04:00.1", iommu: false });
    expect(h.ram.framesFree).toBe(before - tables);
    const dev = h.device(BDF);
    expect(dev.driver).toBe(null);
    expect(errno(() => h.dmaApi(BDF))).toBe("ENODEV");
    expect(dev.dma.read(0x400000n, 8).bytes).toBe(8);
    const misses = h.iotlb.stats().misses;
    // One 2 MiB leaf covers both: one miss, then a hit.
    expect(h.device("0000:04:00.1").dma.read(0x600000n, 8).bytes).toBe(8);
    expect(dev.dma.read(0x7ff000n, 8).bytes).toBe(8);
    expect(h.iotlb.stats().misses - misses).toBe(1);
  });

  it("a write into VT-d's interrupt window is still an interrupt request, not memory", async () => {
    const h = await host("vtd");
    const seen: unknown[] = [];
    h.onInterrupt((i) => seen.push(i));
    const r = h.device(BDF).dma.write(0xfee00000n, new Uint8Array([0x21, 0, 0, 0]));
    expect(r.interrupt).toEqual({ address: 0xfee00000n, data: 0x21 });
    expect(seen).toHaveLength(1);
  });

  it("the DMA mask: a range ending above it is ENOMEM (DMA_MAPPING_ERROR: no swiotlb), one ending at it maps; nothing changes on a refusal", async () => {
    const h = await host();
    const api = h.dmaApi(BDF);
    api.setMask(20);
    const before = state(h);
    expect(errno(() => api.mapPage(0x200000n, PAGE, "to-device"))).toBe("ENOMEM");
    expect(errno(() => api.mapPage(0xff001n, PAGE, "to-device"))).toBe("ENOMEM");
    expect(errno(() => api.mapSg([{ hpa: 0x1000n, length: 16 }, { hpa: 0x100000n, length: 16 }], "to-device"))).toBe("EIO");
    same(before, state(h));
    expect(api.mapPage(0xff000n, PAGE, "to-device")).toBe(0xff000n);
    api.setMask(64);
    expect(api.mapPage(0x200000n, PAGE, "to-device")).toBe(0x200000n);
  });

  it("unmapPage must match a mapping made (EINVAL otherwise, nothing changed); one page mapped twice is two mappings", async () => {
    const h = await host();
    const api = h.dmaApi(BDF);
    const a = api.mapPage(0x200000n, 64n, "to-device");
    const b = api.mapPage(0x200000n, 64n, "from-device");
    const c = api.mapPage(0x200080n, 64n, "to-device");
    expect([a, b, c]).toEqual([0x200000n, 0x200000n, 0x200080n]);
    const before = state(h);
    expect(errno(() => api.unmapPage(0x300000n, 64n, "to-device"))).toBe("EINVAL");
    expect(errno(() => api.unmapPage(a, 2n * PAGE, "to-device"))).toBe("EINVAL");
    expect(errno(() => api.unmapPage(a, 64n, "bidirectional"))).toBe("EINVAL");
    expect(errno(() => api.unmapPage(a, 0n, "to-device"))).toBe("EINVAL");
    expect(errno(() => api.unmapPage(a, 64n, "sideways" as never))).toBe("EINVAL");
    same(before, state(h));
    expect(api.stats().live).toBe(3);
    api.unmapPage(b, 64n, "from-device");
    expect(errno(() => api.unmapPage(b, 64n, "from-device"))).toBe("EINVAL");
    api.unmapPage(a, 64n, "to-device");
    api.unmapPage(c, 64n, "to-device");
    expect(errno(() => api.unmapPage(a, 64n, "to-device"))).toBe("EINVAL");
    expect(api.stats().live).toBe(0);
  });

  it("mapSg gives each segment its own physical address, none merged; unmapSg must match it", async () => {
    const h = await host();
    const api = h.dmaApi(BDF);
    // Through an IOMMU the first two would merge (one ends on the page the next starts on).
    const m = api.mapSg([{ hpa: 0x200800n, length: 0x800 }, { hpa: 0x201000n, length: 0x1000 }, { hpa: 0x400010n, length: 16 }], "bidirectional");
    expect(m.iova).toBe(0x200000n);
    expect(m.bytes).toBe(3n * PAGE);
    expect(m.segments).toEqual([{ dma: 0x200800n, length: 0x800 }, { dma: 0x201000n, length: 0x1000 }, { dma: 0x400010n, length: 16 }]);
    const before = state(h);
    expect(errno(() => api.unmapSg({ ...m, direction: "to-device" }))).toBe("EINVAL");
    expect(errno(() => api.unmapSg({ ...m, bytes: PAGE }))).toBe("EINVAL");
    expect(errno(() => api.unmapSg({ ...m, iova: 0x400000n }))).toBe("EINVAL");
    expect(errno(() => api.unmapPage(m.iova, PAGE, "bidirectional"))).toBe("EINVAL");
    expect(errno(() => api.mapSg([], "to-device"))).toBe("EINVAL");
    expect(errno(() => api.mapSg([{ hpa: BigInt(16 << 20) - 8n, length: 16 }], "to-device"))).toBe("EINVAL");
    same(before, state(h));
    api.unmapSg(m);
    expect(errno(() => api.unmapSg(m))).toBe("EINVAL");
    expect(api.stats().live).toBe(0);
  });

  it("the spec: no group, reserved regions, isolated MSIs or vfio-pci for a device with no IOMMU (EINVAL, nothing added)", async () => {
    const h = await createHost({ arch: "vtd", ramSize: 16 << 20 });
    const free = h.ram.framesFree;
    for (const extra of [{ group: 3 }, { reserved: [] }, { msiIsolated: true }, { driver: "vfio-pci" }, { iommu: "no" }, { dmaMask: 11 }]) {
      const code = "dmaMask" in extra ? "EIO" : "EINVAL";
      expect(errno(() => h.addDevice({ bdf: BDF, iommu: false, ...extra } as never))).toBe(code);
      expect(errno(() => h.device(BDF))).toBe("ENODEV");
    }
    expect(h.ram.framesFree).toBe(free);
    h.addDevice({ bdf: BDF, iommu: false, msiIsolated: false });
    expect(h.iommuGroups()).toEqual([]);
    // vfio-pci's probe finds no IOMMU group (vfio_group_find_or_alloc: EINVAL); the group files do not exist.
    expect(errno(() => h.device(BDF).bindDriver("vfio-pci"))).toBe("EINVAL");
    expect(h.device(BDF).driver).toBe(null);
    expect(errno(() => h.openGroup(0))).toBe("ENOENT");
    // Nor is it found through another device's group.
    h.addDevice({ bdf: "0000:05:00.0" });
    expect(errno(() => h.openGroup(0).device(BDF))).toBe("ENODEV");
  });

  it("the driver cannot let go while its mappings live (EBUSY); with no driver there is no DMA API (ENODEV)", async () => {
    const h = await host();
    const api = h.dmaApi(BDF);
    const dev = h.device(BDF);
    const dma = api.mapPage(0x200000n, PAGE, "to-device");
    expect(errno(() => dev.bindDriver(null))).toBe("EBUSY");
    api.unmapPage(dma, PAGE, "to-device");
    dev.bindDriver(null);
    expect(errno(() => api.mapPage(0x200000n, PAGE, "to-device"))).toBe("ENODEV");
    expect(errno(() => h.dmaApi(BDF))).toBe("ENODEV");
  });

  it("no frame left for the identity tables: ENOMEM, nothing added; the next try works", async () => {
    const h = await createHost({ arch: "vtd", ramSize: 16 << 20 });
    const held: bigint[] = [];
    while (h.ram.framesFree > 0) held.push(h.ram.allocFrames(1));
    expect(errno(() => h.addDevice({ bdf: BDF, iommu: false }))).toBe("ENOMEM");
    expect(errno(() => h.device(BDF))).toBe("ENODEV");
    // A root but no table below it: the half-built context goes again.
    h.ram.freeFrames(held.pop()!);
    expect(errno(() => h.addDevice({ bdf: BDF, iommu: false }))).toBe("ENOMEM");
    expect([h.ram.framesFree, errno(() => h.device(BDF))]).toEqual([1, "ENODEV"]);
    for (const f of held) h.ram.freeFrames(f);
    const free = h.ram.framesFree;
    h.addDevice({ bdf: BDF, iommu: false });
    expect(h.ram.framesFree).toBeLessThan(free);
    expect(h.device(BDF).dma.read(0x200000n, 8).bytes).toBe(8);
  });
});
