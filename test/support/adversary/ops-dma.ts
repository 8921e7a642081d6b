// Device DMA: read, readInto, write and scatter-gather, with and without a
// PASID (bound ones, former ones, other containers' ones, ones that are no
// PASID), at GVAs the tables map, GVAs they do not, and raw GPAs. Every page
// is judged by the oracle. And the stale-translation attack: use, unmap,
// (maybe) invalidate, use again.
import { IommuError, type SgSegments } from "../../../src/index.js";
import { goodPlan } from "./allocator.js";
import type { Access } from "./oracle.js";
import { addressNear, somePasid } from "./operands.js";
import { invalidate, randomBind } from "./ops-pasid.js";
import { builderMap, builderUnmap } from "./ops-guest.js";
import type { Session } from "./session.js";
import { DATA_FIRST, GUEST_BYTES, GUEST_PAGES, MiB, PAGE, PASID_MAX, U64_MAX, type Device } from "./world.js";

/** Mostly a device with a live binding (PASID DMA is where the attack is), else any. */
function dmaDevice(s: Session): Device {
  const bound = s.w.devices.filter((d) => s.model.groupIn[d.group]?.bindings.some((b) => b.device === d.index));
  return bound.length > 0 && s.rng.chance(0.6) ? s.rng.pick(bound) : s.rng.pick(s.w.devices);
}

/** The PASID of a DMA: none, one the model knows of, one the device had before, or (rarely) no PASID at all (EINVAL). */
function dmaPasid(s: Session, device: Device): { pasid: number; privileged: boolean; badPasid: boolean } {
  const r = s.rng;
  const privileged = r.chance(0.08);
  if (r.chance(0.02)) return { pasid: r.pick([PASID_MAX + 1, -1, 1.5]), privileged, badPasid: true };
  if (r.chance(0.3)) return { pasid: 0, privileged, badPasid: false };
  // A PASID this device was bound to before (unbound, freed, detached, closed): it must reach nothing now.
  const former = s.model.former.filter((b) => b.device === device.index);
  if (former.length > 0 && r.chance(0.25)) return { pasid: r.pick(former).pasid, privileged, badPasid: false };
  return { pasid: somePasid(s, s.model.groupIn[device.group], device, { bound: 12, held: 2 }), privileged, badPasid: false };
}

/** A page for a DMA: without PASID a GPA (guest RAM, past it, an MSI window); with one, a GVA near what the binding maps. */
function dmaPage(s: Session, device: Device, pasid: number): bigint {
  const r = s.rng;
  const cm = s.model.groupIn[device.group];
  if (pasid !== 0) return addressNear(s, cm?.binding(device.index, pasid)) & ~0xfffn;
  return r.weighted<() => bigint>([
    [8, () => BigInt(r.int(GUEST_PAGES)) * PAGE],
    [1, () => GUEST_BYTES + BigInt(r.int(1024)) * PAGE],
    [0.5, () => r.pick([0xfee00000n, cm?.c.msiDoorbellIova ?? 0x8000000n])],
  ])();
}

/** An 8-byte aligned span in or from a page: mostly inside it, sometimes across into the next (or, reading, over two boundaries). */
function span(s: Session, page: bigint, long = false): { address: bigint; len: number } {
  const r = s.rng;
  if (long) return { address: page + 8n * BigInt(r.int(512)), len: 4096 + 8 * r.range(1, 64) };
  if (r.chance(0.15)) {
    const words = r.range(2, 6);
    return { address: page + 4096n - 8n * BigInt(r.range(1, words - 1)), len: 8 * words };
  }
  const words = r.range(1, 8);
  return { address: page + 8n * BigInt(r.int(512 - words)), len: 8 * words };
}

export function randomDma(s: Session): void {
  const device = dmaDevice(s);
  const t = dmaPasid(s, device);
  const write = s.rng.chance(0.45);
  // Writes stay short: the oracle snapshots every guest frame at each written word's offset.
  const { address, len } = span(s, dmaPage(s, device, t.pasid), !write && s.rng.chance(0.05));
  dma(s, { device, pasid: t.pasid, privileged: t.privileged, write }, address, len, t.badPasid);
}

