// The IOTLB: set-associative, `ways` entries a set, FIFO replacement per set.
// Entries are tagged (page number, page size, context id, PASID).
//
// Flushing a whole context, a (context, PASID) pair or everything is O(1):
// every entry carries the epoch it was filled in, and a flush records a new
// epoch below which entries of that scope are dead. PASID flush epochs live in
// a small hashed table: two pairs that share a slot flush each other's
// entries too — a spurious miss, never a stale hit.
//
// The set index ignores the PASID, so a range flush for all PASIDs of a
// context finds every candidate in the same set.
//
// A hit changes nothing here but the hit counter. Everything else that could
// change a lookup's outcome bumps the TLB generation (TLB_GENERATION): every
// fill (and so every eviction) and every flush here, and the context and
// doorbell changes in index.ts and dma/dma.ts. The facade replays hits while
// the generation holds (src/hitmemo.ts).
import { ctrl, tlb, tlbVictim, tlbSetsLog, tlbSetMask, tlbWays, tlbSetStride, pasidFlush } from "../layout";
import { ctxPtr, ctxTlbSizes, ctxFlushEpoch, ctxS2Id, ctxNestEpoch } from "../walk/context";
import {
  TLB_ENTRY_SIZE, TLB_VPN, TLB_KEY, TLB_OUT, TLB_STAMP, TLB_PERMS, PASID_FLUSH_SLOTS,
  CNT_HITS, CNT_MISSES, CNT_EVICTIONS, CNT_INVALIDATIONS, CNT_WALKS, TLB_GENERATION, CTX_TLB_SIZES, CTX_FLUSH_EPOCH, CTX_NEST_EPOCH, MAX_CONTEXTS,
} from "../abi";

let epoch: u32 = 1;
let allFlushEpoch: u32 = 0;

// A float, so it never wraps (exact up to 2^53 bumps): a replayed hit can never
// meet its generation again after a change.
export let tlbGeneration: f64 = 0;
export function bumpGeneration(): void {
  tlbGeneration += 1;
  store<f64>(ctrl + TLB_GENERATION, tlbGeneration);
}

@inline export function tlbKey(ctxId: u32, pasid: u32, sizeLog: u32): u64 {
  return (<u64>pasid << 32) | (<u64>ctxId << 8) | <u64>sizeLog;
}

@inline function setOf(vpn: u64, ctxId: u32, sizeLog: u32): u32 {
  return (<u32>vpn ^ <u32>(vpn >> tlbSetsLog) ^ (ctxId << 4) ^ sizeLog) & tlbSetMask;
}

@inline function pasidSlot(ctxId: u32, pasid: u32): usize {
  return pasidFlush + (<usize>((ctxId * 0x9E3779B1 ^ pasid * 0x85EBCA77) >> 20) & (PASID_FLUSH_SLOTS - 1)) * 4;
}

// Counters live in globals (cheaper than memory on the hit path) and are
// copied to the control block when the facade asks (countersPublish).
let hits: u64 = 0, misses: u64 = 0, evictions: u64 = 0, invalidations: u64 = 0, walks: u64 = 0;

export function countersPublish(): void {
  store<u64>(ctrl + CNT_HITS, hits);
  store<u64>(ctrl + CNT_MISSES, misses);
  store<u64>(ctrl + CNT_EVICTIONS, evictions);
  store<u64>(ctrl + CNT_INVALIDATIONS, invalidations);
  store<u64>(ctrl + CNT_WALKS, walks);
}

// The oldest epoch an entry of (ctxId, pasid) may carry and still be live.
// A nested context's entries also die with any invalidation of its stage 2.
@inline export function liveFrom(ctxId: u32, pasid: u32): u32 {
  let m = allFlushEpoch;
  const ctx = ctxPtr(ctxId);
  const c = ctxFlushEpoch(ctx);
  if (c > m) m = c;
  const s2 = ctxS2Id(ctx);
  if (s2 != 0) {
    const n = ctxNestEpoch(ctxPtr(s2));
    if (n > m) m = n;
  }
  const p = load<u32>(pasidSlot(ctxId, pasid));
  return p > m ? p : m;
}

// Looks up one page size: key = tlbKey(ctxId, pasid, sizeLog), salt =
// (ctxId << 4) ^ sizeLog, both fixed for a call. Returns the live entry or 0.
@inline export function tlbProbe(key: u64, salt: u32, sizeLog: u32, iova: u64, minStamp: u32): usize {
  const vpn = iova >> sizeLog;
  let e = tlb + <usize>((<u32>vpn ^ <u32>(vpn >> tlbSetsLog) ^ salt) & tlbSetMask) * tlbSetStride;
  for (let w: u32 = 0; w < tlbWays; w++, e += TLB_ENTRY_SIZE) {
    if (load<u64>(e + TLB_VPN) == vpn && load<u64>(e + TLB_KEY) == key && load<u32>(e + TLB_STAMP) >= minStamp) return e;
  }
  return 0;
}

