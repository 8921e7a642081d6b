// The io-pgtable operations of the twin, written once for every format.
//
// Each call reaches a table at most once: a table met twice (aliased, or in
// a cycle) makes map refuse with EINVAL before anything changes, and unmap
// neither descends into nor frees it again; the root is never freed.
//
// map is all or nothing: a check pass finds any present leaf (EEXIST), table
// outside RAM (EFAULT) or aliasing (EINVAL) and counts the tables it would
// allocate plus the existing tables the frame allocator does not hold (ENOMEM
// beyond the free frames; counting of new tables stops there). Then those
// existing tables are adopted and an apply pass writes, using the largest
// page that fits and descending into existing tables. Where a leaf fits over
// a table with no valid entry below it, the leaf replaces the table and the
// emptied tables are given back (lower ones first): a table still holding a
// leaf is EEXIST. Tables are allocated and freed in the engine's order, so
// HPAs match.
//
// unmap never splits a leaf: a leaf only partly inside the range stays and is
// not counted. A table whose whole span lies inside the range is unlinked and,
// on its first visit and if the frame allocator owns it, freed.
//
// Two modes serve process memory and pinned maps: mapFresh backs every 4 KiB
// leaf with a fresh frame the process owns (counted like a table by the check
// pass, allocated right after the tables above it); a map with an undo log
// records every table it creates, so rollback() can remove the leaves of a
// failed pinned map and then those tables, newest first. A pinned map only
// unlinks the emptied tables its leaves replace (logging the slot, so a
// rollback links them back) and gives them back once it succeeds (commit).
//
// Guest tables (guestMap / guestUnmap) are the same passes over a table whose
// addresses are GPAs: every table page is found through stage 2 (which must
// let the builder read and write it), new tables are the pages the guest
// offered, in order (each checked the same way, and not already a table),
// and emptied tables are handed back instead of freed. Visits are counted by
// the page's HPA, so two GPAs of one page are one table.
import * as abi from "../../src/engine/abi.js";
import type { Context } from "./context.js";
import { walk } from "./walker.js";
import { KIND_LEAF, KIND_TABLE, type Format } from "./formats.js";
import type { FrameAllocator } from "./frames.js";
import type { FramePins } from "./pins.js";
import type { Ram } from "./ram.js";

/** Tables one pinned map may create (the engine's undo log size). */
export const UNDO_LOG_ENTRIES = abi.UNDO_LOG_ENTRIES;

/**
 * What a pinned map changed: a table it created (where it was linked, and its
 * frame), or a slot where a leaf replaced an emptied table (the old entry and
 * the level of that table).
 */
export type UndoLog = ({ pteAddr: bigint; table: bigint } | { pteAddr: bigint; old: bigint; level: number })[];

/**
 * The apply pass met something the check pass did not see. The check pass
 * refuses aliased and cyclic tables, so this is the twin's own assertion
 * failing: a bug, never an expected outcome.
 */
export class BuilderDivergence extends Error {
  constructor(message: string) {
    super(`naive builder: ${message}`);
    this.name = "BuilderDivergence";
  }
}

const slotLast = (iova: bigint, shift: number): bigint => iova | ((1n << BigInt(shift)) - 1n);

function fitsLeaf(fmt: Format, level: number, iova: bigint, chunkLast: bigint, hpa: bigint, pgsizes: bigint, fresh: boolean): boolean {
  const shift = fmt.levelShift(level);
  if (fresh && level !== 0) return false;
  if (((fmt.leafLevels() >> level) & 1) === 0 || ((pgsizes >> BigInt(shift)) & 1n) === 0n) return false;
  const mask = (1n << BigInt(shift)) - 1n;
  return (iova & mask) === 0n && chunkLast === (iova | mask) && (hpa & mask) === 0n;
}

interface MapCheck { visited: Set<bigint>; needed: number; adopted: number; overBudget: boolean; fresh: boolean; freed: number; replaced: number }

/** The most new tables one guest map may count (the engine's bound). */
const GUEST_TABLES_MAX = 1 << 20;
/** Pages a guest map can be offered, and emptied tables an unmap reports: the engine's staging area, 8 bytes each. */
export const GUEST_LIST_MAX = abi.STAGING_SIZE / 8;

/**
 * Where a builder call finds its tables: host frames (the address is the HPA)
 * or guest pages (a GPA, through stage 2), and where new tables come from.
 */
interface TableSpace {
  /** The HPA of a table page, or undefined when it is not a usable page of RAM. */
  hpa(table: bigint): bigint | undefined;
  guest?: { pool: readonly bigint[]; used: number; released: bigint[] };
}