/** One DMA (read, readInto or write; a plain or an engine-memory buffer), judged page by page. */
function dma(s: Session, a: Access, address: bigint, len: number, badPasid = false): void {
  const r = s.rng;
  const { device } = a;
  touch(s, device, a.pasid, [address]);
  const opts = a.pasid === 0 && r.chance(0.5) ? (a.privileged ? { privileged: true } : undefined) : { pasid: a.pasid, privileged: a.privileged };
  const where = `${device.bdf} ${a.write ? "write" : "read"}${a.pasid ? ` PASID ${a.pasid}` : ""}${a.privileged ? " privileged" : ""}`;
  const arena = r.chance(0.2);
  if (a.write) {
    const p = s.oracle.prepareWrite(Array.from({ length: len / 8 }, (_, k) => address + 8n * BigInt(k)));
    const buffer = arena ? s.w.host.allocBuffer(len) : p.bytes;
    if (arena) buffer.set(p.bytes);
    const res = runDma(s, where, badPasid, () => device.dev.dma.write(address, buffer, opts));
    if (arena) s.w.host.freeBuffer(buffer);
    s.oracle.checkWrite(a, p, res ? (res.interrupt ? res.bytes - 4 : res.bytes) : 0, where);
    return;
  }
  const into = r.chance(0.4);
  const target = arena ? s.w.host.allocBuffer(len) : new Uint8Array(len);
  const res = runDma(s, where, badPasid, () => (into ? device.dev.dma.readInto(address, target, opts) : device.dev.dma.read(address, len, opts)));
  if (res) s.oracle.checkRead(a, address, "data" in res ? (res.data as Uint8Array) : target, res.bytes, where);
  if (arena) s.w.host.freeBuffer(target);
}

export function randomSg(s: Session): void {
  const r = s.rng;
  const device = dmaDevice(s);
  const write = r.chance(0.5);
  const first = dmaPasid(s, device);
  let segs = Array.from({ length: r.range(2, 4) }, () => {
    const { address } = span(s, dmaPage(s, device, first.pasid));
    const words = Math.min(r.range(1, 4), Number((4096n - (address & 0xfffn)) / 8n));
    return { iova: address, length: 8 * words };
  });
  // Two words of one write at the same page offset could reach the same frame (aliased GVAs) and
  // overwrite each other's marker: a write's segments keep their page offsets apart.
  if (write) segs = segs.filter((x, k) => segs.slice(0, k).every((y) => !overlapsInPage(x, y)));
  const a: Access = { device, pasid: first.pasid, privileged: first.privileged, write };
  touch(s, device, first.pasid, segs.map((x) => x.iova));
  const total = segs.reduce((n, x) => n + x.length, 0);
  // Segments as objects, as (iova, length) pairs, or pairs and buffer both on engine memory (the engine's one-call path).
  const form = r.weighted<"objects" | "pairs" | "resident">([[6, "objects"], [2, "pairs"], [2, "resident"]]);
  const where = `${device.bdf} sg ${write ? "write" : "read"} of ${segs.length} ${form}${first.pasid ? ` PASID ${first.pasid}` : ""}`;
  const opts = { direction: write ? "write" as const : "read" as const, pasid: first.pasid, privileged: first.privileged };
  const extra = r.chance(0.2) ? 8 : 0;
  const engine = form === "resident" ? [s.w.host.allocBuffer(segs.length * 16), s.w.host.allocBuffer(total + extra)] : [];
  const buffer = engine[1] ?? new Uint8Array(total + extra);
  let list: SgSegments = segs;
  if (form !== "objects") {
    const pairs = engine[0] ? new BigUint64Array(engine[0].buffer, engine[0].byteOffset, segs.length * 2) : new BigUint64Array(segs.length * 2);
    segs.forEach((x, k) => { pairs[2 * k] = x.iova; pairs[2 * k + 1] = BigInt(x.length); });
    list = pairs;
  }
  try {
    if (write) {
      const p = s.oracle.prepareWrite(segs.flatMap((x) => Array.from({ length: x.length / 8 }, (_, k) => x.iova + 8n * BigInt(k))));
      buffer.set(p.bytes);
      const res = runDma(s, where, first.badPasid, () => device.dev.dma.sg(list, buffer, opts));
      s.oracle.checkWrite(a, p, res ? (res.interrupt ? res.bytes - 4 : res.bytes) : 0, where);
      return;
    }
    const res = runDma(s, where, first.badPasid, () => device.dev.dma.sg(list, buffer, opts));
    if (!res) return;
    // The bytes moved fill the segments in order.
    let at = 0;
    for (const x of segs) {
      const moved = Math.max(0, Math.min(x.length, res.bytes - at));
      if (moved > 0) s.oracle.checkRead(a, x.iova, buffer.subarray(at), moved, where);
      at += x.length;
    }
  } finally {
    for (const b of engine) s.w.host.freeBuffer(b);
  }
}

