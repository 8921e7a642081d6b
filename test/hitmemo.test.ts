// The hit memo (src/hitmemo.ts) against the naive twin, which has none: the
// per-call paths (translate, translateHpa, readInto, read and write from the
// caller's own arrays) repeat lookups of a few pages, so the memo replays
// them, while invalidations of every scope, unmaps and remaps without an
// invalidation (stale entries), evictions from a tiny IOTLB, writes after
// reads (A/D: a write may have to walk again), PASIDs, nested domains, VFIO
// devices, MSI windows and doorbells, dirty tracking and context changes come
// in between. Every result, the IOTLB counters after every step, the fault
// records and the RAM image must be the twin's.
//
// The directed tests first: each would fail if the engine's TLB generation
// were not bumped by that change (the memo would replay a dead hit).
//
// FC_SEED=<n> replays a seed, FC_RUNS=<n> sets the number of runs (test/support/runs.ts).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { createHost, PAGE_2M, PAGE_4K } from "../src/index.js";
import { createNaiveHost } from "../bench/naive/index.js";
import { attempt } from "./support/outcome.js";
import { expectSame, show } from "./support/compare.js";
import { seededBytes } from "./support/bytes.js";
import { baseStage1 } from "./support/guest.js";
import { atLeast, mayMiss, params } from "./support/runs.js";
import * as abi from "../src/engine/abi.js";

type Any = any; // eslint-disable-line @typescript-eslint/no-explicit-any

const RAM_SIZE = 8 << 20;
const IOVA = 0x40000000n;

/** Replayed hits seen on engine hosts, read before each counters() adds them to the engine's. */
const tally = { replayed: 0, steps: 0, seen: new Set<string>() };

function replayedOf(host: Any): number {
  return host.engine.replayedHits[0];
}

/** What a side looks like after a step: the IOTLB counters (replayed hits added) and the fault ring. */
function observe(host: Any): unknown {
  return { stats: host.iotlb.stats(), pending: host.faults.pending, overflow: host.faults.overflow };
}

/**
 * The two hosts driven alike: run() does the same thing on both and demands
 * the same outcome, then the same counters. A DMA's target bytes are part of
 * its outcome.
 */
class Pair {
  /** Hits the engine side replayed so far. */
  replayed = 0;

  private constructor(readonly engine: Any, readonly twin: Any) {}

  static async create(options: Record<string, unknown>): Promise<Pair> {
    return new Pair(await createHost(options as never), await createNaiveHost(options as never));
  }

  run(where: string, fn: (host: Any, side: "engine" | "twin") => unknown): unknown {
    const b = attempt(() => fn(this.twin, "twin"));
    const a = attempt(() => fn(this.engine, "engine"));
    tally.steps++;
    expectSame(b, a, where);
    const replayed = replayedOf(this.engine);
    this.replayed += replayed;
    tally.replayed += replayed;
    expectSame(observe(this.twin), observe(this.engine), `${where}: counters`);
    return "ok" in a ? a.ok : a;
  }

  /** The end of a scenario: the fault records and the whole RAM image. */
  finish(): void {
    expectSame(this.twin.faults.drain(), this.engine.faults.drain(), "fault records");
    const a = this.engine.ram.view(0n, RAM_SIZE) as Uint8Array, b = this.twin.ram.view(0n, RAM_SIZE) as Uint8Array;
    expect(Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length)), "RAM images differ").toBe(true);
  }
}

/** A readInto on a fresh target, its bytes in the outcome. */
function readInto(dma: Any, iova: number | bigint, len: number, opts?: unknown): unknown {
  const target = new Uint8Array(len);
  return { r: dma.readInto(iova, target, opts), target };
}