// Looks up iova among the page sizes this context has cached (`sizes`,
// ascending) and returns the live entry, or 0. keyBase = tlbKey(ctxId, pasid, 0).
// The entry's key holds its size: entrySizeLog(e).
@inline export function tlbLookup(ctxId: u32, keyBase: u64, iova: u64, minStamp: u32, sizes: u64): usize {
  let mask = sizes;
  while (mask != 0) {
    const sizeLog = <u32>ctz(mask);
    mask &= mask - 1;
    const e = tlbProbe(keyBase | <u64>sizeLog, (ctxId << 4) ^ sizeLog, sizeLog, iova, minStamp);
    if (e != 0) return e;
  }
  return 0;
}

// Most contexts cache a single page size: then a call's lookups are single
// probes with a key and salt computed once (see translateBatch, dmaSg).
@inline export function isSingleSize(sizes: u64): bool { return sizes != 0 && (sizes & (sizes - 1)) == 0; }

@inline export function entrySizeLog(e: usize): u32 { return load<u8>(e + TLB_KEY); }
@inline export function entryOut(e: usize): u64 { return load<u64>(e + TLB_OUT); }
@inline export function entryPerms(e: usize): u32 { return load<u32>(e + TLB_PERMS); }

@inline export function countHits(n: u32): void { hits += n; }
// Hits the facade replayed without calling the engine (src/hitmemo.ts), added before the counters are read.
export function addReplayedHits(n: u64): void { hits += n; }
@inline export function countMiss(): void { misses++; }
@inline export function countWalk(): void { walks++; }

function entryIsLive(e: usize): bool {
  const key = load<u64>(e + TLB_KEY);
  if (key == 0) return false;
  const ctxId = <u32>(key >> 8) & 0xFFFFFF;
  return load<u32>(e + TLB_STAMP) >= liveFrom(ctxId, <u32>(key >> 32));
}

// Inserts a translation. A live entry with the same tag is refreshed in
// place (a write that walked to set the dirty bit must not leave the older,
// clean copy first in line); otherwise the first dead or empty way is used,
// and failing that the set's FIFO victim is evicted.
export function tlbFill(ctxId: u32, pasid: u32, iova: u64, sizeLog: u32, outPage: u64, perms: u32): void {
  bumpGeneration();
  const vpn = iova >> sizeLog;
  const key = tlbKey(ctxId, pasid, sizeLog);
  const set = setOf(vpn, ctxId, sizeLog);
  const base = tlb + ((<usize>set * tlbWays) * TLB_ENTRY_SIZE);
  let e: usize = 0;
  for (let w: u32 = 0; w < tlbWays; w++) {
    const cand = base + <usize>w * TLB_ENTRY_SIZE;
    if (load<u64>(cand + TLB_VPN) == vpn && load<u64>(cand + TLB_KEY) == key && entryIsLive(cand)) { e = cand; break; }
  }
  for (let w: u32 = 0; e == 0 && w < tlbWays; w++) {
    const cand = base + <usize>w * TLB_ENTRY_SIZE;
    if (!entryIsLive(cand)) e = cand;
  }
  if (e == 0) {
    const v = load<u8>(tlbVictim + set);
    e = base + <usize>v * TLB_ENTRY_SIZE;
    store<u8>(tlbVictim + set, <u8>((<u32>v + 1) % tlbWays));
    evictions++;
  }
  store<u64>(e + TLB_VPN, vpn);
  store<u64>(e + TLB_KEY, key);
  store<u64>(e + TLB_OUT, outPage);
  store<u32>(e + TLB_STAMP, epoch);
  store<u32>(e + TLB_PERMS, perms);
  const ctx = ctxPtr(ctxId);
  store<u64>(ctx + CTX_TLB_SIZES, ctxTlbSizes(ctx) | (<u64>1 << sizeLog));
}

// Epochs are u32; long before they wrap, every entry and stamp is reset.
// Every flush goes through here, so every flush bumps the generation.
function nextEpoch(): u32 {
  bumpGeneration();
  if (epoch >= 0xFFFFFFF0) {
    memory.fill(tlb, 0, ((<usize>TLB_ENTRY_SIZE * tlbWays) << tlbSetsLog));
    memory.fill(pasidFlush, 0, <usize>PASID_FLUSH_SLOTS * 4);
    for (let id: u32 = 0; id < MAX_CONTEXTS; id++) {
      const ctx = ctxPtr(id);
      store<u32>(ctx + CTX_FLUSH_EPOCH, 0);
      store<u32>(ctx + CTX_NEST_EPOCH, 0);
      store<u64>(ctx + CTX_TLB_SIZES, 0);
    }
    allFlushEpoch = 0;
    epoch = 1;
  }
  epoch++;
  return epoch;
}

