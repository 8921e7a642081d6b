// The io-pgtable operations on a table in RAM, written once for every format:
// map (largest pages that fit), unmap (bytes unmapped), and iovaToPhys via
// the walker.
//
// Tables in RAM may have been written by anyone, so each call visits a table
// at most once (a stamp per frame): a table reached twice — aliased, or in a
// cycle — cannot be reasoned about, and map refuses it (EINVAL) up front.
//
// map is all or nothing. A check pass finds any present leaf (EEXIST), table
// pointer outside RAM (EFAULT) or aliasing (EINVAL), and counts the tables it
// must allocate plus the existing tables the frame allocator does not hold
// yet (ENOMEM when they exceed the free frames; counting stops there, so a
// huge request fails fast). Only then are those existing tables adopted
// (so no new table can land on one) and the apply pass writes; it cannot fail.
//
// Where a leaf fits over a slot that holds a table with no valid entry below
// it (an unmap emptied it), the leaf takes the table's place and the emptied
// tables go back (host frames to the allocator, guest pages to the guest), as
// the kernel's page-table code does; a table still holding a leaf is EEXIST.
// Nothing cached needs invalidating for that: the IOTLB holds only
// translations, and an empty table gave none. A pinned map (with an undo log)
// only unlinks them and logs the slot, so a rollback can link them back; they
// are released when the whole pinned map succeeds (commitUndo).
//
// unmap never splits a leaf: a leaf only partly inside the range stays and
// is not counted. A table whose whole span lies inside the range is unlinked
// and, on its first visit and if the frame allocator holds it, freed; the
// root is never freed.
import { tableStamps, frameCount, undoLog } from "../layout";
import { markOwned } from "../mem/pins";
import { inRam, loadPte, storePte, ramPtr } from "../mem/phys";
import { allocFrames, freeFrames, framesFree, frameIsAllocated, claimFrame } from "../mem/frames";
import { ctxRoot, ctxLevels, ctxFlags, ctxPgsizes } from "./context";
import { walkIn, walkHpa, isNested, NoStage2 } from "./walker";
import { ST_OK, ERR_EINVAL, ERR_EEXIST, ERR_ENOMEM, ERR_EFAULT, KIND_INVALID, KIND_LEAF, KIND_TABLE, UNDO_LOG_ENTRIES, ACCESS_READ, ACCESS_WRITE } from "../abi";

let tablesNeeded: u32 = 0;
// mmap mode: every leaf is a 4 KiB page backed by a fresh frame the process owns.
let freshLeaves = false;
// Pinned maps log every table they create, so a failure can remove them again.
let undoActive = false;
let undoCount: u32 = 0;
// Rollback unmaps leave tables in place (the undo log removes the new ones).
let keepTables = false;
let tablesAdopted: u32 = 0;
// Emptied tables a map releases, and the slots where a leaf replaces one.
let tablesFreed: u32 = 0;
let slotsReplaced: u32 = 0;
let overBudget = false;
let visitStamp: u32 = 0;

// Guest builds: the stage-2 context, the GPAs offered for new tables, and
// where the GPAs of released tables are written.
let guestS2: usize = 0;
let poolAt: usize = 0;
let poolCount: u32 = 0;
let poolUsed: u32 = 0;
let releasedAt: usize = 0;
let releasedCap: u32 = 0;
export let releasedCount: u32 = 0;
// A guest unmap's status: EFAULT (nothing changed) when stage 2 keeps a table of the range out of reach.
export let unmapStatus: u32 = ST_OK;
export let guestTablesNeeded: u32 = 0;

const NO_PAGE: u64 = u64.MAX_VALUE;
const GUEST_TABLES_MAX: u32 = 1 << 20;

