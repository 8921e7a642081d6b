// The guest's page allocator behind every builder table (c.gpa.pageTable):
// pages from the process's pool, handed-out pages tracked per table, and a
// plan that makes one call of one operation misbehave (a misaligned GPA, an
// unmapped one, one beyond guest RAM, a throw, something that is no address,
// a page some table already uses).
import { IommuError } from "../../../src/index.js";
import { GuestError } from "./guard.js";
import { GuestPool, type BuilderTable, type Model } from "./model.js";
import { show } from "./operands.js";
import type { Rng } from "./rng.js";
import type { Tally } from "./tally.js";
import { GUEST_BYTES, GUEST_PAGES, PAGE, pageIsZero, zeroPage, type World } from "./world.js";

export type Sloppy = "good" | "number" | "misaligned" | "unmapped" | "beyondRam" | "throws" | "throwsErrno" | "notAnAddress" | "aliasOther" | "aliasOwn";

/** Misbehaviours the builder must refuse when it meets them. */
export const MUST_REFUSE: readonly Sloppy[] = ["misaligned", "unmapped", "beyondRam", "throws", "throwsErrno", "notAnAddress"];

/** How the allocator behaves during one call: the `at`-th allocation misbehaves as `kind`. */
export interface AllocPlan { kind: Sloppy; at: number; calls: number; misbehaved: boolean; aliased?: BuilderTable }

export const goodPlan = (): AllocPlan => ({ kind: "good", at: -1, calls: 0, misbehaved: false });

export class GuestAllocator {
  private plan = goodPlan();

  constructor(private readonly w: World, private readonly model: Model, private readonly tally: Tally, private readonly rng: Rng) {}

  /** A plan for one call: misbehaving with probability p (a safe-integer number now and then otherwise, which is fine). */
  randomPlan(p: number): AllocPlan {
    const r = this.rng;
    if (!r.chance(p)) return r.chance(0.1) ? { ...goodPlan(), kind: "number", at: 0 } : goodPlan();
    const kind = r.weighted<Sloppy>([[2, "misaligned"], [2, "unmapped"], [1, "beyondRam"], [1, "throws"], [1, "throwsErrno"], [2, "notAnAddress"], [1, "aliasOther"], [1.2, "aliasOwn"]]);
    return { kind, at: r.int(3), calls: 0, misbehaved: false };
  }

  /** Runs one builder call under a plan; returns its outcome and what the allocator did. */
  during<T>(plan: AllocPlan, fn: () => T): { result: T; used: AllocPlan } {
    this.plan = { ...plan, calls: 0 };
    try {
      return { result: fn(), used: this.plan };
    } finally {
      this.plan = goodPlan();
    }
  }

  /** The callbacks a builder table gets. */
  callbacks(t: BuilderTable): { allocTable: () => unknown; freeTable: (gpa: bigint) => void } {
    return {
      allocTable: () => {
        const plan = this.plan;
        if (plan.calls++ === plan.at && plan.kind !== "good") {
          plan.misbehaved = true;
          return this.misbehave(t, plan);
        }
        return this.poolPage(t);
      },
      freeTable: (gpa: bigint) => this.handBack(t, gpa),
    };
  }

  private poolPage(t: BuilderTable): bigint {
    const gpa = this.model.pools[t.container.owner].free.pop();
    if (gpa === undefined) throw new GuestError("the guest has no free table page left");
    t.pages.add(gpa);
    return gpa;
  }

  private misbehave(t: BuilderTable, plan: AllocPlan): unknown {
    const r = this.rng;
    const give = (gpa: bigint) => { t.pages.add(gpa); return gpa; };
    switch (plan.kind) {
      case "number": return Number(this.poolPage(t));
      // Anywhere in guest RAM, 8 bytes past a page start or more: zeroing 4 KiB there spills into the next page.
      case "misaligned": return give(BigInt(r.range(1, GUEST_PAGES - 2)) * PAGE + 8n * BigInt(r.range(1, 511)));
      case "unmapped": return give(GUEST_BYTES + BigInt(r.int(256)) * PAGE);
      case "beyondRam": return give(r.pick([1n << 40n, 1n << 47n]));
      case "throws": throw new GuestError("the guest's allocator gave out");
      case "throwsErrno": throw new IommuError("ENOMEM", "the guest is out of table pages");
      case "notAnAddress": return r.pick<unknown>(["0x5000", undefined, -4096, 4096.5, Number.NaN, null, {}]);
      case "aliasOwn":
        if (t.pages.size === 0 || t.tainted) { plan.misbehaved = false; return this.poolPage(t); }
        return give(r.pick([...t.pages]));
      case "aliasOther": {
        const others = this.model.liveTables().filter((o) => o !== t && o.container.owner === t.container.owner && o.pages.size > 0);
        if (others.length === 0) return this.poolPage(t);
        plan.aliased = r.pick(others);
        return give(r.pick([...plan.aliased.pages]));
      }
      default: return this.poolPage(t);
    }
  }

  /** freeTable: the builder hands a page back. An untainted table hands back only pages it holds, emptied. */
  private handBack(t: BuilderTable, gpa: unknown): void {
    const where = `${t.name} freeTable(${show(gpa)})`;
    if (typeof gpa !== "bigint") return this.tally.note("wrongResult", where, "freeTable got something that is no GPA");
    if (!t.pages.has(gpa)) {
      if (!t.tainted) this.tally.note("wrongResult", where, "a page the table does not hold");
      return;
    }
    if (!t.tainted && GuestPool.isPoolPage(gpa) && !this.plan.misbehaved && !pageIsZero(this.w, t.container.owner, Number(gpa / PAGE))) {
      this.tally.note("wrongResult", where, "handed back a table page that still holds entries");
    }
    t.pages.delete(gpa);
    if (!t.shared) this.returnToPool(t.container.owner, gpa);
  }

  /** A page no table holds any more goes back to the guest's pool, zeroed. */
  private returnToPool(owner: number, gpa: bigint): void {
    if (!GuestPool.isPoolPage(gpa)) return;
    if (this.model.tables.some((o) => !o.reclaimed && o.container.owner === owner && o.pages.has(gpa))) return;
    const pool = this.model.pools[owner];
    if (pool.free.includes(gpa)) return;
    zeroPage(this.w, owner, Number(gpa / PAGE));
    pool.free.push(gpa);
  }

  /** Tables that died with their container or were destroyed give their pages back to the guest. */
  reclaimDeadTables(): void {
    for (const t of this.model.tables) {
      if (!t.dead || t.reclaimed || !t.gpt) continue;
      t.reclaimed = true;
      if (!t.shared) for (const gpa of t.pages) this.returnToPool(t.container.owner, gpa);
    }
  }

  /** After a call the allocator took part in and that succeeded: a page it had to refuse was accepted. */
  checkAccepted(plan: AllocPlan, label: string): void {
    if (plan.misbehaved && MUST_REFUSE.includes(plan.kind)) this.tally.note("invalidAccepted", label, `accepted a ${plan.kind} page from allocTable`);
  }

  /**
   * A page offered twice is zeroed by the builder whether or not the call
   * then succeeds: the tables involved are past the model's knowledge.
   */
  taintAliases(t: BuilderTable, plan: AllocPlan): void {
    if (!plan.misbehaved || (plan.kind !== "aliasOther" && plan.kind !== "aliasOwn")) return;
    t.tainted = true;
    if (plan.aliased) plan.aliased.tainted = true;
  }
}