// ---------------------------------------------------------------- directed
describe("the hit memo replays a hit only while nothing could change it", () => {
  /** A domain mapping page 0 at IOVA → frame A, after two reads of it (the second is replayed). */
  async function warm(options: Record<string, unknown> = {}) {
    const p = await Pair.create({ ramSize: RAM_SIZE, iotlb: { sets: 16, ways: 2 }, ...options });
    const d = (h: Any): Any => h.__d ??= h.createDomain({ format: "x86-64", levels: 4, pageSizes: [PAGE_4K, PAGE_2M] });
    p.run("create", (h) => d(h).id);
    p.run("map", (h) => d(h).pageTable.map(IOVA, 0x100000n, PAGE_4K, { write: true }));
    p.run("fill", (h) => h.ram.write(0x100000n, seededBytes(1, 4096)));
    p.run("fill", (h) => h.ram.write(0x300000n, seededBytes(2, 4096)));
    for (let k = 0; k < 3; k++) {
      p.run(`translate ${k}`, (h) => d(h).translate(IOVA + 8n));
      p.run(`translateHpa ${k}`, (h) => d(h).translateHpa(Number(IOVA) + 16));
      p.run(`readInto ${k}`, (h) => readInto(d(h).dma, Number(IOVA) + 64 * k, 64));
      p.run(`write ${k}`, (h) => d(h).dma.write(Number(IOVA) + 128 + k, seededBytes(k, 32)));
    }
    return { p, d };
  }

  /** Moves page 0 to frame B without an invalidation: every path still sees A, as the twin does. */
  function moveStale(p: Pair, d: (h: Any) => Any): void {
    p.run("unmap", (h) => d(h).pageTable.unmap(IOVA, PAGE_4K));
    p.run("remap", (h) => d(h).pageTable.map(IOVA, 0x300000n, PAGE_4K, { write: true }));
    const replayed = p.replayed;
    p.run("stale translateHpa", (h) => d(h).translateHpa(Number(IOVA) + 16));
    p.run("stale readInto", (h) => readInto(d(h).dma, Number(IOVA), 16));
    expect(p.replayed, "the stale hits were replayed").toBe(replayed + 2);
  }

  /** After an invalidation the next access of every path misses and sees frame B. */
  function expectFresh(p: Pair, d: (h: Any) => Any): void {
    const before = p.engine.iotlb.stats();
    const hpa = p.run("translateHpa after", (h) => d(h).translateHpa(Number(IOVA) + 16));
    expect(hpa).toBe(0x300010);
    const r = p.run("readInto after", (h) => readInto(d(h).dma, Number(IOVA), 16)) as Any;
    expect(Array.from(r.target)).toEqual(Array.from(seededBytes(2, 16)));
    const t = p.run("translate after", (h) => d(h).translate(IOVA + 8n)) as Any;
    expect(t.hpa).toBe(0x300008n);
    p.run("write after", (h) => d(h).dma.write(Number(IOVA) + 128, seededBytes(9, 32)));
    const after = p.engine.iotlb.stats();
    // translateHpa walked once; readInto, translate and write hit what it filled (read) or walked for write.
    expect(after.misses).toBeGreaterThan(before.misses);
  }

  const scopes: [string, (h: Any, d: Any) => unknown][] = [
    ["a range invalidation", (_h, d) => d.invalidate({ iova: IOVA, npages: 1n })],
    ["a range invalidation of every PASID", (_h, d) => d.invalidate({ iova: IOVA - PAGE_4K, npages: 4n })],
    ["a domain invalidation", (_h, d) => d.invalidate()],
    ["a PASID 0 invalidation", (_h, d) => d.invalidate({ pasid: 0 })],
    ["invalidateAll", (h) => h.iotlb.invalidateAll()],
  ];
  for (const [name, flush] of scopes) {
    it(`after ${name}, a replayed page misses like the twin's`, async () => {
      const { p, d } = await warm();
      moveStale(p, d);
      p.run(name, (h) => flush(h, d(h)));
      expectFresh(p, d);
      p.finish();
    });
  }

  it("an eviction (a fill elsewhere in the set) ends the replay of the evicted page", async () => {
    // One way per set: any fill in page 0's set evicts it.
    const { p, d } = await warm({ iotlb: { sets: 16, ways: 1 } });
    moveStale(p, d);
    // Pages 16 apart share a set in a 16-set IOTLB (same context and size).
    for (let k = 1; k <= 64; k++) p.run(`map ${k}`, (h) => d(h).pageTable.map(IOVA + BigInt(k) * PAGE_4K, 0x400000n + BigInt(k) * PAGE_4K, PAGE_4K, { write: true }));
    for (let k = 1; k <= 64; k++) p.run(`touch ${k}`, (h) => d(h).translateHpa(Number(IOVA) + k * 4096));
    expect(p.engine.iotlb.stats().evictions).toBeGreaterThan(0);
    expectFresh(p, d);
    p.finish();
  });

  it("a write after reads walks again to set the dirty bit (A/D), then replays", async () => {
    const p = await Pair.create({ ramSize: RAM_SIZE, iotlb: { sets: 16, ways: 2 } });
    const d = (h: Any): Any => h.__d ??= h.createDomain({ format: "x86-64", levels: 4, accessedDirty: true, pageSizes: [PAGE_4K] });
    p.run("map", (h) => d(h).pageTable.map(IOVA, 0x100000n, PAGE_4K, { write: true }));
    for (let k = 0; k < 3; k++) p.run(`read ${k}`, (h) => readInto(d(h).dma, Number(IOVA) + k * 8, 8));
    p.run("leaf before", (h) => d(h).walk(IOVA).steps.at(-1).entry);
    for (let k = 0; k < 3; k++) p.run(`write ${k}`, (h) => d(h).dma.write(Number(IOVA) + k * 8, seededBytes(k, 8)));
    const leaf = p.run("leaf after", (h) => d(h).walk(IOVA).steps.at(-1).entry) as bigint;
    expect(leaf & (1n << 6n), "dirty").not.toBe(0n);
    p.run("translate write", (h) => d(h).translate(IOVA, "write"));
    p.run("translate write again", (h) => d(h).translate(IOVA, "write"));
    p.finish();
  });

  it("PASIDs: a hit of one PASID is not another's, and a PASID flush ends only what it should", async () => {
    // Four ways: the page's entries for PASIDs 0, 1 and 2 (one set: the set index ignores the PASID) all stay.
    const { p, d } = await warm({ iotlb: { sets: 16, ways: 4 } });
    for (const pasid of [1, 2, 1, 2]) p.run(`pasid ${pasid}`, (h) => readInto(d(h).dma, Number(IOVA), 16, { pasid }));
    // The PASIDs' fills ended the untagged replays: seen again (engine hits), they are replayed from here.
    p.run("untagged hit", (h) => d(h).translateHpa(Number(IOVA) + 16));
    p.run("untagged hit", (h) => readInto(d(h).dma, Number(IOVA), 16));
    moveStale(p, d);
    for (const pasid of [1, 2]) p.run(`stale pasid ${pasid}`, (h) => readInto(d(h).dma, Number(IOVA), 16, { pasid }));
    p.run("flush pasid 1", (h) => d(h).invalidate({ pasid: 1 }));
    for (const pasid of [1, 2, 0]) p.run(`after, pasid ${pasid}`, (h) => readInto(d(h).dma, Number(IOVA), 16, { pasid }));
    p.finish();
  });

  it("a transfer within a 2 MiB page is one hit per piece, replayed or not", async () => {
    const p = await Pair.create({ ramSize: RAM_SIZE });
    const d = (h: Any): Any => h.__d ??= h.createDomain({ format: "x86-64", levels: 4, pageSizes: [PAGE_4K, PAGE_2M] });
    p.run("map", (h) => d(h).pageTable.map(IOVA, 0x200000n, PAGE_2M, { write: true }));
    for (let k = 0; k < 4; k++) {
      p.run(`read across 4 KiB pages ${k}`, (h) => readInto(d(h).dma, Number(IOVA) + 4000 + k, 9000));
      p.run(`write across 4 KiB pages ${k}`, (h) => d(h).dma.write(Number(IOVA) + 0x1ff000 - k, seededBytes(k, 4000)));
      p.run(`read to the page's end ${k}`, (h) => h.__d.dma.read(Number(IOVA) + 0x1ff000, 0x1000 + k));
    }
    p.finish();
  });

  it("a page that runs out of RAM is never replayed: every access faults", async () => {
    const p = await Pair.create({ ramSize: RAM_SIZE });
    const d = (h: Any): Any => h.__d ??= h.createDomain({ format: "x86-64", levels: 4, pageSizes: [PAGE_4K, PAGE_2M] });
    // A 2 MiB page whose second half lies past the end of RAM.
    p.run("map", (h) => d(h).pageTable.map(IOVA, BigInt(RAM_SIZE) - 0x100000n, PAGE_2M, { write: true }));
    for (let k = 0; k < 3; k++) {
      p.run(`read in RAM ${k}`, (h) => readInto(d(h).dma, Number(IOVA) + 16 * k, 16));
      p.run(`read past RAM ${k}`, (h) => readInto(d(h).dma, Number(IOVA) + 0x100000 + 16 * k, 16));
      p.run(`translate past RAM ${k}`, (h) => d(h).translate(IOVA + 0x100000n));
    }
    p.finish();
  });

  it("nested: a stage-2 invalidation ends the replay of combined entries", async () => {
    const p = await Pair.create({ ramSize: RAM_SIZE, iotlb: { sets: 16, ways: 2 } });
    const setUp = (h: Any): Any => {
      if (h.__n) return h.__n;
      const s2 = h.createDomain({ format: "vtd-sl", inputBits: 48, pageSizes: [PAGE_4K] });
      s2.pageTable.map(0n, 0x100000n, 64n * PAGE_4K, { read: true, write: true });
      baseStage1((gpa, v) => h.ram.writeU64(0x100000n + gpa, v), false);
      const nested = h.createDomain({ stage2: s2, format: "x86-64", root: 0x1000n });
      return (h.__n = { s2, nested });
    };
    expect(p.run("set up", (h) => setUp(h).nested.id)).toBeTypeOf("number");
    for (let k = 0; k < 3; k++) p.run(`read ${k}`, (h) => readInto(setUp(h).nested.dma, 0x1000 + k, 16));
    // GPA page 17 (GVA page 1's) moves to another frame: stale until stage 2 is invalidated.
    p.run("s2 remap", (h) => { const { s2 } = setUp(h); s2.pageTable.unmap(17n * PAGE_4K, PAGE_4K); return s2.pageTable.map(17n * PAGE_4K, 0x300000n, PAGE_4K, { write: true }); });
    p.run("stale", (h) => readInto(setUp(h).nested.dma, 0x1000, 16));
    p.run("s2 invalidate", (h) => setUp(h).s2.invalidate({ iova: 17n * PAGE_4K }));
    for (let k = 0; k < 3; k++) p.run(`after ${k}`, (h) => readInto(setUp(h).nested.dma, 0x1000 + k, 16));
    for (let k = 0; k < 3; k++) p.run(`translate ${k}`, (h) => setUp(h).nested.translate(0x1000n + BigInt(k)));
    p.finish();
  });

  it("a device's PASID-routed DMA is never replayed (its PASID table can change without the generation)", async () => {
    const p = await Pair.create({ ramSize: RAM_SIZE, arch: "vtd" });
    const setUp = (h: Any): Any => {
      if (h.__dev) return h.__dev;
      h.addDevice({ bdf: "0000:03:00.0" });
      const proc = h.createProcess();
      const vaddr = proc.mmap(64n * PAGE_4K);
      const c = h.openContainer({ process: proc });
      const g = h.openGroup(0);
      g.setContainer(c);
      c.setIommu("nesting");
      c.mapDma({ vaddr, iova: 0n, size: 64n * PAGE_4K, read: true, write: true });
      baseStage1((gpa, v) => c.gpa.writeU64(gpa, v), false);
      const pasid = c.pasid.alloc({ min: 1, max: 5 });
      const dev = g.device("0000:03:00.0");
      dev.bindPgtbl({ pasid, format: "x86-64", root: 0x1000n, addressWidth: 48 });
      return (h.__dev = { dev, pasid });
    };
    expect(p.run("set up", (h) => setUp(h).pasid)).toBe(1);
    const replayed = p.replayed;
    for (let k = 0; k < 5; k++) {
      p.run(`routed read ${k}`, (h) => readInto(setUp(h).dev.dma, 0x1000 + k, 16, { pasid: setUp(h).pasid }));
      p.run(`routed write ${k}`, (h) => setUp(h).dev.dma.write(0x2000 + k, seededBytes(k, 16), { pasid: setUp(h).pasid }));
    }
    expect(p.replayed).toBe(replayed);
    // The same device's untagged DMA goes through its container's domain: replayed.
    for (let k = 0; k < 5; k++) p.run(`untagged ${k}`, (h) => readInto(setUp(h).dev.dma, 0x1000 + k, 16));
    expect(p.replayed).toBeGreaterThan(replayed);
    p.finish();
  });

  it("the counters include replayed hits, and reading them twice adds nothing", async () => {
    const { p, d } = await warm();
    const replayed = p.replayed;
    for (let k = 0; k < 10; k++) p.run(`hpa ${k}`, (h) => d(h).translateHpa(Number(IOVA) + k));
    expect(p.replayed).toBe(replayed + 10);
    // Unread replayed hits are added when the counters are read, once.
    for (let k = 0; k < 10; k++) p.engine.__d.translateHpa(Number(IOVA) + k);
    expect(replayedOf(p.engine)).toBe(10);
    const s = p.engine.iotlb.stats();
    expect(replayedOf(p.engine)).toBe(0);
    for (let k = 0; k < 10; k++) p.twin.__d.translateHpa(Number(IOVA) + k);
    expect(p.engine.iotlb.stats()).toEqual(s);
    expect(s).toEqual(p.twin.iotlb.stats());
  });
});