export interface GuestMapResult { status: number; needed: number; used: number; released: bigint[] }

export class Builder {
  private readonly host: TableSpace = { hpa: (table) => (this.ram.inRam(table, 4096n) ? table : undefined) };
  private space: TableSpace = this.host;

  constructor(private readonly ram: Ram, readonly frames: FrameAllocator, private readonly pins: FramePins) {}

  /** A guest table's pages, through stage 2 s2 (read and write allowed, no A/D set). */
  private guestSpace(s2: Context, pool: readonly bigint[]): TableSpace {
    return {
      hpa: (table) => {
        const r = walk(this.ram, s2, table, abi.ACCESS_READ | abi.ACCESS_WRITE);
        if (!("hpa" in r)) return undefined;
        const page = r.hpa & ~0xfffn;
        return this.ram.inRam(page, 4096n) ? page : undefined;
      },
      guest: { pool, used: 0, released: [] },
    };
  }

  /** Runs fn with tables in the given space. */
  private within<T>(space: TableSpace, fn: () => T): T {
    this.space = space;
    try { return fn(); } finally { this.space = this.host; }
  }

  /**
   * Maps [iova, last] → gpa.. in a guest table (ctx, over stage 2 s2), new
   * tables from the pool in order. ENOMEM with `needed` when the pool is
   * short (nothing changed); on success `used` pages of the pool were taken.
   */
  guestMap(ctx: Context, s2: Context, iova: bigint, last: bigint, gpa: bigint, prot: number, pool: readonly bigint[]): GuestMapResult {
    if (pool.length > GUEST_LIST_MAX) return { status: abi.ERR_ENOMEM, needed: pool.length, used: 0, released: [] };
    const space = this.guestSpace(s2, pool);
    let needed = 0;
    const status = this.within(space, () => this.map(ctx, iova, last, gpa, prot, { onCounted: (n) => { needed = n; } }));
    const ok = status === abi.ST_OK;
    return { status, needed, used: ok ? needed : 0, released: ok ? space.guest!.released : [] };
  }

  /** Unmaps [iova, last] in a guest table; the GPAs of the tables it emptied, in the order they were unlinked. */
  guestUnmap(ctx: Context, s2: Context, iova: bigint, last: bigint): { bytes: bigint; released: bigint[]; status: number } {
    const space = this.guestSpace(s2, []);
    // All or nothing, as the engine: every table the unmap would touch must be reachable first.
    const reachable = this.within(space, () => this.unmapReachable(ctx, iova, last));
    if (!reachable) return { bytes: 0n, released: [], status: abi.ERR_EFAULT };
    const bytes = this.within(space, () => this.unmap(ctx, iova, last));
    return { bytes, released: space.guest!.released.slice(0, GUEST_LIST_MAX), status: abi.ST_OK };
  }

  private unmapReachable(ctx: Context, iova: bigint, last: bigint): boolean {
    const fmt = ctx.fmt;
    if (!fmt) return true;
    const root = fmt.rootAddr(ctx.root);
    const rootHpa = this.space.hpa(root);
    if (rootHpa === undefined) return false;
    const visited = new Set([rootHpa]);
    const reach = (table: bigint, level: number, from: bigint, to: bigint): boolean => {
      const shift = fmt.levelShift(level);
      const tableHpa = this.space.hpa(table)!;
      for (let cur = from; ;) {
        const end = slotLast(cur, shift);
        const chunkLast = end < to ? end : to;
        const pte = this.ram.loadPte(tableHpa + (fmt.index(cur, level) << 3n));
        if (fmt.entryKind(pte, level) === KIND_TABLE) {
          const sub = fmt.tableAddr(pte);
          const subHpa = this.space.hpa(sub);
          if (subHpa === undefined) return false;
          if (!visited.has(subHpa)) {
            visited.add(subHpa);
            if (!reach(sub, level - 1, cur, chunkLast)) return false;
          }
        }
        if (chunkLast === to) return true;
        cur = chunkLast + 1n;
      }
    };
    return reach(root, ctx.levels - 1, iova, last);
  }

  /** mmap: every page of [iova, last] gets a fresh zeroed 4 KiB frame the process owns. */
  mapFresh(ctx: Context, iova: bigint, last: bigint, prot: number): number {
    return this.map(ctx, iova, last, 0n, prot, { fresh: true });
  }

