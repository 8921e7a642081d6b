// The adversary: a seeded random attacker against nesting containers and
// PASIDs, on both arches (VT-d with x86-64 stage-1 tables, SMMUv3 with Arm
// stage-1 tables). Two VMM processes each own a container; three groups
// (four devices) move between them; the attacker allocates and frees PASIDs
// (its own and the other container's), binds and unbinds guest tables on
// every device (also devices in the other container or in none), builds
// guest tables with a sloppy allocator, writes hostile tables by hand (loops,
// tables inside tables, large leaves, pointers beyond stage 2), invalidates
// with random scopes, unmaps and remaps stage 2 (table pages too), attaches,
// detaches and closes, and DMAs with and without PASIDs.
//
// A model (test/support/adversary/model.ts) says what each (device, PASID)
// may reach, and every DMA is judged by where its bytes really came from or
// went (every data word of guest RAM is tagged with its frame; writes put
// unique markers and the oracle finds them). Counted, and each expected to be
// 0: breaches, stale translations after a covering invalidation, wrong-kind
// exceptions, invalid operations accepted, refused calls with side effects,
// valid operations refused, wrong results. At least 20 % of the DMAs must
// move data, so the run proves something.
//
// Default: 4 seeds × 3000 operations per arch, about 10 s for both on the
// project's 2-core machine. A long run (about 2 minutes per arch):
//   IOMMU_ADVERSARY_SEEDS=12 IOMMU_ADVERSARY_OPS=10000 npx vitest run test/nesting-adversary.test.ts
// IOMMU_ADVERSARY_SEED=<n> starts the seeds at n; a seed with violations is
// printed with its counts, and the same seed replays the same run.
import { describe, expect, it } from "vitest";
import { createWorld, type Arch } from "./support/adversary/world.js";
import { Session } from "./support/adversary/session.js";
import { Tally, VIOLATIONS, type Violation } from "./support/adversary/tally.js";

const SEEDS = Number(process.env.IOMMU_ADVERSARY_SEEDS ?? 4);
// npm run test:quick (IOMMU_TEST_QUICK=1) makes a tenth of the default.
const OPS = Number(process.env.IOMMU_ADVERSARY_OPS ?? (process.env.IOMMU_TEST_QUICK === "1" ? 300 : 3000));
const FIRST_SEED = Number(process.env.IOMMU_ADVERSARY_SEED ?? 1);

async function attack(arch: Arch, seed: number, ops: number): Promise<Tally> {
  const session = new Session(await createWorld(arch), seed * 7919 + (arch === "vtd" ? 0 : 1));
  session.boot();
  for (let i = 0; i < ops && !session.oracle.corrupt; i++) session.step();
  if (session.oracle.corrupt) session.tally.aborted++;
  return session.tally;
}

describe("an adversary against nesting containers and PASIDs", () => {
  for (const arch of ["vtd", "smmuv3"] as const) {
    it(`${arch}: ${SEEDS} seeds × ${OPS} operations find no violation`, async () => {
      const total = new Tally();
      const started = Date.now();
      for (let seed = FIRST_SEED; seed < FIRST_SEED + SEEDS; seed++) {
        const t = await attack(arch, seed, OPS);
        const bad = (Object.keys(VIOLATIONS) as Violation[]).filter((k) => t.counts[k] > 0);
        if (bad.length > 0) console.log(`${arch} seed ${seed}: ${bad.map((k) => `${k} ${t.counts[k]}`).join(", ")}`);
        total.add(t);
      }
      console.log(`${total.report(`${arch}, seeds ${FIRST_SEED}..${FIRST_SEED + SEEDS - 1}`)}\n  (${((Date.now() - started) / 1000).toFixed(1)} s)`);
      for (const k of Object.keys(VIOLATIONS) as Violation[]) expect(total.counts[k], VIOLATIONS[k]).toBe(0);
      // The run proves something only if DMAs get through.
      expect(total.dmaMoved / total.dmas).toBeGreaterThanOrEqual(0.2);
    }, 600_000);
  }
});
