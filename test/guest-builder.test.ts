// The guest page-table builder (c.gpa.pageTable) against a model of what a
// stage-1 table must mean: a set of leaves, each chosen as the largest page
// that fits (io-pgtable's rule), map all-or-nothing with EEXIST on overlap,
// unmap removing only leaves wholly inside the range. After every step the
// device's PASID-tagged DMA must see exactly the model's translations (each
// guest data page carries its own page number), and the guest's allocator
// must get back every table page an unmap empties, never one still in use.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { createHost, IommuError } from "../src/index.js";
import { attempt, errno } from "./support/outcome.js";
import { params } from "./support/runs.js";

const MiB = 1n << 20n;
const PAGE = 0x1000n;
const SIZES = [1n << 30n, 2n * MiB, PAGE];
/** Guest RAM: data pages below TABLES_AT carry their page number; tables come from above it. */
const GUEST_RAM = 8n * MiB;
const TABLES_AT = 6n * MiB;

interface Leaf { gva: bigint; size: bigint; gpa: bigint; write: boolean }

class Model {
  leaves: Leaf[] = [];
  map(gva: bigint, gpa: bigint, size: bigint, write: boolean): string | undefined {
    const last = gva + size - 1n;
    if (this.leaves.some((l) => l.gva <= last && gva <= l.gva + l.size - 1n)) return "EEXIST";
    for (let done = 0n; done < size;) {
      const s = SIZES.find((p) => (gva + done) % p === 0n && (gpa + done) % p === 0n && size - done >= p)!;
      this.leaves.push({ gva: gva + done, size: s, gpa: gpa + done, write });
      done += s;
    }
    return undefined;
  }
  unmap(gva: bigint, size: bigint): bigint {
    const inside = (l: Leaf) => l.gva >= gva && l.gva + l.size <= gva + size;
    const bytes = this.leaves.filter(inside).reduce((n, l) => n + l.size, 0n);
    this.leaves = this.leaves.filter((l) => !inside(l));
    return bytes;
  }
  lookup(gva: bigint): { gpa: bigint; write: boolean } | undefined {
    const l = this.leaves.find((x) => gva >= x.gva && gva < x.gva + x.size);
    return l && { gpa: l.gpa + (gva - l.gva), write: l.write };
  }
}

type Op =
  | { t: "map"; gva: bigint; gpa: bigint; size: bigint; write: boolean }
  | { t: "unmap"; gva: bigint; size: bigint };

// GVAs in four 1 GiB regions (new tables at every level), page and 2 MiB aligned starts.
const gvaArb = fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 511 }), fc.boolean())
  .map(([region, block, page, big]) => BigInt(region) * (1n << 39n) + BigInt(block) * 2n * MiB + (big ? 0n : BigInt(page) * PAGE));
const gpaArb = fc.tuple(fc.integer({ min: 0, max: 1 }), fc.integer({ min: 0, max: 511 }), fc.boolean())
  .map(([block, page, big]) => BigInt(block) * 2n * MiB + (big ? 0n : BigInt(page) * PAGE));
const sizeArb = fc.oneof(fc.integer({ min: 1, max: 8 }).map((n) => BigInt(n) * PAGE), fc.constant(2n * MiB), fc.constant(2n * MiB + PAGE));
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ t: fc.constant("map" as const), gva: gvaArb, gpa: gpaArb, size: sizeArb, write: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("unmap" as const), gva: gvaArb, size: fc.oneof(sizeArb, fc.constant(1n << 39n)) }) },
);


/** A VMM with GUEST_RAM at GPA 0 in a nesting container with one device; stage 2 maps its last `readOnlyTail` bytes read-only. */
async function nestingVm(readOnlyTail = 0n) {
  const h = await createHost({ ramSize: 32 * 1024 * 1024 });
  h.addDevice({ bdf: "0000:01:00.0" });
  const vmm = h.createProcess();
  const gram = vmm.mmap(GUEST_RAM);
  const c = h.openContainer({ process: vmm });
  const g = h.openGroup(0);
  g.setContainer(c);
  c.setIommu("nesting");
  const rw = GUEST_RAM - readOnlyTail;
  c.mapDma({ vaddr: gram, iova: 0n, size: rw, read: true, write: true });
  if (readOnlyTail > 0n) c.mapDma({ vaddr: gram + rw, iova: rw, size: readOnlyTail, read: true, write: false });
  return { h, vmm, gram, c, g };
}

