// The engine's only export surface. Every function here trusts the facade to
// have validated its arguments (ids live, ranges in bounds); what it still
// checks is whatever a page table in RAM can make wrong at run time.
import { ctrl, layoutInit, staging } from "./layout";
import { framesInit, allocFrames, freeFrames, claimFrame } from "./mem/frames";
import { inRam, ramPtr } from "./mem/phys";
import { ctxPtr, ctxSet, ctxClear, ctxSetFlags, ctxSetMsiWindow, ctxSetNested, ctxTlbSizes } from "./walk/context";
import { mapRange, mapList, unmapRange, processMap, processUnmap, pinMap, unpinUnmap, dirtyScan, guestMap, guestUnmap } from "./walk/dispatch";
import { guestTablesNeeded as builderGuestTablesNeeded, releasedCount as builderReleasedCount, unmapStatus as builderUnmapStatus } from "./walk/builder";
import { pinCount } from "./mem/pins";
import { pinProcessPages, unpinFrameList } from "./mem/extpins";
import { setDoorbellWindow } from "./dma/dma";
import { tlbLookup, tlbProbe, isSingleSize, tlbKey, entryOut, entryPerms, entrySizeLog, countHits, countersPublish, tlbOccupancy, tlbInit, tlbFlushAll, tlbFlushContext, tlbFlushPasid, tlbFlushRange, liveFrom, bumpGeneration, addReplayedHits } from "./tlb/iotlb";
import { translateOne, missPath, outHpa, outSizeLog, outPerms, outLevel } from "./translate";
import { walkContext } from "./walk/dispatch";
import { walkHpa, walkSizeLog, walkPerms, walkLevel, walkStage, WALK_TRACE } from "./walk/walker";
import { dmaCopy, dmaPiece, dmaScatterGather } from "./dma/dma";
import { ctxFlags } from "./walk/context";
import { hitNeed, permsAllow } from "./walk/perms";
import { MAX_CONTEXTS, ST_OK, ERR_EINVAL, RES_STATUS, RES_LEVEL, RES_HPA, RES_SIZE_LOG, RES_PERMS, RES_TRACE_COUNT, RES_STAGE } from "./abi";

export function init(ramBytes: u64, tlbSetsLog: u32, tlbWays: u32, faultLog: u32, arenaBytes: u32, pasidNodes: u32): u32 {
  const st = layoutInit(ramBytes, tlbSetsLog, tlbWays, faultLog, arenaBytes, pasidNodes);
  if (st != 0) return st;
  framesInit();
  tlbInit();
  pasidSpaceInit();
  // Every slot starts as "no context": DMA through it faults (no-context), and
  // none has an MSI window (slot 0 is what a device with no domain uses).
  for (let id: u32 = 0; id < MAX_CONTEXTS; id++) ctxClear(id);
  return 0;
}

export function controlBlock(): usize { return ctrl; }
export function stagingArea(): usize { return staging; }

// ---- frames
export function framesAlloc(count: u32): u64 { return allocFrames(count); }
export function framesRelease(hpa: u64, count: u32): u32 { return freeFrames(hpa, count) ? ST_OK : ERR_EINVAL; }
export function framesClaim(hpa: u64): u32 { return claimFrame(hpa) ? ST_OK : ERR_EINVAL; }

// ---- contexts
// A lookup reads its context (flags, MSI window, stage 2, cached sizes): every
// change bumps the TLB generation, as IOTLB changes do (tlb/iotlb.ts).
export function contextSet(id: u32, format: u32, levels: u32, inputBits: u32, flags: u32, paWidth: u32, root: u64, pgsizes: u64): void {
  ctxSet(id, format, levels, inputBits, flags, paWidth, root, pgsizes | (1 << 12));
  bumpGeneration();
}
export function contextDestroy(id: u32): void { tlbFlushContext(id); ctxClear(id); bumpGeneration(); }

export function contextSetFlags(id: u32, flags: u32): void { ctxSetFlags(id, flags); bumpGeneration(); }
export function contextSetMsiWindow(id: u32, start: u64, end: u64): void { ctxSetMsiWindow(id, start, end); bumpGeneration(); }
export function contextSetNested(id: u32, s2: u32, physTables: bool): void { ctxSetNested(id, s2, physTables); bumpGeneration(); }
export function setMsiDoorbell(start: u64, end: u64): void { setDoorbellWindow(start, end); }

// ---- builder
export function ptMap(id: u32, iova: u64, last: u64, hpa: u64, prot: u32): u32 { return mapRange(ctxPtr(id), iova, last, hpa, prot); }
export function ptUnmap(id: u32, iova: u64, last: u64): u64 { return unmapRange(ctxPtr(id), iova, last); }
// `count` (iova, last, hpa) triples at `list` (staging), all mapped or none (the status of the entry that failed).
export function ptMapList(id: u32, list: usize, count: u32, prot: u32): u32 { return mapList(ctxPtr(id), list, count, prot); }