// The HPA of a table page: the address itself, or (guest tables) its stage-2
// translation, which must allow reading and writing; NO_PAGE when it is not
// a usable page of RAM.
@inline function tableHpa<G>(table: u64): u64 {
  let h = table;
  if (isNested<G>()) {
    if (walkIn<G, NoStage2>(guestS2, table, ACCESS_READ | ACCESS_WRITE, 0, 0) != ST_OK) return NO_PAGE;
    h = walkHpa & ~<u64>0xfff;
  }
  return inRam(h, 4096) ? h : NO_PAGE;
}

// Frames a map may still take: the host allocator's, or the guest's pool.
@inline function budget<G>(): u64 { return isNested<G>() ? <u64>(poolCount - poolUsed) : <u64>framesFree(); }

function beginVisits(): void {
  visitStamp++;
  if (visitStamp == 0) {
    memory.fill(tableStamps, 0, <usize>frameCount << 2);
    visitStamp = 1;
  }
}

// True the first time a table (in RAM) is reached in this call.
@inline function firstVisit(table: u64): bool {
  const p = tableStamps + (<usize>(table >> 12) << 2);
  if (load<u32>(p) == visitStamp) return false;
  store<u32>(p, visitStamp);
  return true;
}

// A table on a map's path: a usable page (EFAULT), met for the first time in this call (EINVAL).
@inline function enterTable<G>(sub: u64): u32 {
  const sh = tableHpa<G>(sub);
  if (sh == NO_PAGE) return ERR_EFAULT;
  return firstVisit(sh) ? ST_OK : ERR_EINVAL;
}

@inline function slotLast(iova: u64, shift: u32): u64 { return iova | ((<u64>1 << shift) - 1); }

// Whether [iova, chunkLast] can be one leaf at this level.
@inline function fitsLeaf<F>(level: u32, iova: u64, chunkLast: u64, hpa: u64, pgsizes: u64): bool {
  const fmt = changetype<F>(0);
  const shift = fmt.levelShift(level);
  if (freshLeaves && level != 0) return false;
  if (((fmt.leafLevels() >> level) & 1) == 0 || ((pgsizes >> shift) & 1) == 0) return false;
  const mask = (<u64>1 << shift) - 1;
  return (iova & mask) == 0 && chunkLast == (iova | mask) && (hpa & mask) == 0;
}

// virt: the table does not exist yet (everything below it is counted as new).
function mapCheck<F, G>(table: u64, virt: bool, level: u32, iova: u64, last: u64, hpa: u64, pgsizes: u64): u32 {
  const fmt = changetype<F>(0);
  const shift = fmt.levelShift(level);
  const th = virt ? 0 : tableHpa<G>(table);
  let cur = iova, out = hpa;
  while (true) {
    const end = slotLast(cur, shift);
    const chunkLast = end < last ? end : last;
    const pte = virt ? 0 : loadPte(th + (<u64>fmt.index(cur, level) << 3));
    const kind = virt ? KIND_INVALID : fmt.entryKind(pte, level);
    if (kind == KIND_LEAF) return ERR_EEXIST;
    if (kind == KIND_TABLE) {
      const sub = fmt.tableAddr(pte);
      const entered = enterTable<G>(sub);
      if (entered != ST_OK) return entered;
      if (fitsLeaf<F>(level, cur, chunkLast, out, pgsizes)) {
        // The leaf replaces the table if nothing below it is valid.
        const st = emptyBelow<F, G>(sub, level - 1);
        if (st != ST_OK) return st;
        slotsReplaced++;
      } else {
        if (!isNested<G>() && !frameIsAllocated(sub)) tablesAdopted++;
        const st = mapCheck<F, G>(sub, false, level - 1, cur, chunkLast, out, pgsizes);
        if (st != ST_OK) return st;
      }
    } else if (!overBudget) {
      if (!fitsLeaf<F>(level, cur, chunkLast, out, pgsizes)) {
        tablesNeeded++;
        // A guest build counts every table it needs (so the caller can offer
        // that many), up to a bound that keeps a huge request from counting forever.
        if (isNested<G>() ? tablesNeeded > GUEST_TABLES_MAX : <u64>tablesNeeded + tablesAdopted > budget<G>()) overBudget = true;
        else mapCheck<F, G>(0, true, level - 1, cur, chunkLast, out, pgsizes);
      } else if (freshLeaves) {
        tablesNeeded++; // the page's own frame
        if (<u64>tablesNeeded + tablesAdopted > budget<G>()) overBudget = true;
      }
    }
    if (overBudget && virt) return ST_OK;
    if (chunkLast == last) return ST_OK;
    out += chunkLast - cur + 1;
    cur = chunkLast + 1;
  }
}

