// The isolation property of driver domains, and the twin. Random VMs,
// serve/unserve, delegated maps and unmaps, grants, restricted mappers,
// destroys and device DMA run on the engine host and the naive twin at once.
// After every step the test's own model (the rules of docs/xen-model.md,
// computed here independently) says exactly which page each bus frame of
// each backend reaches: the backend's own page (BFN = GFN), a page mapped for
// it, or nothing. Every page carries a tag naming its (VM, GFN), so a device
// read proves which frame it reached; the test reads every BFN ever touched,
// the edges of the own range, and random ones. Both hosts must give the same
// answers (errno or result) to every call.
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { createHost, type DmaPort, type Vm, type Hypervisor, type RestrictedMapper } from "../src/index.js";
import { createNaiveHost } from "../bench/naive/index.js";
import { attempt, type Outcome } from "./support/outcome.js";
import { params } from "./support/runs.js";

type Any = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const BDFS = ["0000:03:00.0", "0000:04:00.0"];
const TAG = 12;
const tag = (vm: number, gfn: number): Uint8Array => new TextEncoder().encode(`v${String(vm).padStart(3, "0")}g${String(gfn).padStart(7, "0")}`);
const text = (b: Uint8Array): string => new TextDecoder().decode(b);

type Op =
  | { t: "create"; pages: number }
  | { t: "destroy"; vm: number }
  | { t: "serve" | "unserve"; b: number; vm: number }
  | { t: "map"; b: number; bfn: number; vm: number; gfn: number; count: number; write: boolean; served: boolean }
  | { t: "unmap"; b: number; bfn: number; count: number }
  | { t: "grant"; vm: number; b: number; gfn: number; readOnly: boolean }
  | { t: "mapGrant"; b: number; bfn: number; vm: number; pick: number; write: boolean }
  | { t: "revoke"; vm: number; pick: number }
  | { t: "restrict"; b: number; vms: number[]; maxPages: number }
  | { t: "mapperMap"; pick: number; bfn: number; vm: number; gfn: number; count: number }
  | { t: "mapperUnmap"; pick: number; bfn: number; count: number };

const vmRef = fc.nat(8);
const bfnArb = fc.oneof({ weight: 1, arbitrary: fc.integer({ min: 0, max: 9 }) }, { weight: 4, arbitrary: fc.integer({ min: 8, max: 24 }) },
  { weight: 4, arbitrary: fc.integer({ min: 0x100, max: 0x108 }) }, { weight: 1, arbitrary: fc.constant(2 ** 36 - 1) });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 1, arbitrary: fc.record({ t: fc.constant("create" as const), pages: fc.integer({ min: 1, max: 12 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("destroy" as const), vm: vmRef }) },
  { weight: 6, arbitrary: fc.record({ t: fc.constant("serve" as const), b: fc.nat(1), vm: vmRef }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("unserve" as const), b: fc.nat(1), vm: vmRef }) },
  { weight: 8, arbitrary: fc.record({ t: fc.constant("map" as const), b: fc.nat(1), bfn: bfnArb, vm: vmRef, gfn: fc.nat(5), count: fc.integer({ min: 1, max: 2 }), write: fc.boolean(), served: fc.boolean() }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant("unmap" as const), b: fc.nat(1), bfn: bfnArb, count: fc.integer({ min: 1, max: 4 }) }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("grant" as const), vm: vmRef, b: fc.nat(1), gfn: fc.nat(6), readOnly: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("mapGrant" as const), b: fc.nat(1), bfn: bfnArb, vm: vmRef, pick: fc.nat(), write: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("revoke" as const), vm: vmRef, pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("restrict" as const), b: fc.nat(1), vms: fc.array(vmRef, { maxLength: 2 }), maxPages: fc.integer({ min: 1, max: 4 }) }) },
  { weight: 6, arbitrary: fc.record({ t: fc.constant("mapperMap" as const), pick: fc.nat(), bfn: bfnArb, vm: vmRef, gfn: fc.nat(5), count: fc.integer({ min: 1, max: 2 }) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("mapperUnmap" as const), pick: fc.nat(), bfn: bfnArb, count: fc.integer({ min: 1, max: 3 }) }) },
);