async function scenario(format: "x86-64" | "arm64", ops: Op[]): Promise<void> {
  const { h, vmm, gram, c, g } = await nestingVm();
  const pattern = new Uint8Array(Number(TABLES_AT));
  for (let page = 0; page < pattern.length / 4096; page++) new DataView(pattern.buffer).setUint32(page * 4096, page, true);
  vmm.write(gram, pattern);

  // The guest's page allocator: reuses freed pages first; a page is never handed out twice.
  const free: bigint[] = [];
  const inUse = new Set<bigint>();
  let next = TABLES_AT;
  const allocTable = () => {
    const p = free.pop() ?? (next += PAGE) - PAGE;
    expect(inUse.has(p)).toBe(false);
    inUse.add(p);
    return p;
  };
  const freeTable = (p: bigint) => {
    expect(inUse.delete(p), `table page 0x${p.toString(16)} freed twice or never allocated`).toBe(true);
    free.push(p);
  };
  const pt = c.gpa.pageTable({ format, addressWidth: 48, allocTable, freeTable });
  const nic = g.device("0000:01:00.0");
  const pasid = c.pasid.alloc({ min: 1, max: 10 });
  nic.bindPgtbl({ pasid, format, root: pt.root });
  const model = new Model();

  for (const [n, op] of ops.entries()) {
    const where = `step ${n} ${JSON.stringify(op, (_k, v) => (typeof v === "bigint" ? "0x" + v.toString(16) : v))}`;
    if (op.t === "map") {
      const want = model.map(op.gva, op.gpa, op.size, op.write);
      const got = attempt(() => pt.map(op.gva, op.gpa, op.size, { write: op.write }));
      expect(got, where).toEqual(want ? { error: want } : { ok: undefined });
    } else {
      expect(attempt(() => pt.unmap(op.gva, op.size)), where).toEqual({ ok: model.unmap(op.gva, op.size) });
    }
    c.invalidate([{ pasid, addr: 0n, npages: (1n << 64n) - 1n }]);
    // Every leaf's first and last page, and the page just past it, as the device sees them.
    const probes = model.leaves.flatMap((l) => [l.gva, l.gva + l.size - PAGE, l.gva + l.size]);
    const hex = (v: bigint) => "0x" + v.toString(16);
    const expected = probes.map((gva) => {
      const m = model.lookup(gva);
      return m ? `${hex(gva)} -> page ${m.gpa / PAGE} ${m.write ? "rw" : "ro"}` : `${hex(gva)} -> stage-1 fault`;
    });
    const seen = probes.map((gva) => {
      const r = nic.dma.read(gva, 8, { pasid });
      if (r.fault) return `${hex(gva)} -> ${r.fault.stage === 1 ? "stage-1 fault" : `${r.fault.reason} in stage ${r.fault.stage}`}`;
      const page = new DataView(r.data.buffer, r.data.byteOffset).getBigUint64(0, true);
      const w = nic.dma.write(gva, r.data, { pasid });
      const mode = !w.fault ? "rw" : w.fault.reason === "permission" && w.fault.stage === 1 ? "ro" : `write ${w.fault.reason}`;
      return `${hex(gva)} -> page ${page} ${mode}`;
    });
    expect(seen, where).toEqual(expected);
  }
  // Unmapping everything gives back every table but the root.
  for (const [lo, hi] of format === "x86-64" ? [[0n, 1n << 47n]] : [[0n, 1n << 48n]]) pt.unmap(lo, hi - lo);
  expect([...inUse]).toEqual([pt.root]);
  h.faults.drain();
}