// ST_OK when no entry of `table` or of the tables below it is a leaf (EEXIST
// otherwise); every table met is counted in tablesFreed, and must be a usable
// page (EFAULT) reached once (EINVAL), as on any other path of the map.
function emptyBelow<F, G>(table: u64, level: u32): u32 {
  const fmt = changetype<F>(0);
  const th = tableHpa<G>(table);
  tablesFreed++;
  for (let i: u64 = 0; i < 512; i++) {
    const pte = loadPte(th + (i << 3));
    const kind = fmt.entryKind(pte, level);
    if (kind == KIND_LEAF) return ERR_EEXIST;
    if (kind == KIND_TABLE) {
      const sub = fmt.tableAddr(pte);
      const entered = enterTable<G>(sub);
      if (entered != ST_OK) return entered;
      const st = emptyBelow<F, G>(sub, level - 1);
      if (st != ST_OK) return st;
    }
  }
  return ST_OK;
}

// Gives back an emptied table and every table below it, the lower ones
// first: a guest page to the guest's list, a host frame the allocator holds to it.
function releaseTables<F, G>(table: u64, level: u32): void {
  const fmt = changetype<F>(0);
  const th = tableHpa<G>(table);
  if (th == NO_PAGE) return;
  for (let i: u64 = 0; i < 512; i++) {
    const pte = loadPte(th + (i << 3));
    if (fmt.entryKind(pte, level) == KIND_TABLE) releaseTables<F, G>(fmt.tableAddr(pte), level - 1);
  }
  releaseTable<G>(table);
}

@inline function releaseTable<G>(table: u64): void {
  if (isNested<G>()) {
    if (releasedCount < releasedCap) store<u64>(releasedAt + (<usize>releasedCount << 3), table);
    releasedCount++;
  } else if (frameIsAllocated(table)) freeFrames(table, 1);
}

// Undo records: a new table (its PTE address, its frame), or a slot where a
// leaf replaced an emptied table (the PTE address tagged with the table's
// level, and the old entry).
const UNDO_REPLACED: u64 = <u64>1 << 63;

@inline function logUndo(pteAddr: u64, value: u64): void {
  const rec = undoLog + (<usize>undoCount << 4);
  store<u64>(rec, pteAddr);
  store<u64>(rec, value, 8);
  undoCount++;
}

// Hands the existing tables of the range that the allocator does not hold to it.
function adoptTables<F>(table: u64, level: u32, iova: u64, last: u64): void {
  const fmt = changetype<F>(0);
  const shift = fmt.levelShift(level);
  let cur = iova;
  while (true) {
    const end = slotLast(cur, shift);
    const chunkLast = end < last ? end : last;
    const pte = loadPte(table + (<u64>fmt.index(cur, level) << 3));
    if (fmt.entryKind(pte, level) == KIND_TABLE) {
      const sub = fmt.tableAddr(pte);
      if (!frameIsAllocated(sub)) claimFrame(sub);
      adoptTables<F>(sub, level - 1, cur, chunkLast);
    }
    if (chunkLast == last) return;
    cur = chunkLast + 1;
  }
}