/** The model's view of one mapped bus frame. */
interface Page { vm: number; gfn: number; write: boolean; gref?: number; mapper?: number }
interface ModelVm { id: number; pages: number; backend: boolean; served: Set<number>; table: Map<number, Page>; grants: Map<number, { to: number; gfn: number; readOnly: boolean; maps: number }> }

/** One host's side: its hypervisor, VMs by index of creation, devices' DMA, mappers. */
interface Side { hv: Hypervisor<Any>; vms: Vm<Any>[]; dma: DmaPort[]; mappers: RestrictedMapper[] }

async function side(twin: boolean): Promise<Side> {
  const host: Any = twin ? await createNaiveHost({ arch: "vtd", ramSize: 8 << 20 }) : await createHost({ arch: "vtd", ramSize: 8 << 20 });
  for (const bdf of BDFS) host.addDevice({ bdf, driver: null });
  const hv = host.hypervisor() as Hypervisor<Any>;
  const vms = [
    hv.createVm({ name: "back0", memory: 8 * 4096, devices: [BDFS[0]] }),
    hv.createVm({ name: "back1", memory: 6 * 4096, devices: [BDFS[1]] }),
    ...GUESTS.map((pages) => hv.createVm({ memory: pages * 4096 })),
  ];
  return { hv, vms, dma: vms.slice(0, 2).map((v, i) => v.device(BDFS[i]).dma as DmaPort), mappers: [] };
}

function tagPages(vm: Vm<Any>): void {
  for (let g = 0; g < vm.gfnCount; g++) vm.write(g * 4096, tag(vm.id, g));
}

const BFN_LIMIT = 2 ** 36;
/** Pages of the guests every run starts with (VMs 3..6). */
const GUESTS = [4, 12, 1, 7];

class Model {
  vms: ModelVm[] = [];
  mappers: { b: number; vms: Set<number>; max: number; held: number }[] = [];
  touched = [new Set<number>(), new Set<number>()];

  add(id: number, pages: number, backend: boolean): void {
    this.vms.push({ id, pages, backend, served: new Set(), table: new Map(), grants: new Map() });
  }
  live(i: number): ModelVm | undefined { return this.vms[i] !== undefined && this.vms[i].pages > 0 ? this.vms[i] : undefined; }
  private forget(b: ModelVm, bfn: number): void {
    const p = b.table.get(bfn)!;
    if (p.gref !== undefined) this.vms.find((v) => v.id === p.vm)!.grants.get(p.gref)!.maps--;
    if (p.mapper !== undefined) this.mappers[p.mapper].held--;
    b.table.delete(bfn);
  }
  revoke(b: ModelVm, vmId: number): number {
    let n = 0;
    for (const [bfn, p] of [...b.table]) if (p.vm === vmId) { this.forget(b, bfn); n++; }
    return n;
  }
  /** The errno the rules give a map of these pages, or undefined when it must succeed. */
  mapCheck(b: ModelVm, v: ModelVm, bfn: number, gfn: number, count: number): string | undefined {
    if (gfn + count > v.pages) return "EINVAL";
    if (bfn + count > BFN_LIMIT) return "EINVAL";
    for (let k = 0; k < count; k++) if (bfn + k < b.pages || b.table.has(bfn + k)) return "EEXIST";
    return undefined;
  }
  place(b: ModelVm, bfn: number, page: Page, count: number): void {
    for (let k = 0; k < count; k++) b.table.set(bfn + k, { ...page, gfn: page.gfn + k });
    if (page.mapper !== undefined) this.mappers[page.mapper].held += count;
    this.touched[b.id - 1]?.add(bfn);
  }
  unmap(b: ModelVm, bfn: number, count: number, mapper?: number): Outcome {
    if (bfn + count > BFN_LIMIT) return { error: "EINVAL" };
    if (bfn < b.pages) return { error: "EINVAL" };
    if (mapper !== undefined) for (let k = 0; k < count; k++) if (b.table.has(bfn + k) && b.table.get(bfn + k)!.mapper !== mapper) return { error: "EPERM" };
    let n = 0;
    for (let k = 0; k < count; k++) if (b.table.has(bfn + k)) { this.forget(b, bfn + k); n++; }
    return { ok: n };
  }
}

