// Translation through a domain in the twin: the IOTLB first; on a miss (or a
// hit whose permissions do not allow the access, or a write hit on an entry
// without PERM_DIRTY) a walk with A/D updates, then a fill on success or a
// fault record on failure.
import * as abi from "../../src/engine/abi.js";
import type { Contexts } from "./context.js";
import type { NaiveFaultLog } from "./faults.js";
import type { NaiveIotlb } from "./iotlb.js";
import { hitAllows } from "./perms.js";
import type { Ram } from "./ram.js";
import { walk } from "./walker.js";

export type TranslateOutcome =
  | { status: 0; hpa: bigint; sizeLog: number; perms: number }
  | { status: number; level: number; stage?: 2 };

export class Translator {
  constructor(readonly ram: Ram, readonly contexts: Contexts, readonly iotlb: NaiveIotlb, readonly faults: NaiveFaultLog) {}

  translate(ctxId: number, pasid: number, iova: bigint, access: number, sourceId: number): TranslateOutcome {
    const ctx = this.contexts.get(ctxId);
    const hit = this.iotlb.lookup(ctxId, pasid, iova);
    if (hit && hitAllows(hit.perms, access, ctx.flags)) {
      this.iotlb.counters.hits++;
      const offset = iova & ((1n << BigInt(hit.sizeLog)) - 1n);
      return { status: abi.ST_OK, hpa: hit.outPage | offset, sizeLog: hit.sizeLog, perms: hit.perms };
    }
    this.iotlb.counters.misses++;
    this.iotlb.counters.walks++;
    const r = walk(this.ram, ctx, iova, access, { updateAd: true, contexts: this.contexts });
    if (r.status !== abi.ST_OK || !("hpa" in r)) {
      const level = "level" in r ? r.level : 0;
      const stage = "stage" in r && r.stage === 2 ? 2 : 1;
      this.faults.record(ctxId, pasid, sourceId, iova, access, r.status, level, stage);
      return stage === 2 ? { status: r.status, level, stage: 2 } : { status: r.status, level };
    }
    const pageMask = (1n << BigInt(r.sizeLog)) - 1n;
    this.iotlb.fill(ctxId, pasid, iova, r.sizeLog, r.hpa & ~pageMask, r.perms);
    return r;
  }
}