function mapApply<F, G>(table: u64, level: u32, iova: u64, last: u64, hpa: u64, prot: u32, flags: u32, pgsizes: u64): void {
  const fmt = changetype<F>(0);
  const shift = fmt.levelShift(level);
  const th = tableHpa<G>(table);
  let cur = iova, out = hpa;
  while (true) {
    const end = slotLast(cur, shift);
    const chunkLast = end < last ? end : last;
    const pteAddr = th + (<u64>fmt.index(cur, level) << 3);
    const pte = loadPte(pteAddr);
    const kind = fmt.entryKind(pte, level);
    // The check pass saw every table here exactly once and no leaf, and every
    // table on the path is held by the allocator, so no new frame aliases one.
    // Only tables are descended into: nothing can take the walk below level 0.
    if (kind == KIND_TABLE) {
      if (fitsLeaf<F>(level, cur, chunkLast, out, pgsizes)) {
        // The check pass found nothing valid below: the leaf takes the table's place.
        storePte(pteAddr, fmt.makeLeaf(out, level, prot, flags));
        if (undoActive) logUndo(pteAddr | UNDO_REPLACED | (<u64>(level - 1) << 56), pte);
        else releaseTables<F, G>(fmt.tableAddr(pte), level - 1);
      } else mapApply<F, G>(fmt.tableAddr(pte), level - 1, cur, chunkLast, out, prot, flags, pgsizes);
    } else if (kind == KIND_LEAF) {
      // unreachable after the check pass; leave the entry alone
    } else if (fitsLeaf<F>(level, cur, chunkLast, out, pgsizes)) {
      let page = out;
      if (freshLeaves) { page = allocFrames(1); markOwned(page); }
      storePte(pteAddr, fmt.makeLeaf(page, level, prot, flags));
    } else {
      // A new table: a host frame (zeroed by the allocator), or the next guest
      // page offered, zeroed only now: a refused map writes no guest page.
      let sub: u64;
      if (isNested<G>()) {
        sub = load<u64>(poolAt + (<usize>poolUsed << 3));
        poolUsed++;
        memory.fill(ramPtr(tableHpa<G>(sub)), 0, 4096);
      } else sub = allocFrames(1);
      storePte(pteAddr, fmt.makeTable(sub));
      if (undoActive) logUndo(pteAddr, sub);
      mapApply<F, G>(sub, level - 1, cur, chunkLast, out, prot, flags, pgsizes);
    }
    if (chunkLast == last) return;
    out += chunkLast - cur + 1;
    cur = chunkLast + 1;
  }
}

export function buildMap<F>(ctx: usize, iova: u64, last: u64, hpa: u64, prot: u32): u32 {
  return buildMapIn<F, NoStage2>(ctx, iova, last, hpa, prot);
}

function buildMapIn<F, G>(ctx: usize, iova: u64, last: u64, hpa: u64, prot: u32): u32 {
  const levels = ctxLevels(ctx);
  const root = changetype<F>(0).rootAddr(ctxRoot(ctx));
  const pgsizes = ctxPgsizes(ctx);
  const rootHpa = tableHpa<G>(root);
  if (rootHpa == NO_PAGE) return ERR_EFAULT;
  tablesNeeded = 0;
  tablesAdopted = 0;
  tablesFreed = 0;
  slotsReplaced = 0;
  overBudget = false;
  beginVisits();
  firstVisit(rootHpa);
  // The root too must be held, or a new table could be handed its frame (host tables).
  const adoptRoot = !isNested<G>() && !frameIsAllocated(root);
  if (adoptRoot) tablesAdopted++;
  const st = mapCheck<F, G>(root, false, levels - 1, iova, last, hpa, pgsizes);
  if (st != ST_OK) return st;
  if (overBudget) return ERR_ENOMEM;
  if (isNested<G>()) {
    guestTablesNeeded = tablesNeeded;
    if (<u64>tablesNeeded > budget<G>()) return ERR_ENOMEM;
    // The pages offered for new tables must be guest RAM that stage 2 lets the
    // builder write, and none may be a table already on the path or offered twice.
    for (let i: u32 = 0; i < tablesNeeded; i++) {
      const h = tableHpa<G>(load<u64>(poolAt + (<usize>i << 3)));
      if (h == NO_PAGE) return ERR_EFAULT;
      if (!firstVisit(h)) return ERR_EINVAL;
    }
  }
  // A guest map hands back the tables it empties in the space after the pool.
  if (isNested<G>() && tablesFreed > releasedCap) return ERR_ENOMEM;
  if (undoActive && <u64>undoCount + tablesNeeded + slotsReplaced > <u64>UNDO_LOG_ENTRIES) return ERR_ENOMEM;
  if (adoptRoot) claimFrame(root);
  if (tablesAdopted > <u32>adoptRoot) adoptTables<F>(root, levels - 1, iova, last);
  mapApply<F, G>(root, levels - 1, iova, last, hpa, prot, ctxFlags(ctx), pgsizes);
  return ST_OK;
}