/** What the model says op returns (or undefined: the op is skipped on this state). */
function expectOn(m: Model, op: Op): Outcome | "skip" {
  const V = (i: number) => m.live(i);
  switch (op.t) {
    case "create": {
      m.add(m.vms.length + 1, op.pages, false);
      return { ok: m.vms.length };
    }
    case "destroy": {
      const v = V(op.vm);
      if (v === undefined || op.vm < 2) return "skip";
      for (const b of m.vms) if (b.backend && b.pages > 0) { b.served.delete(v.id); m.revoke(b, v.id); }
      v.grants.clear();
      v.pages = 0;
      return { ok: undefined };
    }
    case "serve": case "unserve": {
      const b = V(op.b), v = V(op.vm);
      if (b === undefined || v === undefined) return "skip";
      if (b === v) return op.t === "serve" ? { error: "EINVAL" } : { error: "ENOENT" };
      if (op.t === "serve") {
        if (b.served.has(v.id)) return { error: "EEXIST" };
        b.served.add(v.id);
        return { ok: undefined };
      }
      if (!b.served.has(v.id)) return { error: "ENOENT" };
      b.served.delete(v.id);
      return { ok: m.revoke(b, v.id) };
    }
    case "map": {
      const b = V(op.b), v = V(op.vm);
      if (b === undefined || v === undefined) return "skip";
      if (op.gfn + op.count > v.pages) return { error: "EINVAL" };
      if (op.bfn + op.count > BFN_LIMIT) return { error: "EINVAL" };
      if (v === b || !b.served.has(v.id)) return { error: "EPERM" };
      const e = m.mapCheck(b, v, op.bfn, op.gfn, op.count);
      if (e) return { error: e };
      m.place(b, op.bfn, { vm: v.id, gfn: op.gfn, write: op.write }, op.count);
      return { ok: BigInt(op.bfn) };
    }
    case "unmap": {
      const b = V(op.b);
      return b === undefined ? "skip" : m.unmap(b, op.bfn, op.count);
    }
    case "grant": {
      const v = V(op.vm), b = V(op.b);
      if (v === undefined || b === undefined) return "skip";
      if (op.gfn >= v.pages || v === b) return { error: "EINVAL" };
      const ref = v.grants.size === 0 ? (v as Any).nextRef ?? 1 : (v as Any).nextRef;
      (v as Any).nextRef = ref + 1;
      v.grants.set(ref, { to: b.id, gfn: op.gfn, readOnly: op.readOnly, maps: 0 });
      return { ok: ref };
    }
    case "mapGrant": {
      const b = V(op.b), v = V(op.vm);
      if (b === undefined || v === undefined || v.grants.size === 0) return "skip";
      const refs = [...v.grants.keys()];
      const ref = refs[op.pick % refs.length];
      const g = v.grants.get(ref)!;
      if (g.to !== b.id) return { error: "EPERM" };
      if (op.write && g.readOnly) return { error: "EPERM" };
      if (op.bfn + 1 > BFN_LIMIT) return { error: "EINVAL" };
      const e = m.mapCheck(b, v, op.bfn, g.gfn, 1);
      if (e) return { error: e };
      m.place(b, op.bfn, { vm: v.id, gfn: g.gfn, write: op.write, gref: ref }, 1);
      g.maps++;
      return { ok: BigInt(op.bfn) };
    }
    case "revoke": {
      const v = V(op.vm);
      if (v === undefined || v.grants.size === 0) return "skip";
      const refs = [...v.grants.keys()];
      const ref = refs[op.pick % refs.length];
      if (v.grants.get(ref)!.maps > 0) return { error: "EBUSY" };
      v.grants.delete(ref);
      return { ok: undefined };
    }
    case "restrict": {
      const b = V(op.b);
      const vs = op.vms.map(V);
      if (b === undefined || vs.some((v) => v === undefined)) return "skip";
      if (vs.some((v) => v === b || !b.served.has(v!.id))) return { error: "EPERM" };
      m.mappers.push({ b: op.b, vms: new Set(vs.map((v) => v!.id)), max: op.maxPages, held: 0 });
      return { ok: m.mappers.length - 1 };
    }
    case "mapperMap": {
      if (m.mappers.length === 0) return "skip";
      const k = op.pick % m.mappers.length, mp = m.mappers[k];
      const b = V(mp.b), v = V(op.vm);
      if (b === undefined || v === undefined) return "skip";
      if (op.gfn + op.count > v.pages) return { error: "EINVAL" };
      if (op.bfn + op.count > BFN_LIMIT) return { error: "EINVAL" };
      if (!mp.vms.has(v.id) || !b.served.has(v.id)) return { error: "EPERM" };
      if (mp.held + op.count > mp.max) return { error: "ENOSPC" };
      const e = m.mapCheck(b, v, op.bfn, op.gfn, op.count);
      if (e) return { error: e };
      m.place(b, op.bfn, { vm: v.id, gfn: op.gfn, write: false, mapper: k }, op.count);
      return { ok: BigInt(op.bfn) };
    }
    case "mapperUnmap": {
      if (m.mappers.length === 0) return "skip";
      const k = op.pick % m.mappers.length;
      const b = V(m.mappers[k].b);
      return b === undefined ? "skip" : m.unmap(b, op.bfn, op.count, k);
    }
  }
}

