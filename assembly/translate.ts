// Translation through a domain: the IOTLB first, then the walker on a miss
// (or when the cached permissions do not allow the access, so that A/D and
// the fault are what a fresh walk says), then a fill on success.
import { ctxPtr, ctxFormat, ctxTlbSizes } from "./walk/context";
import { walkHpa, walkSizeLog, walkPerms, walkLevel, walkStage, WALK_UPDATE_AD } from "./walk/walker";
import { walkContext } from "./walk/dispatch";
import { tlbLookup, tlbFill, tlbKey, entrySizeLog, entryOut, entryPerms, countHits, countMiss, countWalk } from "./tlb/iotlb";
import { permsAllow } from "./walk/perms";
import { recordFault } from "./dma/faults";
import { ST_OK } from "./abi";

// Result of the last translateOne: output address, page size, permissions, or the fault level.
export let outHpa: u64 = 0;
export let outSizeLog: u32 = 0;
export let outPerms: u32 = 0;
export let outLevel: u32 = 0;

export function missPath(ctxId: u32, pasid: u32, iova: u64, access: u32, sourceId: u32): u32 {
  countMiss();
  countWalk();
  const ctx = ctxPtr(ctxId);
  const status = walkContext(ctx, iova, access, WALK_UPDATE_AD);
  if (status != ST_OK) {
    outLevel = walkLevel;
    recordFault(ctxId, pasid, sourceId, iova, access, status, walkLevel, walkStage);
    return status;
  }
  const pageMask = (<u64>1 << walkSizeLog) - 1;
  tlbFill(ctxId, pasid, iova, walkSizeLog, walkHpa & ~pageMask, walkPerms);
  outHpa = walkHpa;
  outSizeLog = walkSizeLog;
  outPerms = walkPerms;
  return ST_OK;
}

// Per call, computed once by the caller: need = hitNeed(access, flags),
// minStamp = liveFrom(ctxId, pasid). Hits are counted here one at a time;
// the batch loop in index.ts counts them itself.
@inline export function translateOne(ctxId: u32, pasid: u32, iova: u64, access: u32, need: u32, minStamp: u32, sourceId: u32): u32 {
  const e = tlbLookup(ctxId, tlbKey(ctxId, pasid, 0), iova, minStamp, ctxTlbSizes(ctxPtr(ctxId)));
  if (e != 0 && permsAllow(entryPerms(e), need)) {
    countHits(1);
    const sizeLog = entrySizeLog(e);
    outHpa = entryOut(e) | (iova & ((<u64>1 << sizeLog) - 1));
    outSizeLog = sizeLog;
    outPerms = entryPerms(e);
    return ST_OK;
  }
  return missPath(ctxId, pasid, iova, access, sourceId);
}