  /**
   * ST_OK or ERR_EEXIST / ERR_EFAULT / ERR_EINVAL / ERR_ENOMEM, with nothing written on an error.
   * With an undo log, every table created is appended to it (ENOMEM when it would overflow).
   */
  map(ctx: Context, iova: bigint, last: bigint, hpa: bigint, prot: number,
    mode: { fresh?: boolean; undo?: UndoLog; onCounted?: (needed: number) => void } = {}): number {
    const fmt = ctx.fmt;
    if (!fmt) return abi.ERR_EINVAL;
    const root = fmt.rootAddr(ctx.root);
    const rootHpa = this.space.hpa(root);
    if (rootHpa === undefined) return abi.ERR_EFAULT;
    const guest = this.space.guest;
    // The root too must be held by the allocator, or a new table could be handed its frame (host tables).
    const adoptRoot = !guest && !this.frames.isAllocated(root);
    const fresh = mode.fresh === true;
    const state: MapCheck = { visited: new Set([rootHpa]), needed: 0, adopted: adoptRoot ? 1 : 0, overBudget: false, fresh, freed: 0, replaced: 0 };
    const st = this.check(fmt, root, false, ctx.levels - 1, iova, last, hpa, ctx.pgsizes, state);
    if (st !== abi.ST_OK) return st;
    if (state.overBudget) return abi.ERR_ENOMEM;
    if (guest) {
      mode.onCounted?.(state.needed);
      if (state.needed > guest.pool.length) return abi.ERR_ENOMEM;
      // The offered pages: guest RAM stage 2 lets the builder write, none a table already or offered twice.
      for (const page of guest.pool.slice(0, state.needed)) {
        const h = this.space.hpa(page);
        if (h === undefined) return abi.ERR_EFAULT;
        if (state.visited.has(h)) return abi.ERR_EINVAL;
        state.visited.add(h);
      }
    }
    // A guest map lists the tables it empties after the pool, in the engine's staging area.
    if (guest && state.freed > GUEST_LIST_MAX - guest.pool.length) return abi.ERR_ENOMEM;
    if (mode.undo && mode.undo.length + state.needed + state.replaced > UNDO_LOG_ENTRIES) return abi.ERR_ENOMEM;
    if (adoptRoot) this.frames.claim(root);
    if (state.adopted > (adoptRoot ? 1 : 0)) this.adopt(fmt, root, ctx.levels - 1, iova, last);
    this.apply(fmt, root, ctx.levels - 1, iova, last, hpa, prot, ctx.flags, ctx.pgsizes, fresh, mode.undo);
    return abi.ST_OK;
  }

  /**
   * Undoes a pinned map that failed: removes the leaves of [iova, last]
   * (tables stay linked), then unlinks and frees the logged tables, newest
   * first, so RAM and the allocator are as before the map.
   */
  rollback(ctx: Context, iova: bigint, last: bigint, undo: UndoLog): void {
    this.unmap(ctx, iova, last, true);
    this.undoTables(undo);
  }

  /** The undo log of a failed map whose leaves are gone (unmap keeping tables), newest first. */
  undoTables(undo: UndoLog): void {
    for (let k = undo.length - 1; k >= 0; k--) {
      const rec = undo[k];
      if ("old" in rec) {
        this.ram.storePte(rec.pteAddr, rec.old);
      } else {
        this.ram.storePte(rec.pteAddr, 0n);
        this.frames.release(rec.table, 1);
      }
    }
    undo.length = 0;
  }

  /** A pinned map succeeded: the emptied tables its leaves replaced are given back. */
  commit(ctx: Context, undo: UndoLog): void {
    const fmt = ctx.fmt!;
    for (const rec of undo) if ("old" in rec) this.releaseTables(fmt, fmt.tableAddr(rec.old), rec.level);
    undo.length = 0;
  }

  /** A table on a map's path: a usable page (EFAULT), met for the first time in this call (EINVAL). */
  private enterTable(sub: bigint, state: MapCheck): number {
    const subHpa = this.space.hpa(sub);
    if (subHpa === undefined) return abi.ERR_EFAULT;
    if (state.visited.has(subHpa)) return abi.ERR_EINVAL;
    state.visited.add(subHpa);
    return abi.ST_OK;
  }

  /** ST_OK when nothing below `table` is a leaf (EEXIST); counts every table met, each a usable page (EFAULT) met once (EINVAL). */
  private emptyBelow(fmt: Format, table: bigint, level: number, state: MapCheck): number {
    const tableHpa = this.space.hpa(table)!;
    state.freed++;
    for (let i = 0n; i < 512n; i++) {
      const pte = this.ram.loadPte(tableHpa + (i << 3n));
      const kind = fmt.entryKind(pte, level);
      if (kind === KIND_LEAF) return abi.ERR_EEXIST;
      if (kind === KIND_TABLE) {
        const sub = fmt.tableAddr(pte);
        const entered = this.enterTable(sub, state);
        if (entered !== abi.ST_OK) return entered;
        const st = this.emptyBelow(fmt, sub, level - 1, state);
        if (st !== abi.ST_OK) return st;
      }
    }
    return abi.ST_OK;
  }