// ---------------------------------------------------------------- the engine's side of the contract
describe("the engine's TLB generation", () => {
  it("moves with everything that could change a lookup, and with nothing a hit does", async () => {
    const h: Any = await createHost({ ramSize: RAM_SIZE, iotlb: { sets: 16, ways: 2 } });
    const e = h.engine, w = e.wasm;
    const d = h.createDomain({ format: "x86-64", levels: 4, pageSizes: [PAGE_4K, PAGE_2M] });
    d.pageTable.map(IOVA, 0x100000n, PAGE_4K, { write: true });
    const gen = (): number => e.generation[0];
    const moves = (what: string, fn: () => unknown): void => {
      const before = gen();
      fn();
      expect(gen(), what).toBeGreaterThan(before);
    };
    const stays = (what: string, fn: () => unknown): void => {
      const before = gen();
      fn();
      expect(gen(), what).toBe(before);
    };
    moves("a fill", () => d.translateHpa(Number(IOVA)));
    stays("a hit", () => w.translateNumber(d.id, 0, Number(IOVA), 1, 0));
    stays("a piece that hits", () => w.dmaStep(d.id, 0, 1, 0, Number(IOVA), 16, 0));
    stays("a fault", () => d.translate(IOVA + PAGE_4K));
    stays("a probe walk", () => d.walk(IOVA));
    stays("a page-table change", () => { d.pageTable.unmap(IOVA, PAGE_4K); d.pageTable.map(IOVA, 0x200000n, PAGE_4K, { write: true }); });
    stays("reading the counters", () => h.iotlb.stats());
    moves("a range flush", () => d.invalidate({ iova: IOVA, npages: 1n }));
    moves("a PASID flush", () => d.invalidate({ pasid: 3 }));
    moves("a domain flush", () => d.invalidate());
    moves("a flush of everything", () => h.iotlb.invalidateAll());
    moves("new flags", () => w.contextSetFlags(d.id, abi.CTX_AD));
    moves("an MSI window", () => w.contextSetMsiWindow(d.id, 0xfee00000n, 0xfeefffffn));
    moves("a doorbell", () => w.setMsiDoorbell(0xffff0000n, 0xffff0fffn));
    const other = h.createDomain({ format: "vtd-sl", inputBits: 48, pageSizes: [PAGE_4K] });
    moves("a stage 2", () => w.contextSetNested(d.id, other.id));
    moves("a single stage again", () => w.contextSetNested(d.id, 0));
    moves("a new context", () => h.createDomain({ format: "x86-64", levels: 4 }));
    moves("a context going", () => other.destroy());
    moves("a dirty scan that clears", () => { const bitmap = h.allocBuffer(8); w.dirtyBitmap(d.id, IOVA, IOVA + PAGE_4K - 1n, 12, e.isDirect(bitmap), 1); });
  });

  /**
   * The same writes from the caller's own array (piece by piece, replayed
   * where the engine allows) and from an engine buffer (the engine's own
   * copy), again and again: the same bytes, interrupts and faults.
   */
  async function sameAsEngineCopy(setUp: (h: Any, d: Any) => void, iovas: number[], len: number): Promise<void> {
    const h: Any = await createHost({ ramSize: RAM_SIZE });
    const d = h.createDomain({ format: "x86-64", levels: 4, pageSizes: [PAGE_4K, PAGE_2M] });
    d.pageTable.map(IOVA, 0x200000n, PAGE_2M, { write: true });
    // A 4 KiB page clear of both, replayed as usual (the control).
    d.pageTable.map(IOVA + 0x400000n, 0x500000n, PAGE_4K, { write: true });
    iovas = [...iovas, Number(IOVA) + 0x400000, Number(IOVA) + 0x400008];
    setUp(h, d);
    const own = new Uint8Array(len), engineBuffer = h.allocBuffer(len);
    const replayed = new Map<number, number>();
    for (let round = 0; round < 3; round++) {
      for (const iova of iovas) {
        own.set(seededBytes(iova + round, len));
        engineBuffer.set(own);
        const before = h.engine.replayedHits[0];
        const mine = d.dma.write(iova, own);
        replayed.set(iova, (replayed.get(iova) ?? 0) + h.engine.replayedHits[0] - before);
        const theirs = d.dma.write(iova, engineBuffer);
        expect(mine, `write at 0x${iova.toString(16)}, round ${round}`).toEqual(theirs);
      }
    }
    // Only the control page's writes are replayed: the 2 MiB page holds the window or the doorbell.
    for (const [iova, n] of replayed) expect(n > 0, `0x${iova.toString(16)} replayed`).toBe(iova >= Number(IOVA) + 0x400000);
  }

  it("a write never replays into an MSI window inside its translation page", async () => {
    // The window is the 4 KiB at IOVA + 1 MiB, inside the 2 MiB page: writes up to it are cut there.
    const start = Number(IOVA) + 0x100000;
    await sameAsEngineCopy((h, d) => h.engine.wasm.contextSetMsiWindow(d.id, BigInt(start), BigInt(start + 0xfff)),
      [Number(IOVA), start - 2, start - 64, start + 0x1000, Number(IOVA) + 8, start - 2], 32);
  });

  it("a write never replays onto a doorbell inside its translation page", async () => {
    // A doorbell in RAM (the model keeps it outside; the engine must not care): the 4 KiB at HPA 0x300000.
    await sameAsEngineCopy((h) => h.engine.wasm.setMsiDoorbell(0x300000n, 0x300fffn),
      [Number(IOVA), Number(IOVA) + 0x100000, Number(IOVA) + 0xfffe, Number(IOVA) + 8, Number(IOVA) + 0x100000], 16);
  });
});