/**
 * The stale-translation attack: a device uses a GVA of a builder table, the
 * guest unmaps it (and maybe maps it elsewhere), maybe invalidates (covering
 * it or not), and the device tries the GVA again. Every step is judged as
 * usual; the last DMA is where a stale IOTLB entry would show.
 */
export function randomStaleProbe(s: Session): void {
  const r = s.rng;
  const targets = s.model.live().flatMap((cm) => cm.bindings
    .filter((b) => b.exact && !b.exact.tainted && !b.exact.dead && b.exact.leaves.length > 0).map((b) => ({ cm, b })));
  if (targets.length === 0) return randomBind(s);
  const { cm, b } = r.pick(targets);
  const t = b.exact!;
  const leaf = r.pick(t.leaves);
  const gva = leaf.gva + BigInt(r.int(Number(leaf.size / PAGE))) * PAGE;
  const device = s.w.devices[b.device];
  const access = (write: boolean): Access => ({ device, pasid: b.pasid, privileged: false, write });
  const offset = 8n * BigInt(r.int(500));
  dma(s, access(r.chance(0.3)), gva + offset, 8 * r.range(1, 8));
  builderUnmap(s, t, leaf.gva, leaf.size);
  if (r.chance(0.4)) builderMap(s, t, gva, BigInt(r.range(DATA_FIRST, GUEST_PAGES - 1)) * PAGE, PAGE, r.chance(0.5), goodPlan());
  if (r.chance(0.7)) {
    const page = gva & ~0xfffn;
    const entry = r.weighted<Record<string, unknown>>([
      [3, { pasid: b.pasid, addr: page, npages: 1n }],
      [1, { pasid: b.pasid, addr: page & ~(2n * MiB - 1n), npages: 512n, leaf: true }],
      [1, { pasid: b.pasid, addr: 0n, npages: U64_MAX }],
      [1, { addr: 0n, npages: U64_MAX }],
      [1, { addr: page, npages: 1n }],
      // Ones that do not cover it: the next page, another PASID.
      [1, { pasid: b.pasid, addr: page + PAGE, npages: 1n }],
      [1, { pasid: b.pasid === 1 ? 2 : 1, addr: page, npages: 1n }],
    ]);
    invalidate(s, cm, [entry]);
  }
  dma(s, access(r.chance(0.3)), gva + offset, 8 * r.range(1, 8));
}

function overlapsInPage(a: { iova: bigint; length: number }, b: { iova: bigint; length: number }): boolean {
  const x = Number(a.iova & 0xfffn), y = Number(b.iova & 0xfffn);
  return x < y + b.length && y < x + a.length;
}

/** Remembers the GVA pages a PASID DMA used through a builder table (unmapping one of them is how a stale entry shows). */
function touch(s: Session, device: Device, pasid: number, addresses: bigint[]): void {
  const t = s.model.groupIn[device.group]?.binding(device.index, pasid)?.exact;
  if (!t || pasid === 0) return;
  for (const a of addresses) s.touched.push({ table: t, gva: a & ~0xfffn });
  s.touched.splice(0, Math.max(0, s.touched.length - 16));
}

/** Runs one DMA call: it must not throw, unless its PASID operand is no PASID (then EINVAL). */
function runDma<T extends { bytes: number; interrupt?: unknown }>(s: Session, where: string, badPasid: boolean, fn: () => T): T | undefined {
  s.tally.dmas++;
  let res: T;
  try {
    res = fn();
  } catch (e) {
    if (!(e instanceof IommuError)) s.tally.note("wrongKind", where, String(e));
    else if (!badPasid) s.tally.note("validRefused", where, e.message);
    return undefined;
  }
  if (badPasid) {
    s.tally.note("invalidAccepted", where, "a DMA with a PASID outside 0..0xfffff");
    return undefined;
  }
  if (res.bytes > 0) s.tally.dmaMoved++;
  return res;
}