  /** Gives back an emptied table and the tables below it, the lower ones first. */
  private releaseTables(fmt: Format, table: bigint, level: number): void {
    const tableHpa = this.space.hpa(table);
    if (tableHpa === undefined) return;
    for (let i = 0n; i < 512n; i++) {
      const pte = this.ram.loadPte(tableHpa + (i << 3n));
      if (fmt.entryKind(pte, level) === KIND_TABLE) this.releaseTables(fmt, fmt.tableAddr(pte), level - 1);
    }
    this.releaseTable(table);
  }

  /** A guest's page goes back to the guest; a host frame the allocator holds, to the allocator. */
  private releaseTable(table: bigint): void {
    if (this.space.guest) this.space.guest.released.push(table);
    else if (this.frames.isAllocated(table)) this.frames.release(table, 1);
  }

  // virt: the table does not exist yet, everything below it is new.
  private check(fmt: Format, table: bigint, virt: boolean, level: number, iova: bigint, last: bigint, hpa: bigint,
    pgsizes: bigint, state: MapCheck): number {
    const shift = fmt.levelShift(level);
    let cur = iova, out = hpa;
    for (;;) {
      const end = slotLast(cur, shift);
      const chunkLast = end < last ? end : last;
      const pte = virt ? 0n : this.ram.loadPte(this.space.hpa(table)! + (fmt.index(cur, level) << 3n));
      const kind = virt ? -1 : fmt.entryKind(pte, level);
      if (kind === KIND_LEAF) return abi.ERR_EEXIST;
      if (kind === KIND_TABLE) {
        const sub = fmt.tableAddr(pte);
        const entered = this.enterTable(sub, state);
        if (entered !== abi.ST_OK) return entered;
        if (fitsLeaf(fmt, level, cur, chunkLast, out, pgsizes, state.fresh)) {
          // The leaf replaces the table if nothing below it is valid.
          const st = this.emptyBelow(fmt, sub, level - 1, state);
          if (st !== abi.ST_OK) return st;
          state.replaced++;
        } else {
          if (!this.space.guest && !this.frames.isAllocated(sub)) state.adopted++;
          const st = this.check(fmt, sub, false, level - 1, cur, chunkLast, out, pgsizes, state);
          if (st !== abi.ST_OK) return st;
        }
      } else if (!state.overBudget) {
        if (!fitsLeaf(fmt, level, cur, chunkLast, out, pgsizes, state.fresh)) {
          state.needed++;
          // A guest build counts every table (the guest offers that many), up to a bound.
          if (this.space.guest ? state.needed > GUEST_TABLES_MAX : state.needed + state.adopted > this.frames.free) state.overBudget = true;
          else this.check(fmt, 0n, true, level - 1, cur, chunkLast, out, pgsizes, state);
        } else if (state.fresh) {
          // The page's own frame.
          state.needed++;
          if (state.needed + state.adopted > this.frames.free) state.overBudget = true;
        }
      }
      if (state.overBudget && virt) return abi.ST_OK;
      if (chunkLast === last) return abi.ST_OK;
      out += chunkLast - cur + 1n;
      cur = chunkLast + 1n;
    }
  }

  /** Hands the range's existing tables that the allocator does not hold to it. */
  private adopt(fmt: Format, table: bigint, level: number, iova: bigint, last: bigint): void {
    const shift = fmt.levelShift(level);
    let cur = iova;
    for (;;) {
      const end = slotLast(cur, shift);
      const chunkLast = end < last ? end : last;
      const pte = this.ram.loadPte(table + (fmt.index(cur, level) << 3n));
      if (fmt.entryKind(pte, level) === KIND_TABLE) {
        const sub = fmt.tableAddr(pte);
        if (!this.frames.isAllocated(sub)) this.frames.claim(sub);
        this.adopt(fmt, sub, level - 1, cur, chunkLast);
      }
      if (chunkLast === last) return;
      cur = chunkLast + 1n;
    }
  }