// ---------------------------------------------------------------- random: domains
interface Spec { format: "x86-64" | "arm64" | "vtd-sl"; ad: boolean; extra: boolean }

type Access = { t: "access"; d: number; kind: "translate" | "hpa" | "readInto" | "read" | "write"; page: number; off: number; len: number;
  pasid: number; privileged: boolean; big: boolean; repeat: number; seed: number };
type DomOp =
  | Access
  | { t: "invalidate"; d: number; scope: "all" | "domain" | "pasid" | "range"; pasid: number; page: number; npages: number }
  | { t: "remap"; d: number; page: number; frame: number; write: boolean; big: boolean }
  | { t: "unmap"; d: number; page: number }
  | { t: "flood"; d: number; from: number }
  | { t: "ramWrite"; frame: number; seed: number }
  | { t: "recreate"; d: number }
  | { t: "s2"; how: "remap" | "invalidate" | "invalidateAll"; page: number; write: boolean };

const PAGES = 12;
/** IOVA page p of a domain: 4 KiB pages 0..PAGES-1 at IOVA, then a 2 MiB region at IOVA + 2 MiB. */
const pageIova = (p: number): number => (p < PAGES ? Number(IOVA) + p * 4096 : Number(IOVA) + 0x200000 + (p - PAGES) * 4096);