export function tlbFlushAll(): void {
  allFlushEpoch = nextEpoch();
  for (let id: u32 = 0; id < MAX_CONTEXTS; id++) store<u64>(ctxPtr(id) + CTX_TLB_SIZES, 0);
  invalidations++;
}

// Any invalidation of a context also ends the combined entries nested over it.
@inline function endNested(ctxId: u32, epochNow: u32): void { store<u32>(ctxPtr(ctxId) + CTX_NEST_EPOCH, epochNow); }

export function tlbFlushContext(ctxId: u32): void {
  const ctx = ctxPtr(ctxId);
  const e = nextEpoch();
  store<u32>(ctx + CTX_FLUSH_EPOCH, e);
  endNested(ctxId, e);
  store<u64>(ctx + CTX_TLB_SIZES, 0);
  invalidations++;
}

export function tlbFlushPasid(ctxId: u32, pasid: u32): void {
  const e = nextEpoch();
  store<u32>(pasidSlot(ctxId, pasid), e);
  endNested(ctxId, e);
  invalidations++;
}

@inline function dropIfMatch(e: usize, ctxId: u32, pasid: u32, anyPasid: bool, sizeLog: u32, firstVpn: u64, lastVpn: u64): void {
  const key = load<u64>(e + TLB_KEY);
  if (key == 0) return;
  if ((<u32>key & 0xFF) != sizeLog || ((<u32>(key >> 8)) & 0xFFFFFF) != ctxId) return;
  if (!anyPasid && <u32>(key >> 32) != pasid) return;
  const vpn = load<u64>(e + TLB_VPN);
  if (vpn >= firstVpn && vpn <= lastVpn) store<u64>(e + TLB_KEY, 0);
}

// Drops every entry of ctxId (one PASID, or all when anyPasid) that overlaps
// [first, last]. Probes the sets of the affected pages, or scans the whole
// IOTLB when that is cheaper. Only leaf translations are cached, so the leaf
// hint changes nothing here.
export function tlbFlushRange(ctxId: u32, pasid: u32, anyPasid: bool, first: u64, last: u64): void {
  // Combined entries over this context cannot be found by the range (they are
  // keyed by stage-1 address): all of them go, as the architecture requires.
  endNested(ctxId, nextEpoch());
  let mask = ctxTlbSizes(ctxPtr(ctxId));
  const sets = <u64>1 << tlbSetsLog;
  while (mask != 0) {
    const sizeLog = <u32>ctz(mask);
    mask &= mask - 1;
    const firstVpn = first >> sizeLog;
    const lastVpn = last >> sizeLog;
    if (lastVpn - firstVpn >= sets) {
      const end = tlb + ((<usize>TLB_ENTRY_SIZE * tlbWays) << tlbSetsLog);
      for (let e = tlb; e < end; e += TLB_ENTRY_SIZE) dropIfMatch(e, ctxId, pasid, anyPasid, sizeLog, firstVpn, lastVpn);
    } else {
      let vpn = firstVpn;
      while (true) {
        let e = tlb + ((<usize>setOf(vpn, ctxId, sizeLog) * tlbWays) * TLB_ENTRY_SIZE);
        for (let w: u32 = 0; w < tlbWays; w++, e += TLB_ENTRY_SIZE) dropIfMatch(e, ctxId, pasid, anyPasid, sizeLog, firstVpn, lastVpn);
        if (vpn == lastVpn) break;
        vpn++;
      }
    }
  }
  invalidations++;
}

export function tlbInit(): void {
  epoch = 1;
  allFlushEpoch = 0;
  hits = 0; misses = 0; evictions = 0; invalidations = 0; walks = 0;
  bumpGeneration();
}

// Live entries per set, one byte a set from out: a view for tools (the
// playground's occupancy panel), O(sets × ways), never on a DMA path. An
// entry is live when a lookup could still hit it: the same test as tlbProbe.
export function tlbOccupancy(out: usize): void {
  const sets = tlbSetMask + 1;
  for (let s: u32 = 0; s < sets; s++) {
    let e = tlb + <usize>s * tlbSetStride;
    let live: u32 = 0;
    for (let w: u32 = 0; w < tlbWays; w++, e += TLB_ENTRY_SIZE) {
      const key = load<u64>(e + TLB_KEY);
      // An empty way has key 0: a filled one always carries its page size.
      if (key == 0) continue;
      const ctxId = <u32>(key >> 8) & 0xFFFFFF;
      if (ctxId < MAX_CONTEXTS && load<u32>(e + TLB_STAMP) >= liveFrom(ctxId, <u32>(key >> 32))) live++;
    }
    store<u8>(out + <usize>s, <u8>live);
  }
}