// ---- guest tables (a nested context's stage 1, in guest memory)
// ERR_ENOMEM with guestTablesNeeded() set when the pool of `count` GPAs at `pool` is short.
export function ptGuestMap(id: u32, iova: u64, last: u64, gpa: u64, prot: u32, pool: usize, count: u32, released: usize, cap: u32): u32 {
  return guestMap(ctxPtr(id), iova, last, gpa, prot, pool, count, released, cap);
}
export function ptGuestUnmap(id: u32, iova: u64, last: u64, released: usize, cap: u32): u64 {
  return guestUnmap(ctxPtr(id), iova, last, released, cap);
}
export function guestTablesNeeded(): u32 { return builderGuestTablesNeeded; }
export function guestTablesReleased(): u32 { return builderReleasedCount; }
// The last guest unmap: ST_OK, or ERR_EFAULT (nothing changed) when a table of its range was out of reach.
export function guestUnmapStatus(): u32 { return builderUnmapStatus; }

// ---- process memory and pinned DMA mappings
export function procMap(id: u32, vaddr: u64, last: u64, prot: u32): u32 { return processMap(ctxPtr(id), vaddr, last, prot); }
export function procUnmap(id: u32, vaddr: u64, last: u64): u64 { return processUnmap(ctxPtr(id), vaddr, last); }
export function dmaPinMap(procId: u32, domId: u32, vaddr: u64, last: u64, iova: u64, access: u32, prot: u32): u32 {
  return pinMap(ctxPtr(procId), ctxPtr(domId), vaddr, last, iova, access, prot);
}
export function dmaUnpinUnmap(domId: u32, iova: u64, last: u64): u64 { return unpinUnmap(ctxPtr(domId), iova, last); }
export function framePins(hpa: u64): u32 { return pinCount(hpa); }

// ---- a vendor driver's pins (vfio_pin_pages / vfio_unpin_pages): frames only, the records are the caller's
export function extPin(procId: u32, vaddr: u64, npage: u32, access: u32, out: usize): u32 { return pinProcessPages(ctxPtr(procId), vaddr, npage, access, out); }
export function extUnpin(list: usize, count: u32): void { unpinFrameList(list, count); }

// ---- dirty tracking: bitmap bit i ↔ page i of (1 << pgShift) bytes from
// iova. Clearing also invalidates the range, so the next write walks again
// and sets the dirty bit anew.
export function dirtyBitmap(id: u32, iova: u64, last: u64, pgShift: u32, bitmap: usize, clear: bool): u32 {
  const found = dirtyScan(ctxPtr(id), iova, last, pgShift, bitmap, clear);
  if (clear) tlbFlushRange(id, 0, true, iova, last);
  return found;
}

// A walk that neither fills the IOTLB nor sets A/D; `traceEntries` records
// every entry read. Results go to the control block.
export function probe(id: u32, iova: u64, access: u32, traceEntries: bool): u32 {
  store<u32>(ctrl + RES_TRACE_COUNT, 0);
  const st = walkContext(ctxPtr(id), iova, access, traceEntries ? WALK_TRACE : 0);
  store<u32>(ctrl + RES_STATUS, st);
  store<u32>(ctrl + RES_LEVEL, walkLevel);
  store<u64>(ctrl + RES_HPA, st == ST_OK ? walkHpa : 0);
  store<u32>(ctrl + RES_STAGE, walkStage);
  store<u32>(ctrl + RES_SIZE_LOG, st == ST_OK ? walkSizeLog : 0);
  store<u32>(ctrl + RES_PERMS, st == ST_OK ? walkPerms : 0);
  return st;
}

// ---- translation through the IOTLB
// A device model's one-address translation: iova below 2^53 as a number, the
// HPA back as one (physical addresses are below 2^52), or -1 on a fault
// (recorded, and described in the control block as translate describes it).
// No BigInt crosses either way.
export function translateNumber(id: u32, pasid: u32, iova: f64, access: u32, sourceId: u32): f64 {
  return translate(id, pasid, <u64>iova, access, sourceId) == ST_OK ? <f64>outHpa : -1;
}
export function translate(id: u32, pasid: u32, iova: u64, access: u32, sourceId: u32): u32 {
  const st = translateOne(id, pasid, iova, access, hitNeed(access, ctxFlags(ctxPtr(id))), liveFrom(id, pasid), sourceId);
  store<u32>(ctrl + RES_STATUS, st);
  store<u32>(ctrl + RES_LEVEL, st == ST_OK ? 0 : outLevel);
  store<u64>(ctrl + RES_HPA, st == ST_OK ? outHpa : 0);
  store<u32>(ctrl + RES_STAGE, st == ST_OK ? 0 : walkStage);
  store<u32>(ctrl + RES_SIZE_LOG, st == ST_OK ? outSizeLog : 0);
  store<u32>(ctrl + RES_PERMS, st == ST_OK ? outPerms : 0);
  return st;
}