function domainOf(h: Any, specs: Spec[], d: number): Any {
  h.__doms ??= [];
  const k = d % (specs.length + 1);
  if (h.__doms[k]) return h.__doms[k];
  let dom: Any;
  if (k === specs.length) {
    // The nested domain: x86-64 stage 1 at GPA 0x1000 over a VT-d second level mapping guest RAM at 0x100000.
    const s2 = h.__s2 ??= (() => {
      const s = h.createDomain({ format: "vtd-sl", inputBits: 48, pageSizes: [PAGE_4K, PAGE_2M], accessedDirty: specs[0].ad });
      s.pageTable.map(0n, 0x100000n, 64n * PAGE_4K, { read: true, write: true });
      s.pageTable.map(PAGE_2M, 0x200000n, PAGE_2M, { read: true, write: true });
      baseStage1((gpa, v) => h.ram.writeU64(0x100000n + gpa, v), false);
      return s;
    })();
    dom = h.createDomain({ stage2: s2, format: "x86-64", root: 0x1000n, accessedDirty: specs[0].ad, eafe: specs[0].ad && specs[0].extra });
  } else {
    const s = specs[k];
    const base = s.format === "x86-64" ? { format: "x86-64", levels: 4, accessedDirty: s.ad, eafe: s.ad && s.extra }
      : s.format === "arm64" ? { format: "arm64", inputBits: 40, physAddrWidth: 40, accessedDirty: s.ad, hd: s.ad && s.extra }
        : { format: "vtd-sl", inputBits: 48, accessedDirty: s.ad };
    dom = h.createDomain({ ...base, pageSizes: [PAGE_4K, PAGE_2M] });
    for (let p = 0; p < PAGES; p++) dom.pageTable.map(BigInt(pageIova(p)), 0x400000n + BigInt((p * 7 + k * 3) % 32) * PAGE_4K, PAGE_4K, { write: p % 5 !== 4 });
    dom.pageTable.map(IOVA + PAGE_2M, 0x600000n, PAGE_2M, { write: true });
  }
  return (h.__doms[k] = dom);
}