function unmapRange<F, G>(table: u64, level: u32, iova: u64, last: u64): u64 {
  const fmt = changetype<F>(0);
  const shift = fmt.levelShift(level);
  const th = tableHpa<G>(table);
  if (th == NO_PAGE) return 0;
  let bytes: u64 = 0;
  let cur = iova;
  while (true) {
    const end = slotLast(cur, shift);
    const chunkLast = end < last ? end : last;
    const whole = chunkLast == end && (cur & ((<u64>1 << shift) - 1)) == 0;
    const pteAddr = th + (<u64>fmt.index(cur, level) << 3);
    const pte = loadPte(pteAddr);
    const kind = fmt.entryKind(pte, level);
    if (kind == KIND_LEAF) {
      if (whole) { storePte(pteAddr, 0); bytes += <u64>1 << shift; }
    } else if (kind == KIND_TABLE) {
      const sub = fmt.tableAddr(pte);
      const sh = tableHpa<G>(sub);
      const first = sh != NO_PAGE && firstVisit(sh);
      if (first) bytes += unmapRange<F, G>(sub, level - 1, cur, chunkLast);
      if (whole && !keepTables) {
        storePte(pteAddr, 0);
        // A guest's page goes back to the guest, a host frame to the allocator.
        if (first) releaseTable<G>(sub);
      }
    }
    if (chunkLast == last) return bytes;
    cur = chunkLast + 1;
  }
}

export function buildUnmap<F>(ctx: usize, iova: u64, last: u64): u64 {
  return buildUnmapIn<F, NoStage2>(ctx, iova, last);
}

function buildUnmapIn<F, G>(ctx: usize, iova: u64, last: u64): u64 {
  const root = changetype<F>(0).rootAddr(ctxRoot(ctx));
  const rootHpa = tableHpa<G>(root);
  unmapStatus = ST_OK;
  if (rootHpa == NO_PAGE) {
    if (isNested<G>()) unmapStatus = ERR_EFAULT;
    return 0;
  }
  // A guest unmap is all or nothing, as its map is: every table it would touch
  // must be guest RAM stage 2 lets it read and write, or nothing is changed.
  if (isNested<G>()) {
    beginVisits();
    firstVisit(rootHpa);
    if (!unmapReachable<F, G>(root, ctxLevels(ctx) - 1, iova, last)) { unmapStatus = ERR_EFAULT; return 0; }
  }
  beginVisits();
  firstVisit(rootHpa);
  return unmapRange<F, G>(root, ctxLevels(ctx) - 1, iova, last);
}

// Whether every table below `table` that an unmap of [iova, last] would visit is reachable.
function unmapReachable<F, G>(table: u64, level: u32, iova: u64, last: u64): bool {
  const fmt = changetype<F>(0);
  const shift = fmt.levelShift(level);
  const th = tableHpa<G>(table);
  let cur = iova;
  while (true) {
    const end = slotLast(cur, shift);
    const chunkLast = end < last ? end : last;
    const pte = loadPte(th + (<u64>fmt.index(cur, level) << 3));
    if (fmt.entryKind(pte, level) == KIND_TABLE) {
      const sh = tableHpa<G>(fmt.tableAddr(pte));
      if (sh == NO_PAGE) return false;
      if (firstVisit(sh) && !unmapReachable<F, G>(fmt.tableAddr(pte), level - 1, cur, chunkLast)) return false;
    }
    if (chunkLast == last) return true;
    cur = chunkLast + 1;
  }
}