  private apply(fmt: Format, table: bigint, level: number, iova: bigint, last: bigint, hpa: bigint, prot: number, flags: number, pgsizes: bigint,
    fresh: boolean, undo: UndoLog | undefined): void {
    if (level < 0) throw new BuilderDivergence("a present entry below the leaf level");
    const tableHpa = this.space.hpa(table);
    if (tableHpa === undefined) throw new BuilderDivergence(`table 0x${table.toString(16)} is not a usable page`);
    const shift = fmt.levelShift(level);
    let cur = iova, out = hpa;
    for (;;) {
      const end = slotLast(cur, shift);
      const chunkLast = end < last ? end : last;
      const pteAddr = tableHpa + (fmt.index(cur, level) << 3n);
      const pte = this.ram.loadPte(pteAddr);
      if (fmt.entryKind(pte, level) === KIND_TABLE) {
        if (fitsLeaf(fmt, level, cur, chunkLast, out, pgsizes, fresh)) {
          // The check pass found nothing valid below: the leaf takes the table's place.
          this.ram.storePte(pteAddr, fmt.makeLeaf(out, level, prot, flags));
          if (undo) undo.push({ pteAddr, old: pte, level: level - 1 });
          else this.releaseTables(fmt, fmt.tableAddr(pte), level - 1);
        } else this.apply(fmt, fmt.tableAddr(pte), level - 1, cur, chunkLast, out, prot, flags, pgsizes, fresh, undo);
      } else if (fmt.entryKind(pte, level) === KIND_LEAF) {
        throw new BuilderDivergence("a leaf the check pass did not see");
      } else if (fitsLeaf(fmt, level, cur, chunkLast, out, pgsizes, fresh)) {
        let page = out;
        if (fresh) {
          const frame = this.frames.alloc(1);
          if (frame === undefined) throw new BuilderDivergence("out of frames for a fresh page after the check pass counted enough");
          this.pins.markOwned(frame);
          page = frame;
        }
        this.ram.storePte(pteAddr, fmt.makeLeaf(page, level, prot, flags));
      } else {
        // A new table: a host frame (zeroed), or the next page the guest offered, zeroed only now.
        const guest = this.space.guest;
        const sub = guest ? guest.pool[guest.used++] : this.frames.alloc(1);
        if (sub === undefined) throw new BuilderDivergence("out of frames after the check pass counted enough");
        if (guest) this.ram.zero(this.space.hpa(sub)!, 4096);
        this.ram.storePte(pteAddr, fmt.makeTable(sub));
        undo?.push({ pteAddr, table: sub });
        this.apply(fmt, sub, level - 1, cur, chunkLast, out, prot, flags, pgsizes, fresh, undo);
      }
      if (chunkLast === last) return;
      out += chunkLast - cur + 1n;
      cur = chunkLast + 1n;
    }
  }

  /** Bytes of leaves wholly inside [iova, last] that were removed; keepTables leaves every table linked. */
  unmap(ctx: Context, iova: bigint, last: bigint, keepTables = false): bigint {
    const fmt = ctx.fmt;
    if (!fmt) return 0n;
    const root = fmt.rootAddr(ctx.root);
    const rootHpa = this.space.hpa(root);
    if (rootHpa === undefined) return 0n;
    return this.unmapRange(fmt, root, ctx.levels - 1, iova, last, new Set([rootHpa]), keepTables);
  }

  private unmapRange(fmt: Format, table: bigint, level: number, iova: bigint, last: bigint, visited: Set<bigint>, keepTables: boolean): bigint {
    const shift = fmt.levelShift(level);
    const tableHpa = this.space.hpa(table);
    if (tableHpa === undefined) return 0n;
    let bytes = 0n;
    let cur = iova;
    for (;;) {
      const end = slotLast(cur, shift);
      const chunkLast = end < last ? end : last;
      const whole = chunkLast === end && (cur & ((1n << BigInt(shift)) - 1n)) === 0n;
      const pteAddr = tableHpa + (fmt.index(cur, level) << 3n);
      const pte = this.ram.loadPte(pteAddr);
      const kind = fmt.entryKind(pte, level);
      if (kind === KIND_LEAF) {
        if (whole) { this.ram.storePte(pteAddr, 0n); bytes += 1n << BigInt(shift); }
      } else if (kind === KIND_TABLE) {
        const sub = fmt.tableAddr(pte);
        const subHpa = this.space.hpa(sub);
        const first = subHpa !== undefined && !visited.has(subHpa);
        if (first) {
          visited.add(subHpa);
          bytes += this.unmapRange(fmt, sub, level - 1, cur, chunkLast, visited, keepTables);
        }
        if (whole && !keepTables) {
          this.ram.storePte(pteAddr, 0n);
          if (first) this.releaseTable(sub);
        }
      }
      if (chunkLast === last) return bytes;
      cur = chunkLast + 1n;
    }
  }
}