/** The IOVA an access of a nested domain uses: its GVA pages 0..15 and 2 MiB. */
const nestedIova = (p: number): number => (p < PAGES ? p * 4096 : 0x200000 + (p - PAGES) * 4096);

function applyDom(h: Any, specs: Spec[], op: DomOp): unknown {
  const nested = (d: number) => d % (specs.length + 1) === specs.length;
  switch (op.t) {
    case "access": {
      const dom = domainOf(h, specs, op.d);
      const out: unknown[] = [];
      for (let k = 0; k < op.repeat; k++) {
        const at = (nested(op.d) ? nestedIova(op.page) : pageIova(op.page)) + ((op.off + k * 40) % 4096);
        const iova = op.big ? BigInt(at) : at;
        // Half the untagged, unprivileged accesses pass no options at all (the per-call fast paths take only those).
        const opts = !op.pasid && !op.privileged && op.seed % 2 === 0 ? undefined : { pasid: op.pasid, privileged: op.privileged };
        switch (op.kind) {
          case "translate": out.push(attempt(() => dom.translate(iova, op.privileged ? { read: true, privileged: true } : "read", { pasid: op.pasid }))); break;
          case "hpa": out.push(attempt(() => dom.translateHpa(iova, op.seed % 3 === 0 ? "write" : "read", { pasid: op.pasid }))); break;
          case "readInto": out.push(attempt(() => readInto(dom.dma, iova, op.len, opts))); break;
          case "read": out.push(attempt(() => dom.dma.read(iova, op.len, opts))); break;
          case "write": out.push(attempt(() => dom.dma.write(iova, seededBytes(op.seed + k, op.len), opts))); break;
        }
      }
      return out;
    }
    case "invalidate": {
      const dom = domainOf(h, specs, op.d);
      if (op.scope === "all") return h.iotlb.invalidateAll();
      if (op.scope === "domain") return dom.invalidate();
      if (op.scope === "pasid") return dom.invalidate({ pasid: op.pasid });
      return dom.invalidate({ iova: BigInt(nested(op.d) ? nestedIova(op.page) : pageIova(op.page)) & ~0xfffn, npages: BigInt(op.npages), pasid: op.pasid === 0 ? undefined : op.pasid });
    }
    case "remap": {
      if (nested(op.d)) return "nested";
      const dom = domainOf(h, specs, op.d);
      const iova = BigInt(pageIova(op.page));
      if (op.big && op.page >= PAGES) {
        dom.pageTable.unmap(IOVA + PAGE_2M, PAGE_2M);
        return dom.pageTable.map(IOVA + PAGE_2M, op.frame % 2 === 0 ? 0x600000n : 0x200000n, PAGE_2M, { write: op.write });
      }
      const bytes = dom.pageTable.unmap(iova, PAGE_4K);
      return [bytes, attempt(() => dom.pageTable.map(iova, 0x400000n + BigInt(op.frame % 48) * PAGE_4K, PAGE_4K, { write: op.write }))];
    }
    case "unmap": return nested(op.d) ? "nested" : domainOf(h, specs, op.d).pageTable.unmap(BigInt(pageIova(op.page)), PAGE_4K);
    case "flood": {
      // Fills that compete for ways: 40 pages past the mapped ones (walks that fault fill nothing; these are mapped on demand).
      const dom = domainOf(h, specs, op.d);
      if (nested(op.d)) return [0, 1, 2, 3, 4, 5, 6, 7].map((p) => dom.translateHpa((op.from + p) % 16 * 4096));
      const out: number[] = [];
      for (let p = 0; p < 40; p++) {
        const iova = IOVA + 0x800000n + BigInt(op.from + p) * PAGE_4K;
        if (dom.pageTable.iovaToPhys(iova) === undefined) dom.pageTable.map(iova, 0x500000n + BigInt(p) * PAGE_4K, PAGE_4K, { write: true });
        out.push(dom.translateHpa(iova));
      }
      return out;
    }
    case "ramWrite": return h.ram.write(0x400000n + BigInt(op.frame % 64) * PAGE_4K + 100n, seededBytes(op.seed, 200));
    case "recreate": {
      // The domain goes (its id is handed out again) and comes back with the same mappings.
      const k = op.d % (specs.length + 1);
      if (k === specs.length || !h.__doms?.[k]) return "kept";
      h.__doms[k].destroy();
      h.__doms[k] = undefined;
      return domainOf(h, specs, op.d).id;
    }
    case "s2": {
      const s2 = h.__s2;
      if (!s2) return "no stage 2";
      if (op.how === "invalidate") return s2.invalidate({ iova: BigInt(16 + (op.page % 16)) * PAGE_4K });
      if (op.how === "invalidateAll") return s2.invalidate();
      const gpa = BigInt(16 + (op.page % 16)) * PAGE_4K;
      s2.pageTable.unmap(gpa, PAGE_4K);
      return s2.pageTable.map(gpa, 0x100000n + BigInt(32 + (op.page % 16)) * PAGE_4K, PAGE_4K, { read: true, write: op.write });
    }
  }
}