// ---- guest tables: a stage-1 context whose stage 2 is its s2 link

// Every guest call starts from nothing, so a call that fails before the
// builder runs (no stage 2, wrong format) reports no tables needed or released.
export function beginGuestCall(): void { guestTablesNeeded = 0; releasedCount = 0; unmapStatus = ST_OK; }

// Maps [iova, last] → gpa.. in the guest table of nested context ctx; new
// tables from `count` GPAs at `pool` (ENOMEM with guestTablesNeeded set when
// short: nothing changed). Returns the status; on success the pages used are
// the first guestTablesNeeded of the pool, and the GPAs of the emptied tables
// a leaf replaced are written at `released` (releasedCount of them; ENOMEM,
// nothing changed, when there would be more than cap).
export function buildGuestMap<F, G>(ctx: usize, s2: usize, iova: u64, last: u64, gpa: u64, prot: u32, pool: usize, count: u32, released: usize, cap: u32): u32 {
  guestS2 = s2;
  poolAt = pool; poolCount = count; poolUsed = 0;
  releasedAt = released; releasedCap = cap; releasedCount = 0;
  guestTablesNeeded = 0;
  return buildMapIn<F, G>(ctx, iova, last, gpa, prot);
}

// Unmaps [iova, last] in the guest table; the GPAs of tables it empties are
// written at `released` (up to cap; releasedCount says how many there were).
export function buildGuestUnmap<F, G>(ctx: usize, s2: usize, iova: u64, last: u64, released: usize, cap: u32): u64 {
  guestS2 = s2;
  releasedAt = released; releasedCap = cap; releasedCount = 0;
  return buildUnmapIn<F, G>(ctx, iova, last);
}

// ---- modes for process memory and pinned maps

export function buildMapFresh<F>(ctx: usize, iova: u64, last: u64, prot: u32): u32 {
  freshLeaves = true;
  const st = buildMap<F>(ctx, iova, last, 0, prot);
  freshLeaves = false;
  return st;
}

export function beginUndo(): void { undoActive = true; undoCount = 0; }
export function endUndo(): void { undoActive = false; }

// The pinned map succeeded: the emptied tables its leaves replaced go back now.
export function commitUndo<F>(): void {
  for (let k: u32 = 0; k < undoCount; k++) {
    const rec = undoLog + (<usize>k << 4);
    const tagged = load<u64>(rec);
    if ((tagged & UNDO_REPLACED) != 0) {
      releaseTables<F, NoStage2>(changetype<F>(0).tableAddr(load<u64>(rec, 8)), <u32>(tagged >> 56) & 0x7f);
    }
  }
  undoActive = false;
}

// Removes the leaves of [iova, last] without freeing any table, then, newest
// first, links back the emptied tables its leaves replaced and removes the
// tables it created: RAM and the allocator end up as they were before the call.
export function rollbackMap<F>(ctx: usize, iova: u64, last: u64): void {
  removeLeaves<F>(ctx, iova, last);
  undoTables();
}

// The first half of a rollback, one range at a time (a map of a list touched
// several): the leaves go, every table stays for the undo log to take back.
export function removeLeaves<F>(ctx: usize, iova: u64, last: u64): void {
  keepTables = true;
  buildUnmap<F>(ctx, iova, last);
  keepTables = false;
}

// The second half: the undo log, newest first.
export function undoTables(): void {
  while (undoCount > 0) {
    undoCount--;
    const rec = undoLog + (<usize>undoCount << 4);
    const tagged = load<u64>(rec);
    if ((tagged & UNDO_REPLACED) != 0) storePte(tagged & ((<u64>1 << 56) - 1), load<u64>(rec, 8));
    else {
      storePte(tagged, 0);
      freeFrames(load<u64>(rec, 8), 1);
    }
  }
  undoActive = false;
}
