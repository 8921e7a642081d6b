// Choosing operands: which container, table, PASID, GVA or stage-1
// description an operation aims at (mostly ones that matter, now and then
// anything), and what the kernel's rules say of an operand.
import type { Binding, BuilderTable, ContainerModel, Stale } from "./model.js";
import type { Session } from "./session.js";
import { GVA_SPAN, GVA_WINDOWS, HOSTILE_GVAS, PAGE, PASID_MAX, U64_MAX, type Device, type Stage1Format } from "./world.js";

export type Flags = number | Record<string, unknown> | undefined;

/** A stage-1 description for a bind; `plain` when it walks the table as the builder built it. */
export interface Stage1Choice { format: string; addressWidth?: number; flags: Flags; valid: boolean; plain: boolean }

/** Mostly a container with an IOMMU set; now and then any container ever opened (maybe closed). */
export function someContainer(s: Session): ContainerModel {
  const r = s.rng;
  if (r.chance(0.06)) return r.pick(s.model.containers);
  const usable = s.model.live().filter((cm) => cm.iommu);
  if (usable.length > 0 && r.chance(0.8)) return r.pick(usable);
  return s.model.current[r.int(2)];
}

/** Mostly a live builder table; now and then a dead one (every call on it must be ENODEV). */
export function someTable(s: Session): BuilderTable | undefined {
  const live = s.model.liveTables();
  const dead = s.model.tables.filter((t) => t.dead && t.gpt);
  if (dead.length > 0 && s.rng.chance(live.length > 0 ? 0.05 : 0.2)) return s.rng.pick(dead);
  return live.length > 0 ? s.rng.pick(live) : undefined;
}

/**
 * A PASID from the model: bound here, held here (unbound on the device, if
 * one is named), held by another container, or held by none.
 */
export function somePasid(s: Session, cm: ContainerModel | undefined, device?: Device, weights = { bound: 4, held: 4 }): number {
  const r = s.rng;
  const bound = cm?.bindings.filter((b) => device === undefined || b.device === device.index).map((b) => b.pasid) ?? [];
  const held = cm ? [...cm.pasids].filter((p) => !bound.includes(p)) : [];
  const others = s.model.live().filter((c) => c !== cm).flatMap((c) => [...c.pasids]);
  return r.weighted<() => number>([
    [bound.length ? weights.bound : 0, () => r.pick(bound)],
    [held.length ? weights.held : 0, () => r.pick(held)],
    [others.length ? 1 : 0, () => r.pick(others)],
    [1, () => r.range(1, 64)],
  ])();
}

/** A GVA near what a binding maps or recently unmapped (where invalidations and DMAs matter), else a hostile or random one. */
export function addressNear(s: Session, b: Binding | undefined): bigint {
  const r = s.rng;
  const leaves = b?.exact?.leaves ?? [];
  const stale = b?.stale ?? [];
  const recent = b?.recent ?? [];
  const inside = (x: Stale) => x.first + BigInt(r.int(Number((x.last - x.first + 1n) / PAGE))) * PAGE;
  return r.weighted<() => bigint>([
    [leaves.length ? 4 : 0, () => { const l = r.pick(leaves); return l.gva + BigInt(r.int(Number(l.size / PAGE))) * PAGE; }],
    [stale.length ? 3 : 0, () => inside(r.pick(stale))],
    [recent.length ? 3 : 0, () => inside(r.pick(recent))],
    [1, () => r.pick(HOSTILE_GVAS)],
    [1, () => r.pick(GVA_WINDOWS) + BigInt(r.int(Number(GVA_SPAN / PAGE))) * PAGE],
  ])();
}

export function otherFormat(format: Stage1Format): Stage1Format {
  return format === "x86-64" ? "arm64" : "x86-64";
}

/** The flags a VMM passes for this arch's tables (Arm: hardware access flag, as Linux sets TCR.HA). */
export function defaultFlags(format: Stage1Format): Flags {
  return format === "x86-64" ? undefined : { ha: true };
}

/** A stage-1 description for a bind: mostly this arch's format with plain flags; some valid variants, some refused. */
export function stage1Choice(s: Session): Stage1Choice {
  const r = s.rng;
  const format = r.chance(0.9) ? s.w.format : otherFormat(s.w.format);
  const x86 = format === "x86-64";
  return r.weighted<() => Stage1Choice>([
    [14, () => ({ format, flags: r.pick<Flags>(x86 ? [undefined, { sre: true }, 7, { eafe: true }] : [{ ha: true }, { ha: true, hd: true }, undefined]), valid: true, plain: true })],
    [1, () => (x86 ? { format, addressWidth: 57, flags: undefined, valid: true, plain: false } : { format, flags: { ha: true, t0sz: 25 }, valid: true, plain: false })],
    [1.5, () => ({ format, flags: r.pick<Flags>(x86 ? [8, -1, { ha: true }, { sre: "yes" }, { tg0: 1 }] : [{ hd: true }, { tg0: 3 }, { tg0: 1 }, { ips: 6 }, 1, { sre: true }]), valid: false, plain: false })],
    [0.5, () => ({ format: r.pick(["vtd-sl", "arm64-s2", ""]), flags: undefined, valid: false, plain: false })],
    [0.5, () => ({ format, addressWidth: x86 ? 39 : 60, flags: x86 ? undefined : { ha: true }, valid: false, plain: false })],
  ])();
}

/** The range of a PASID request if it is one (integers 0..0xffffffff, min ≤ max). */
export function u32Range(range: unknown): { min: number; max: number } | undefined {
  if (range === null || typeof range !== "object") return undefined;
  const { min, max } = range as { min: unknown; max: unknown };
  const u32 = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
  return u32(min) && u32(max) && min <= max ? { min, max } : undefined;
}

/** Why an invalidation entry must be refused, or undefined. */
export function invalidateProblem(e: Record<string, unknown>): string | undefined {
  if (e.flags !== undefined && ((e.flags as number) & ~1) !== 0) return "unknown flags";
  const { addr, npages, pasid } = e;
  if (typeof addr !== "bigint" || typeof npages !== "bigint") return "addr or npages is not a u64";
  if (pasid !== undefined && (!Number.isInteger(pasid) || (pasid as number) < 1 || (pasid as number) > PASID_MAX)) return `pasid ${String(pasid)}`;
  if (addr % PAGE !== 0n) return "misaligned addr";
  if (npages === 0n) return "zero npages";
  if (!(addr === 0n && npages === U64_MAX) && addr + npages * PAGE - 1n > U64_MAX) return "the range wraps";
  return undefined;
}

/** JSON with bigints in hex, for labels. */
export function show(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? `0x${x.toString(16)}` : x === undefined ? "undefined" : x)) ?? String(v);
}
