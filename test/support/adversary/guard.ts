// Runs one control-plane call the way the adversary judges it: what the model
// says it must do (succeed, be refused, either), what kind of error it threw,
// and, when it was refused, whether it changed anything anyway.
import { IommuError } from "../../../src/index.js";
import type { Model } from "./model.js";
import type { Tally } from "./tally.js";
import { GuestImage, type World } from "./world.js";

export type Verdict = { want: "ok" } | { want: "refused"; why: string } | { want: "either" };
export const OK: Verdict = { want: "ok" };
export const EITHER: Verdict = { want: "either" };
export const refused = (why: string): Verdict => ({ want: "refused", why });

export type Outcome<T> = { ok: true; value: T } | { ok: false; code: string; error: unknown };

/** An error the adversary's own callbacks throw (a guest allocator giving out): it must come back unchanged. */
export class GuestError extends Error {}


export class Guard {
  private readonly image: GuestImage;

  constructor(private readonly w: World, private readonly model: Model, private readonly tally: Tally) {
    this.image = new GuestImage(w);
  }

  /**
   * memory: the call could write guest memory, so a refusal must leave both
   * guests' RAM byte for byte as it was.
   */
  run<T>(label: string, verdict: Verdict, fn: () => T, memory = false): Outcome<T> {
    this.tally.ops++;
    const before = this.snapshot();
    if (memory) this.image.capture();
    let outcome: Outcome<T>;
    try {
      outcome = { ok: true, value: fn() };
    } catch (e) {
      outcome = { ok: false, code: e instanceof IommuError ? e.code : e instanceof GuestError ? "guest" : "wrong-kind", error: e };
    }
    if (outcome.ok) {
      if (verdict.want === "refused") this.tally.note("invalidAccepted", label, verdict.why);
      return outcome;
    }
    this.tally.refused++;
    if (outcome.code === "wrong-kind") this.tally.note("wrongKind", label, describeError(outcome.error));
    else if (verdict.want === "ok") this.tally.note("validRefused", label, describeError(outcome.error));
    const after = this.snapshot();
    const written = memory ? this.image.changed() : undefined;
    const change = before !== after ? `the state changed: ${firstDifference(before, after)}` : written ? `guest memory changed (${written})` : undefined;
    if (change) {
      this.tally.note("refusedSideEffect", label, `${describeError(outcome.error)}, yet ${change}`);
      // Memory the model did not expect to change may hold any table: it follows none exactly from here on.
      if (memory) for (const t of this.model.liveTables()) t.tainted = true;
    }
    return outcome;
  }

  /** Everything a refused call must leave alone, but guest RAM (which only some calls can write). */
  snapshot(): string {
    const state = {
      containers: this.model.containers.map((cm) => ({
        iommu: cm.c.iommuType,
        groups: [...cm.c.groups],
        mappings: cm.c.mappings().map((m) => [m.iova, m.last, m.vaddr, m.read, m.write]),
        held: attemptValue(() => cm.c.pasid.held()),
        info: attemptValue(() => cm.c.getInfo()),
      })),
      groupContainers: this.w.groups.map((g) => this.model.containers.findIndex((cm) => cm.c === g.container)),
      framesFree: this.w.host.ram.framesFree,
      // Not nodeVisits: a debug counter of searches, which a refused ALLOC rightly moves.
      pasidNodes: (({ nodes, nodesFree }) => ({ nodes, nodesFree }))(this.w.host.pasids.stats()),
      lockedBytes: this.w.guests.map((g) => g.process.lockedBytes),
      handedOut: this.model.tables.map((t) => [...t.pages].sort()),
      // The devices' PASID tables are internal, but a refused bind must not leave an entry in one.
      pasidTables: this.w.devices.map((d) => attemptValue(() => (d.dev as unknown as { pasidTable?: { entries(): unknown } }).pasidTable?.entries())),
    };
    return JSON.stringify(state, (_k, v) => (typeof v === "bigint" ? `0x${v.toString(16)}` : v));
  }
}

function attemptValue(fn: () => unknown): unknown {
  try {
    return fn();
  } catch (e) {
    return e instanceof IommuError ? e.code : `threw ${String(e)}`;
  }
}

/** The first place two snapshots differ: its path, and both values (shortened). */
function firstDifference(a: string, b: string): string {
  const walk = (x: unknown, y: unknown, path: string): string | undefined => {
    if (JSON.stringify(x) === JSON.stringify(y)) return undefined;
    if (x && y && typeof x === "object" && typeof y === "object") {
      for (const k of new Set([...Object.keys(x), ...Object.keys(y)])) {
        const d = walk((x as Record<string, unknown>)[k], (y as Record<string, unknown>)[k], `${path}.${k}`);
        if (d) return d;
      }
    }
    const short = (v: unknown) => { const t = JSON.stringify(v) ?? "undefined"; return t.length > 120 ? `${t.slice(0, 120)}…` : t; };
    return `${path.slice(1)}: ${short(x)} became ${short(y)}`;
  };
  return walk(JSON.parse(a), JSON.parse(b), "") ?? "?";
}

export function describeError(e: unknown): string {
  if (e instanceof IommuError) return e.message;
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return `threw ${String(e)}`;
}