const specArb: fc.Arbitrary<Spec> = fc.record({ format: fc.constantFrom("x86-64" as const, "arm64" as const, "vtd-sl" as const), ad: fc.boolean(), extra: fc.boolean() });
const d = fc.nat(3);
const pageArb = fc.oneof({ weight: 4, arbitrary: fc.nat(3) }, { weight: 2, arbitrary: fc.nat(PAGES - 1) }, { weight: 1, arbitrary: fc.integer({ min: PAGES, max: PAGES + 600 }) });
const accessArb: fc.Arbitrary<DomOp> = fc.record({
  t: fc.constant("access" as const), d, kind: fc.constantFrom("translate" as const, "hpa" as const, "readInto" as const, "readInto" as const, "read" as const, "write" as const, "write" as const),
  page: pageArb, off: fc.oneof(fc.nat(4095), fc.constantFrom(0, 4032, 4090)), len: fc.oneof({ weight: 5, arbitrary: fc.constantFrom(0, 1, 4, 16, 64, 100) }, { weight: 1, arbitrary: fc.constantFrom(4096, 5000, 9000) }),
  pasid: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.constantFrom(1, 2) }), privileged: fc.oneof({ weight: 5, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  big: fc.boolean(), repeat: fc.integer({ min: 1, max: 4 }), seed: fc.nat(),
});
const domOpArb: fc.Arbitrary<DomOp> = fc.oneof(
  { weight: 30, arbitrary: accessArb },
  { weight: 5, arbitrary: fc.record({ t: fc.constant("invalidate" as const), d, scope: fc.constantFrom("all" as const, "domain" as const, "pasid" as const, "range" as const, "range" as const),
    pasid: fc.constantFrom(0, 1, 2), page: pageArb, npages: fc.constantFrom(1, 2, 16) }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant("remap" as const), d, page: pageArb, frame: fc.nat(), write: fc.boolean(), big: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("unmap" as const), d, page: fc.nat(PAGES - 1) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("flood" as const), d, from: fc.nat(64) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("ramWrite" as const), frame: fc.nat(), seed: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("recreate" as const), d }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("s2" as const), how: fc.constantFrom("remap" as const, "invalidate" as const, "invalidateAll" as const), page: fc.nat(), write: fc.boolean() }) },
);