// iovas[i] → hpas[i] (0 on a fault) and status[i]; returns the number of faults.
// The hit path is written out here so the per-call values stay in locals.
export function translateBatch(id: u32, pasid: u32, access: u32, sourceId: u32, iovas: usize, hpas: usize, status: usize, count: u32): u32 {
  const ctx = ctxPtr(id);
  const need = hitNeed(access, ctxFlags(ctx));
  const minStamp = liveFrom(id, pasid);
  const keyBase = tlbKey(id, pasid, 0);
  // The lookup plan: one probe with a fixed key and salt when a single page
  // size is cached; redone after a miss, whose fill may add a size.
  let sizes = ctxTlbSizes(ctx);
  let single = isSingleSize(sizes);
  let sizeLog = <u32>ctz(sizes), key = keyBase | <u64>sizeLog, salt = (id << 4) ^ sizeLog;
  let faults: u32 = 0, hits: u32 = 0;
  for (let i: u32 = 0; i < count; i++) {
    const off = <usize>i << 3;
    const iova = load<u64>(iovas + off);
    const e = single ? tlbProbe(key, salt, sizeLog, iova, minStamp) : tlbLookup(id, keyBase, iova, minStamp, sizes);
    if (e != 0 && permsAllow(entryPerms(e), need)) {
      hits++;
      const offsetMask = (<u64>1 << (single ? sizeLog : entrySizeLog(e))) - 1;
      store<u64>(hpas + off, entryOut(e) | (iova & offsetMask));
      store<u8>(status + i, 0);
      continue;
    }
    const st = missPath(id, pasid, iova, access, sourceId);
    store<u64>(hpas + off, st == ST_OK ? outHpa : 0);
    store<u8>(status + i, <u8>st);
    if (st != ST_OK) faults++;
    sizes = ctxTlbSizes(ctx);
    single = isSingleSize(sizes);
    sizeLog = <u32>ctz(sizes); key = keyBase | <u64>sizeLog; salt = (id << 4) ^ sizeLog;
  }
  countHits(hits);
  return faults;
}

// ---- IOTLB invalidation and counters
export function iotlbCounters(): void { countersPublish(); }
// Hits the facade replayed (src/hitmemo.ts): added to the hit counter before it is read.
export function iotlbAddHits(n: f64): void { addReplayedHits(<u64>n); }
export function iotlbOccupancy(out: usize): void { tlbOccupancy(out); }
export function iotlbFlushAll(): void { tlbFlushAll(); }
export function iotlbFlushContext(id: u32): void { tlbFlushContext(id); }
export function iotlbFlushPasid(id: u32, pasid: u32): void { tlbFlushPasid(id, pasid); }
export function iotlbFlushRange(id: u32, pasid: u32, anyPasid: bool, first: u64, last: u64): void {
  tlbFlushRange(id, pasid, anyPasid, first, last);
}

// ---- DMA
// `table`: the device's PASID table (0: none); a PASID-tagged request then goes to the context bound there.
export function dmaStep(id: u32, pasid: u32, access: u32, sourceId: u32, iova: f64, want: u32, table: u32): u32 {
  return dmaPiece(id, pasid, access, sourceId, iova, want, table);
}
export function dma(id: u32, pasid: u32, access: u32, sourceId: u32, iova: u64, len: u32, buf: usize, table: u32): u32 {
  return dmaCopy(id, pasid, access, sourceId, iova, len, buf, table);
}
export function dmaSg(id: u32, pasid: u32, access: u32, sourceId: u32, segs: usize, count: u32, buf: usize, bufLen: u32, table: u32): u32 {
  return dmaScatterGather(id, pasid, access, sourceId, segs, count, buf, bufLen, table);
}

// ---- the benchmark's limit: the copies a DMA does, with no translation at
// all. memcpyGather copies `len` bytes from each HPA of a list (u64s at srcs)
// into dst, back to back: the same bytes from the same addresses as a DMA of
// those pages, so the difference is what translation costs.
export function memcpyGather(dst: usize, srcs: usize, count: u32, len: u32): void {
  for (let i: u32 = 0; i < count; i++) {
    const hpa = load<u64>(srcs + (<usize>i << 3));
    if (inRam(hpa, len)) memory.copy(dst + <usize>i * len, ramPtr(hpa), len);
  }
}
import { pasidSpaceInit } from "./pasid/alloc";
export * from "./pasid/exports";
