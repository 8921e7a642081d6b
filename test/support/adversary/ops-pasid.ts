// PASIDs and bindings: allocation and frees (the container's own, the other
// container's, everything), binds and unbinds on any device (in the other
// container or in none too), and the guest's invalidations with random
// scopes. The model knows exactly what each must do.
import { IommuError } from "../../../src/index.js";
import { OK, refused, type Verdict } from "./guard.js";
import { invalidateStale, type ContainerModel } from "./model.js";
import { addressNear, invalidateProblem, show, someContainer, somePasid, stage1Choice, u32Range, type Stage1Choice } from "./operands.js";
import type { Session } from "./session.js";
import { DATA_FIRST, GUEST_BYTES, GUEST_PAGES, HOSTILE_FIRST, PAGE, PASID_MAX, U64_MAX, type Device } from "./world.js";

export function randomPasidAlloc(s: Session): void {
  const r = s.rng;
  const cm = someContainer(s);
  const other = s.model.live().filter((c) => c !== cm).flatMap((c) => [...c.pasids]);
  const range = r.weighted<() => unknown>([
    [6, () => ({ min: 1, max: 64 })],
    [2, () => ({ min: 0, max: 0xffffffff })],
    [1, () => { const p = other.length ? r.pick(other) : 1; return { min: p, max: p }; }],
    [0.5, () => ({ min: 0, max: 0 })],
    [0.5, () => ({ min: PASID_MAX + 1, max: 0xffffffff })],
    [1, () => r.pick<unknown>([{ min: 9, max: 3 }, { min: -1, max: 5 }, { min: 1.5, max: 9 }, { min: 1, max: 2 ** 32 }, { min: 1 }, null, { min: 1n, max: 5n }])],
  ])();
  pasidAlloc(s, cm, range);
}

/** ALLOC: the lowest PASID in the range that no live container holds, within the quota. */
export function pasidAlloc(s: Session, cm: ContainerModel, range: unknown): number | undefined {
  let expected: number | undefined;
  let verdict: Verdict;
  const bounds = u32Range(range);
  if (cm.closed) verdict = refused("pasid alloc on a closed container");
  else if (!bounds) verdict = refused(`pasid alloc with a bad range ${show(range)}`);
  else if (cm.pasids.size >= cm.quota) verdict = refused("pasid alloc past the quota");
  else {
    expected = lowestFree(s, Math.max(bounds.min, 1), Math.min(bounds.max, PASID_MAX));
    verdict = expected === undefined ? refused(`pasid alloc with nothing free in ${show(range)}`) : OK;
  }
  const label = `${cm.name}.pasid.alloc(${show(range)})`;
  const out = s.guard.run(label, verdict, () => cm.c.pasid.alloc(range as { min: number; max: number }));
  if (!out.ok) return undefined;
  if (s.model.held(out.value)) s.tally.note("invalidAccepted", label, `handed out PASID ${out.value}, which a live container already holds`);
  else if (expected !== undefined && out.value !== expected) s.tally.note("wrongResult", label, `returned ${out.value}, the lowest free is ${expected}`);
  cm.pasids.add(out.value);
  return out.value;
}

function lowestFree(s: Session, min: number, max: number): number | undefined {
  for (let p = min; p <= max; p++) if (!s.model.held(p)) return p;
  return undefined;
}

/** FREE: only the container's own PASIDs in the range go, and their bindings with them. */
export function randomPasidFree(s: Session): void {
  const r = s.rng;
  const cm = someContainer(s);
  const p = somePasid(s, cm);
  const range = r.weighted<() => unknown>([
    [6, () => ({ min: p, max: p })],
    [1, () => ({ min: r.range(1, 20), max: r.range(20, 70) })],
    [1, () => ({ min: 0, max: 0xffffffff })],
    [1, () => r.pick<unknown>([{ min: 5, max: 1 }, { min: -2, max: 3 }, { max: 3 }, { min: 0, max: 2 ** 32 }, "all"])],
  ])();
  const bounds = u32Range(range);
  const verdict = cm.closed ? refused("pasid free on a closed container") : !bounds ? refused(`pasid free with a bad range ${show(range)}`) : OK;
  const label = `${cm.name}.pasid.free(${show(range)})`;
  const out = s.guard.run(label, verdict, () => cm.c.pasid.free(range as { min: number; max: number }));
  if (!out.ok || !bounds) return;
  const freed = [...cm.pasids].filter((x) => x >= bounds.min && x <= bounds.max);
  if (out.value !== freed.length) s.tally.note("wrongResult", label, `returned ${out.value}, the container held ${freed.length} there`);
  for (const x of freed) cm.pasids.delete(x);
  cm.dropBindings((b) => freed.includes(b.pasid));
}