async function domainScenario(specs: Spec[], tlb: { sets: number; ways: number }, ops: DomOp[]): Promise<void> {
  const p = await Pair.create({ ramSize: RAM_SIZE, iotlb: tlb, faultRingSize: 16 });
  for (const [n, op] of ops.entries()) {
    const out = p.run(`step ${n} ${show(op)}`, (h) => applyDom(h, specs, op));
    // What the step met: an access kind that moved data or translated (on the nested domain too), a fault.
    const text = show(out);
    if (op.t === "access" && /"ok":(\{"r":\{"bytes":[1-9]|\{"data"|\{"bytes":[1-9]|\{"hpa"|[1-9])/.test(text)) tally.seen.add(`${op.kind}${op.d % (specs.length + 1) === specs.length ? ":nested" : ""}`);
    if (text.includes('"fault"')) tally.seen.add("fault");
  }
  p.finish();
}

// ---------------------------------------------------------------- random: VFIO devices
type VfioOp =
  | { t: "dma"; dev: number; write: boolean; page: number; off: number; len: number; repeat: number; seed: number }
  | { t: "msi"; dev: number; off: number; repeat: number }
  | { t: "unmap"; page: number }
  | { t: "map"; page: number; write: boolean }
  | { t: "dirty"; how: "start" | "stop" | "bitmap" }
  | { t: "detach" }
  | { t: "attach" };

const VFIO_PAGES = 16;

function vfioSide(h: Any, arch: string): Any {
  if (h.__v) return h.__v;
  h.addDevice({ bdf: "0000:03:00.0" });
  h.addDevice({ bdf: "0000:03:00.1", group: 0 });
  const proc = h.createProcess();
  const vaddr = proc.mmap(BigInt(VFIO_PAGES) * PAGE_4K);
  const c = h.openContainer({ process: proc });
  const g = h.openGroup(0);
  g.setContainer(c);
  c.setIommu("type1v2");
  c.mapDma({ vaddr, iova: 0x100000n, size: BigInt(VFIO_PAGES) * PAGE_4K, read: true, write: true });
  const irqs: unknown[] = [];
  h.onInterrupt((irq: unknown) => irqs.push(irq));
  return (h.__v = { proc, vaddr, c, g, irqs, arch, devices: [g.device("0000:03:00.0"), g.device("0000:03:00.1")] });
}

function applyVfio(h: Any, arch: string, op: VfioOp): unknown {
  const v = vfioSide(h, arch);
  const dev = (k: number) => v.devices[k % 2];
  switch (op.t) {
    case "dma": {
      const out: unknown[] = [];
      for (let k = 0; k < op.repeat; k++) {
        const iova = 0x100000 + (op.page % (VFIO_PAGES + 2)) * 4096 + ((op.off + 24 * k) % 4096);
        out.push(attempt(() => (op.write ? dev(op.dev).dma.write(iova, seededBytes(op.seed + k, op.len)) : readInto(dev(op.dev).dma, iova, op.len))));
      }
      return { out, irqs: v.irqs.splice(0) };
    }
    case "msi": {
      const out: unknown[] = [];
      for (let k = 0; k < op.repeat; k++) {
        const at = dev(op.dev).msiAddress as bigint | undefined;
        if (at === undefined) { out.push("no msi address"); continue; }
        // The doorbell's page (4 bytes of data, or a write running into it) and the page before it.
        out.push(attempt(() => dev(op.dev).dma.write(Number(at) + op.off - 2, new Uint8Array([1, 2, 3, 4, 5, 6]))));
        out.push(attempt(() => readInto(dev(op.dev).dma, Number(at) - 4096 + (op.off & 0xff0), 16)));
      }
      return { out, irqs: v.irqs.splice(0) };
    }
    case "unmap": return attempt(() => v.c.unmapDma({ iova: 0x100000n + BigInt(op.page % VFIO_PAGES) * PAGE_4K, size: PAGE_4K }));
    case "map": {
      const page = BigInt(op.page % VFIO_PAGES);
      return attempt(() => v.c.mapDma({ vaddr: v.vaddr + page * PAGE_4K, iova: 0x100000n + page * PAGE_4K, size: PAGE_4K, read: true, write: op.write }));
    }
    case "dirty":
      if (op.how === "start") return attempt(() => v.c.dirty.start());
      if (op.how === "stop") return attempt(() => v.c.dirty.stop());
      return attempt(() => v.c.dirty.bitmap({ iova: 0x100000n, size: BigInt(VFIO_PAGES) * PAGE_4K, pgsize: PAGE_4K }));
    case "detach": return attempt(() => v.g.unsetContainer());
    case "attach": return attempt(() => { v.g.setContainer(v.c); if (!v.c.domain) v.c.setIommu("type1v2"); return v.c.mappings().length; });
  }
}

const vfioOpArb: fc.Arbitrary<VfioOp> = fc.oneof(
  { weight: 20, arbitrary: fc.record({ t: fc.constant("dma" as const), dev: fc.nat(1), write: fc.boolean(), page: fc.oneof(fc.nat(3), fc.nat(VFIO_PAGES + 1)), off: fc.nat(4095),
    len: fc.constantFrom(0, 1, 4, 16, 64, 4096, 6000), repeat: fc.integer({ min: 1, max: 4 }), seed: fc.nat() }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant("msi" as const), dev: fc.nat(1), off: fc.constantFrom(0, 2, 4, 0x800), repeat: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("unmap" as const), page: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("map" as const), page: fc.nat(), write: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("dirty" as const), how: fc.constantFrom("start" as const, "stop" as const, "bitmap" as const, "bitmap" as const) }) },
  { weight: 1, arbitrary: fc.constantFrom<VfioOp>({ t: "detach" }, { t: "attach" }) },
);

async function vfioScenario(arch: "vtd" | "smmuv3", ways: number, ops: VfioOp[]): Promise<void> {
  const p = await Pair.create({ ramSize: RAM_SIZE, arch, iotlb: { sets: 16, ways }, faultRingSize: 16 });
  for (const [n, op] of ops.entries()) {
    const out = p.run(`step ${n} ${show(op)}`, (h) => applyVfio(h, arch, op)) as Any;
    if (out?.irqs?.length) tally.seen.add(`irq:${arch}`);
  }
  p.finish();
}

describe("the hit memo against the twin, on random sequences", () => {
  it("domains (x86-64, Arm, VT-d, nested; A/D, EAFE, HD): repeated accesses, invalidations, remaps, evictions, PASIDs", async () => {
    const tlbArb = fc.record({ sets: fc.constant(16), ways: fc.constantFrom(1, 2, 4) });
    await fc.assert(fc.asyncProperty(fc.array(specArb, { minLength: 1, maxLength: 3 }), tlbArb, fc.array(domOpArb, { minLength: 10, maxLength: 80 }),
      (specs, tlb, ops) => domainScenario(specs, tlb, ops)), params(120));
  }, 120_000);

  it("VFIO devices (VT-d MSI window, SMMUv3 doorbell): repeated DMA, MSI writes, unmap/map, dirty tracking, detach/attach", async () => {
    await fc.assert(fc.asyncProperty(fc.constantFrom("vtd" as const, "smmuv3" as const), fc.constantFrom(1, 2, 4), fc.array(vfioOpArb, { minLength: 10, maxLength: 60 }),
      (arch, ways, ops) => vfioScenario(arch, ways, ops)), params(80));
  }, 120_000);

  it("replayed hits on every path", () => {
    if (process.env.DIFF_STATS) console.log(tally);
    expect(tally.replayed).toBeGreaterThan(atLeast(1000));
    const mustSee = ["translate", "hpa", "readInto", "read", "write", "readInto:nested", "write:nested", "fault", "irq:vtd", "irq:smmuv3"];
    const missed = mustSee.filter((k) => !tally.seen.has(k));
    expect(missed.length, `never met: ${missed.join(", ")}`).toBeLessThanOrEqual(mayMiss(mustSee.length));
  });
});