describe("the guest page-table builder agrees with a model of its leaves", () => {
  for (const format of ["x86-64", "arm64"] as const) {
    it(`${format}: random maps and unmaps; DMA sees the model's translations; emptied tables go back`, async () => {
      await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 24 }), (ops) => scenario(format, ops)),
        params(40));
    });
  }

  it("refuses pages for new tables that stage 2 does not let it write, or that are tables already", async () => {
    // Guest RAM at GPA 0 is read-write, except its last MiB, which stage 2 maps read-only.
    const { c } = await nestingVm(MiB);
    const offered: bigint[] = [];
    const freed: bigint[] = [];
    let next = TABLES_AT;
    let give = (): bigint => { next += PAGE; return next - PAGE; };
    const pt = c.gpa.pageTable({ format: "x86-64", allocTable: () => { const p = give(); offered.push(p); return p; }, freeTable: (p) => { freed.push(p); } });
    const root = pt.root;
    offered.length = 0;
    // One of the three new tables would land on a read-only page: EFAULT, all three come back.
    let n = 0;
    give = () => (n++ === 1 ? GUEST_RAM - PAGE : (next += PAGE) - PAGE);
    expect(errno(() => pt.map(0x40000000n, 0x200000n, PAGE))).toBe("EFAULT");
    expect([...freed].sort()).toEqual([...offered].sort());
    // The root offered again as a new table: EINVAL, nothing kept.
    freed.length = 0; offered.length = 0; n = 0;
    give = () => (n++ === 2 ? root : (next += PAGE) - PAGE);
    expect(errno(() => pt.map(0x40000000n, 0x200000n, PAGE))).toBe("EINVAL");
    expect([...freed].sort()).toEqual([...offered].sort());
    // Nothing was written: the root is still empty, and a good allocator now succeeds.
    expect(c.gpa.read(root, 4096).every((b) => b === 0)).toBe(true);
    give = () => (next += PAGE) - PAGE;
    pt.map(0x40000000n, 0x200000n, PAGE);
    expect(pt.unmap(0n, 1n << 47n)).toBe(PAGE);
  });

  it("once the container lets go of its stage 2, the guest table is ENODEV and hands back nothing twice", async () => {
    const { h, c, g } = await nestingVm();
    let next = TABLES_AT;
    const freed: bigint[] = [];
    const pt = c.gpa.pageTable({ format: "x86-64", allocTable: () => (next += PAGE) - PAGE, freeTable: (p) => { freed.push(p); } });
    pt.map(0x40000000n, 0x200000n, PAGE);
    expect(pt.unmap(0n, 1n << 47n)).toBe(PAGE);
    expect(freed.length).toBe(3);
    g.unsetContainer();
    expect(errno(() => pt.unmap(0n, 1n << 47n))).toBe("ENODEV");
    expect(errno(() => pt.map(0x40000000n, 0x200000n, PAGE))).toBe("ENODEV");
    expect(freed.length).toBe(3);
    // The engine too starts each guest call from nothing: a call on a context
    // that is not a guest table reports no pages released or needed.
    const wasm = h.engine.wasm;
    const plain = h.createDomain({ format: "x86-64" });
    expect(wasm.ptGuestUnmap(plain.id, 0n, (1n << 47n) - 1n, 0, 0)).toBe(0n);
    expect(wasm.guestTablesReleased()).toBe(0);
    expect(wasm.ptGuestMap(plain.id, 0n, PAGE - 1n, 0n, 1, 0, 0, 0, 0)).not.toBe(0);
    expect(wasm.guestTablesNeeded()).toBe(0);
  });

  it("an allocator that gives out mid-map gets back the pages it gave; the table is unchanged", async () => {
    const { c } = await nestingVm();
    let next = TABLES_AT, budget = 3;
    const freed: bigint[] = [];
    const pt = c.gpa.pageTable({
      format: "x86-64",
      allocTable: () => { if (budget-- === 0) throw new IommuError("ENOMEM", "guest out of pages"); next += PAGE; return next - PAGE; },
      freeTable: (p) => { freed.push(p); },
    });
    // Root took one page; a 4 KiB map needs three more tables, the allocator has two.
    expect(() => pt.map(0x40000000n, 0x200000n, PAGE)).toThrow(expect.objectContaining({ code: "ENOMEM" }));
    expect(freed.sort()).toEqual([TABLES_AT + PAGE, TABLES_AT + 2n * PAGE]);
    expect(pt.unmap(0n, 1n << 47n)).toBe(0n);
  });
});