// ------------------------------------------------------------------ bindings

export function randomBind(s: Session): void {
  const r = s.rng;
  const device = r.pick(s.w.devices);
  const cm = s.model.groupIn[device.group];
  // A VMM allocates a PASID first when it has none left to bind on this device.
  if (cm && cm.iommu === "nesting" && [...cm.pasids].every((p) => cm.binding(device.index, p)) && r.chance(0.7)) {
    pasidAlloc(s, cm, { min: 1, max: 64 });
  }
  const former = s.model.former.filter((b) => b.device === device.index && cm?.pasids.has(b.pasid));
  const pasid = former.length > 0 && r.chance(0.3) ? r.pick(former).pasid
    : r.chance(0.95) ? somePasid(s, cm, device, { bound: 1, held: 8 }) : r.pick([0, PASID_MAX + 1, -1, 2.5]);
  const tables = (cm?.tables ?? []).filter((t) => !t.dead);
  const root = r.weighted<() => bigint>([
    [tables.length ? 14 : 0, () => r.pick(tables).root],
    [4, () => BigInt(HOSTILE_FIRST + r.int(8)) * PAGE],
    [1, () => BigInt(r.range(1, HOSTILE_FIRST - 1)) * PAGE],
    [0.5, () => BigInt(r.range(DATA_FIRST, GUEST_PAGES - 1)) * PAGE],
    [0.5, () => r.pick([GUEST_BYTES, 1n << 40n])],
    [0.5, () => BigInt(HOSTILE_FIRST) * PAGE + 0x10n],
  ])();
  bind(s, device, pasid, root, stage1Choice(s));
}

export function bind(s: Session, device: Device, pasid: number, root: bigint, s1: Stage1Choice): void {
  const cm = s.model.groupIn[device.group];
  let verdict: Verdict = OK;
  if (!cm) verdict = refused("bind on a device whose group is in no container");
  else if (!cm.iommu) verdict = refused(`bind in ${cm.name}, which has no IOMMU set`);
  else if (!s1.valid) verdict = refused(`bind with a bad stage-1 description ${show(s1)}`);
  else if (cm.iommu === "type1v2") verdict = refused("bind in a type1v2 container");
  else if (!cm.pasids.has(pasid)) verdict = refused(`bind of PASID ${pasid}, which ${cm.name} does not hold`);
  else if (cm.binding(device.index, pasid)) verdict = refused(`bind of PASID ${pasid}, already bound on ${device.bdf}`);
  else if (root % PAGE !== 0n) verdict = refused("bind of a misaligned root");
  const out = s.guard.run(`${device.bdf}.bindPgtbl(PASID ${pasid}, root 0x${root.toString(16)}, ${show(s1)}) in ${cm?.name ?? "no container"}`, verdict,
    () => device.dev.bindPgtbl({ pasid, format: s1.format, root, addressWidth: s1.addressWidth, flags: s1.flags } as never));
  if (!out.ok || !cm) return;
  // The model follows the binding exactly when it walks a live builder table as the builder built it.
  const table = cm.tables.find((t) => !t.dead && t.root === root && t.format === s1.format);
  cm.bindings.push({ device: device.index, pasid, root, exact: s1.plain ? table : undefined, stale: [], recent: [] });
}