function apply(s: Side, op: Op, m: Model): Outcome {
  const vm = (i: number) => s.vms[i];
  switch (op.t) {
    case "create": return attempt(() => { const v = s.hv.createVm({ memory: op.pages * 4096 }); tagPages(v); s.vms.push(v); return s.vms.length; });
    case "destroy": return attempt(() => vm(op.vm).destroy());
    case "serve": return attempt(() => s.hv.serve(vm(op.b), vm(op.vm)));
    case "unserve": return attempt(() => s.hv.unserve(vm(op.b), vm(op.vm)));
    case "map": return attempt(() => vm(op.b).iommu.map({ bfn: op.bfn, vm: vm(op.vm), gfn: op.gfn, count: op.count, write: op.write }));
    case "unmap": return attempt(() => vm(op.b).iommu.unmap({ bfn: op.bfn, count: op.count }));
    case "grant": return attempt(() => vm(op.vm).grant(vm(op.b), op.gfn, { readOnly: op.readOnly }));
    case "mapGrant": {
      const refs = vm(op.vm).grantRefs();
      return attempt(() => vm(op.b).iommu.mapGrant({ bfn: op.bfn, vm: vm(op.vm), gref: refs[op.pick % refs.length], write: op.write }));
    }
    case "revoke": {
      const refs = vm(op.vm).grantRefs();
      return attempt(() => vm(op.vm).revokeGrant(refs[op.pick % refs.length]));
    }
    case "restrict": return attempt(() => { s.mappers.push(vm(op.b).iommu.restrict({ vms: op.vms.map((i) => vm(i).id), maxPages: op.maxPages })); return s.mappers.length - 1; });
    case "mapperMap": return attempt(() => s.mappers[op.pick % m.mappers.length].map({ bfn: op.bfn, vm: vm(op.vm), gfn: op.gfn, count: op.count }));
    case "mapperUnmap": return attempt(() => s.mappers[op.pick % m.mappers.length].unmap({ bfn: op.bfn, count: op.count }));
  }
}

/** What a device read of bus frame bfn must give by the model: a tag, or a fault. */
function reach(m: Model, b: ModelVm, bfn: number): string {
  if (bfn < b.pages) return text(tag(b.id, bfn));
  const p = b.table.get(bfn);
  return p === undefined ? "fault" : text(tag(p.vm, p.gfn));
}

function probe(dma: DmaPort, bfn: number): string {
  const r = dma.read(BigInt(bfn) * 4096n, TAG);
  return r.fault ? "fault" : text(r.data);
}

/** Outcomes seen, by op and errno ("ok" for success), over all runs: the coverage floor. */
const seen = new Map<string, number>();

async function run(ops: Op[], extra: number[]): Promise<void> {
  const [eng, twin] = [await side(false), await side(true)];
  const m = new Model();
  m.add(1, 8, true);
  m.add(2, 6, true);
  GUESTS.forEach((pages, i) => m.add(3 + i, pages, false));
  for (const s of [eng, twin]) s.vms.forEach(tagPages);
  for (const [step, op] of ops.entries()) {
    // Half the maps name a VM the backend serves now (a VM index is its id - 1 on both sides).
    if (op.t === "map" && op.served && m.live(op.b)?.served.size) {
      const ids = [...m.vms[op.b].served];
      op.vm = ids[op.vm % ids.length] - 1;
    }
    // Most grant maps come from the grantee, and most mapper maps name one of its VMs.
    if (op.t === "mapGrant" && op.pick % 4 !== 0 && m.live(op.vm)?.grants.size) {
      const refs = [...m.vms[op.vm].grants.keys()];
      const to = m.vms[op.vm].grants.get(refs[op.pick % refs.length])!.to - 1;
      if (to < 2) op.b = to;
    }
    if (op.t === "mapperMap" && m.mappers.length > 0 && op.count === 1) {
      const ids = [...m.mappers[op.pick % m.mappers.length].vms];
      if (ids.length > 0) op.vm = ids[op.vm % ids.length] - 1;
    }
    if (op.t === "restrict" && op.maxPages > 1 && m.live(op.b)?.served.size) {
      const ids = [...m.vms[op.b].served];
      op.vms = op.vms.map((v) => ids[v % ids.length] - 1);
    }
    const want = expectOn(m, op);
    if (want === "skip") continue;
    const got = apply(eng, op, m);
    expect(apply(twin, op, m), `twin, step ${step} ${JSON.stringify(op)}`).toEqual(got);
    expect(got, `step ${step} ${JSON.stringify(op)}`).toEqual(want);
    const key = `${op.t}:${"error" in got ? got.error : op.t === "unserve" && got.ok === 0 ? "ok-empty" : "ok"}`;
    seen.set(key, (seen.get(key) ?? 0) + 1);
    for (const b of [0, 1]) {
      const mb = m.vms[b];
      const bfns = [...m.touched[b], ...[...m.touched[b]].map((x) => x + 1), 0, mb.pages - 1, mb.pages, ...extra];
      for (const bfn of bfns) {
        if (bfn < 0 || bfn >= BFN_LIMIT) continue;
        const expected = reach(m, mb, bfn);
        expect(probe(eng.dma[b], bfn), `backend ${b} BFN ${bfn} after step ${step}`).toBe(expected);
        expect(probe(twin.dma[b], bfn), `twin backend ${b} BFN ${bfn} after step ${step}`).toBe(expected);
      }
      // The table lists exactly the model's pages (never an MFN).
      expect(eng.vms[b].iommu.mappings().map((x) => [Number(x.bfn), x.vm, Number(x.gfn)])).toEqual(
        [...mb.table].sort((x, y) => x[0] - y[0]).map(([bfn, p]) => [bfn, p.vm, p.gfn]));
    }
  }
}

describe("xen isolation", () => {
  it("a backend's devices reach exactly its own memory and the pages mapped for it; the twin agrees call by call", async () => {
    await fc.assert(fc.asyncProperty(fc.array(opArb, { maxLength: 60, size: "max" }), fc.array(fc.nat(0x120), { maxLength: 4 }), (ops, extra) => run(ops, extra)), params(100));
    console.log([...seen].sort().map(([k, n]) => `${k} ${n}`).join(", "));
    for (const key of ["map:ok", "map:EPERM", "map:EEXIST", "map:EINVAL", "unmap:ok", "unserve:ok", "destroy:ok", "mapGrant:ok", "mapGrant:EPERM",
      "revoke:ok", "restrict:ok", "mapperMap:ok", "mapperMap:EPERM", "mapperUnmap:ok"]) {
      expect(seen.get(key) ?? 0, key).toBeGreaterThan(0);
    }
  }, 120_000);
});