export function randomUnbind(s: Session): void {
  const device = s.rng.pick(s.w.devices);
  const cm = s.model.groupIn[device.group];
  const pasid = somePasid(s, cm, device);
  const verdict = !cm ? refused("unbind on a device whose group is in no container")
    : cm.binding(device.index, pasid) ? OK : refused(`unbind of PASID ${pasid}, not bound on ${device.bdf} in ${cm.name}`);
  const out = s.guard.run(`${device.bdf}.unbindPgtbl(${pasid}) in ${cm?.name ?? "no container"}`, verdict, () => device.dev.unbindPgtbl(pasid));
  if (out.ok && cm) cm.dropBindings((b) => b.device === device.index && b.pasid === pasid);
}

// ------------------------------------------------------------------ invalidation

export function randomInvalidate(s: Session): void {
  const cm = someContainer(s);
  const entries = Array.from({ length: s.rng.weighted([[6, 1], [2, 2], [1, 3]]) }, () => invalidateEntry(s, cm));
  invalidate(s, cm, entries);
}

/** One entry: everything, a range near what a binding maps, or one the kernel refuses. */
function invalidateEntry(s: Session, cm: ContainerModel): Record<string, unknown> {
  const r = s.rng;
  const b = cm.bindings.length > 0 ? r.pick(cm.bindings) : undefined;
  const pasid = b && r.chance(0.7) ? b.pasid : r.chance(0.5) ? undefined : r.range(1, 64);
  const near = addressNear(s, b);
  const leaf = r.chance(0.3) ? true : undefined;
  return r.weighted<() => Record<string, unknown>>([
    [3, () => ({ pasid, addr: 0n, npages: U64_MAX, leaf })],
    [6, () => ({ pasid, addr: near & ~0xfffn, npages: BigInt(r.pick([1, 1, 2, 16, 512, 1024])), leaf })],
    [1.5, () => r.pick<Record<string, unknown>>([
      { pasid, addr: near | 0x10n, npages: 1n }, { pasid, addr: near & ~0xfffn, npages: 0n }, { pasid, addr: U64_MAX - 0xfffn, npages: 2n },
      { pasid: 0, addr: 0n, npages: 1n }, { pasid: PASID_MAX + 1, addr: 0n, npages: 1n }, { pasid, addr: 0n, npages: 1n, flags: 2 },
      { pasid, addr: -4096, npages: 1n }, { pasid, addr: 0x1000n, npages: U64_MAX },
    ])],
  ])();
}

/**
 * The guest's invalidation: entries in order; the first bad one stops the
 * call, and `processed` must say how many went before it (those stay
 * applied). What an applied entry covers is no longer stale in the model.
 */
export function invalidate(s: Session, cm: ContainerModel, entries: Record<string, unknown>[]): void {
  const bad = entries.findIndex((e) => invalidateProblem(e) !== undefined);
  const usable = !cm.closed && cm.iommu !== undefined;
  const verdict = !usable ? refused(`invalidate in ${cm.name}, which has no IOMMU`)
    : bad >= 0 ? refused(`invalidate entry ${bad}: ${invalidateProblem(entries[bad])}`) : OK;
  const label = `${cm.name}.invalidate(${show(entries)})`;
  const out = s.guard.run(label, verdict, () => cm.c.invalidate(entries as never));
  let applied = 0;
  if (out.ok) {
    // Accepted although an entry is bad: only the good ones before it are surely applied.
    applied = bad >= 0 ? bad : entries.length;
    if (out.value !== entries.length) s.tally.note("wrongResult", label, `returned ${out.value}`);
  } else if (usable && bad >= 0 && out.error instanceof IommuError) {
    applied = bad;
    if (out.error.processed !== bad) s.tally.note("wrongResult", label, `processed ${String(out.error.processed)}, the first bad entry is ${bad}`);
  }
  for (const e of entries.slice(0, applied)) {
    const addr = e.addr as bigint, npages = e.npages as bigint;
    const [first, last] = addr === 0n && npages === U64_MAX ? [0n, U64_MAX] : [addr, addr + npages * PAGE - 1n];
    for (const b of cm.bindings) if (e.pasid === undefined || e.pasid === b.pasid) b.stale = invalidateStale(b.stale, first, last);
  }
}
