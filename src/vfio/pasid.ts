// PASIDs: the host-wide allocator of the 2020 VFIO_IOMMU_PASID_REQUEST
// proposal, seen per container (c.pasid), and per-device PASID tables
// (PASID → stage-1 context id) that the DMA path reads inside the engine.
//
// The rules are here, written once: argument checks, the per-container
// quota, errno. The trees (assembly/pasid) are a data plane behind
// PasidPlane; the naive twin implements the same plane with Maps
// (bench/naive/pasid.ts), so both run this control logic.
import { field, integer, isInstance, perCallOptions, show } from "../args.js";
import * as abi from "../engine/abi.js";
import type { Engine } from "../engine/engine.js";
import { fail } from "../errors.js";

/** An inclusive PASID range, as VFIO_IOMMU_PASID_REQUEST takes it (u32 bounds). */
export interface PasidRange { min: number; max: number }

/** The node pool behind every PASID tree of a host, and the search work done so far. */
export interface PasidStats {
  /** Nodes in the pool (createHost's pasidNodes). */
  nodes: number;
  nodesFree: number;
  /** Nodes read by allocator searches, stores and erases since the host was created (a debug counter). */
  nodeVisits: number;
}

/** What the PASID rules need from a data plane (the engine's trees, or the twin's Maps). */
export interface PasidPlane {
  /** A new owner holding nothing; 0 when no node is left. */
  createOwner(): number;
  /** Frees everything owner holds and the owner itself; returns how many PASIDs. */
  destroyOwner(owner: number): number;
  /** The lowest free PASID in [min, max] (max ≤ PASID_MAX, never 0), now held by owner; or PASID_ALLOC_FULL / PASID_ALLOC_NOMEM with nothing changed. */
  alloc(owner: number, min: number, max: number): number;
  /** Frees what owner holds in [min, max] (max ≤ PASID_MAX); returns how many. */
  free(owner: number, min: number, max: number): number;
  /** The PASIDs owner holds, ascending. */
  held(owner: number): number[];
  /** Whether owner holds pasid. */
  holds(owner: number, pasid: number): boolean;
  /** An empty device table; 0 when no node is left. */
  createTable(): number;
  destroyTable(table: number): void;
  /** Binds pasid to ctxId (non-zero), replacing; abi status (ERR_ENOMEM with nothing changed). */
  tableSet(table: number, pasid: number, ctxId: number): number;
  /** Unbinds pasid; whether it was bound. */
  tableClear(table: number, pasid: number): boolean;
  /** The context bound to pasid, 0 for none. */
  tableLookup(table: number, pasid: number): number;
  /** contexts[i] = lookup(pasids[i]); returns the misses. */
  tableLookupBatch(table: number, pasids: Uint32Array, contexts: Uint32Array): number;
  /** [pasid, ctxId] pairs, ascending. */
  tableEntries(table: number): [number, number][];
  stats(): PasidStats;
}

/** The engine's plane: trees in WASM memory; lists cross through the staging area. */
export class EnginePasidPlane implements PasidPlane {
  constructor(private readonly engine: Engine) {}

  createOwner(): number { return this.engine.wasm.pasidOwnerCreate(); }
  destroyOwner(owner: number): number { return this.engine.wasm.pasidOwnerDestroy(owner); }
  // u32 results come back from WASM as i32: >>> 0 reads them unsigned.
  alloc(owner: number, min: number, max: number): number { return this.engine.wasm.pasidAlloc(owner, min, max) >>> 0; }
  free(owner: number, min: number, max: number): number { return this.engine.wasm.pasidFree(owner, min, max); }

  held(owner: number): number[] {
    const e = this.engine;
    const cap = e.stagingSize >>> 2;
    const out: number[] = [];
    for (let from = 0; from <= abi.PASID_MAX;) {
      const n = e.wasm.pasidHeld(owner, from, e.staging, cap);
      const view = new Uint32Array(e.buffer, e.staging, n);
      for (const pasid of view) out.push(pasid);
      if (n < cap) break;
      from = view[n - 1] + 1;
    }
    return out;
  }

  holds(owner: number, pasid: number): boolean {
    const e = this.engine;
    // The first held PASID from pasid on, if it is pasid itself.
    return e.wasm.pasidHeld(owner, pasid, e.staging, 1) === 1 && new Uint32Array(e.buffer, e.staging, 1)[0] === pasid;
  }

  createTable(): number { return this.engine.wasm.pasidTableCreate(); }
  destroyTable(table: number): void { this.engine.wasm.pasidTableDestroy(table); }
  tableSet(table: number, pasid: number, ctxId: number): number { return this.engine.wasm.pasidTableSet(table, pasid, ctxId); }
  tableClear(table: number, pasid: number): boolean { return this.engine.wasm.pasidTableClear(table, pasid) !== 0; }
  tableLookup(table: number, pasid: number): number { return this.engine.wasm.pasidTableLookup(table, pasid) >>> 0; }

  tableLookupBatch(table: number, pasids: Uint32Array, contexts: Uint32Array): number {
    const e = this.engine;
    const inAt = e.isDirect(pasids), outAt = e.isDirect(contexts);
    // Arrays on engine memory (allocBuffer) are read and written in place.
    if (inAt >= 0 && outAt >= 0) return e.wasm.pasidTableLookupBatch(table, inAt, outAt, pasids.length);
    // Otherwise through the staging area: PASIDs in its first half, contexts in the second.
    const chunk = e.stagingSize >>> 3;
    let misses = 0;
    for (let done = 0; done < pasids.length; done += chunk) {
      const n = Math.min(chunk, pasids.length - done);
      const stagedIn = new Uint32Array(e.buffer, e.staging, n);
      const stagedOut = new Uint32Array(e.buffer, e.staging + chunk * 4, n);
      stagedIn.set(pasids.subarray(done, done + n));
      misses += e.wasm.pasidTableLookupBatch(table, stagedIn.byteOffset, stagedOut.byteOffset, n);
      contexts.set(stagedOut, done);
    }
    return misses;
  }

  tableEntries(table: number): [number, number][] {
    const out: [number, number][] = [];
    for (let pasid = this.engine.wasm.pasidTableNext(table, 0) >>> 0; pasid !== abi.XA_NONE; pasid = this.engine.wasm.pasidTableNext(table, pasid + 1) >>> 0) {
      out.push([pasid, this.tableLookup(table, pasid)]);
    }
    return out;
  }

  stats(): PasidStats {
    const w = this.engine.wasm;
    return { nodes: w.pasidNodesTotal(), nodesFree: w.pasidNodesFree(), nodeVisits: Number(w.pasidNodeVisits()) };
  }
}

const isU32 = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;

const RANGE_KEYS = ["min", "max"] as const;

/** The range of a PASID request: integers in 0..0xFFFFFFFF with min ≤ max, else EINVAL. */
function checkRange(range: PasidRange, what: string): { min: number; max: number } {
  if (range === undefined) fail("EINVAL", `pasid ${what}: give { min, max }`);
  const o = perCallOptions(range, `pasid ${what} range`, RANGE_KEYS);
  const min = field(o, "min", `pasid ${what} range`), max = field(o, "max", `pasid ${what} range`);
  if (!isU32(min) || !isU32(max)) fail("EINVAL", `pasid ${what}: min and max must be integers in 0..0xffffffff, got ${show(min)}, ${show(max)}`);
  if (min > max) fail("EINVAL", `pasid ${what}: min ${min} is above max ${max}`);
  return { min, max };
}

/** A single PASID that can be bound (1..0xFFFFF; 0 means "no PASID"). */
function checkPasid(pasid: number): number {
  if (!Number.isInteger(pasid) || pasid < 1 || pasid > abi.PASID_MAX) fail("EINVAL", `pasid must be an integer in 1..0xfffff, got ${show(pasid)}`);
  return pasid;
}

/**
 * The host's PASID space: PASIDs are host-wide, so every container
 * allocates from this one; and the factory of device PASID tables.
 */
export class PasidSpace {
  /** @internal */
  constructor(private readonly plane: PasidPlane) {}

  /** @internal A container's view, holding at most `quota` PASIDs (default 1000). */
  open(quota: number | undefined): ContainerPasids {
    const q = quota ?? DEFAULT_PASID_QUOTA;
    if (!Number.isInteger(q) || q < 0 || q > abi.PASID_MAX) fail("EINVAL", `pasidQuota must be an integer in 0..${abi.PASID_MAX}, got ${show(q)}`);
    return new ContainerPasids(this.plane, q);
  }

  /** An empty PASID table for one device (PASID → stage-1 context id). ENOMEM when the node pool is empty. */
  createTable(): PasidTable {
    const table = this.plane.createTable();
    if (table === 0) fail("ENOMEM", "no PASID tree node left for a new PASID table (createHost pasidNodes)");
    return new PasidTable(this.plane, table);
  }

  stats(): PasidStats { return this.plane.stats(); }
}

/** The 2020 proposal's default per-owner quota. */
export const DEFAULT_PASID_QUOTA = 1000;

/**
 * A container's PASIDs (`c.pasid`): VFIO_IOMMU_PASID_REQUEST's ALLOC and
 * FREE. The container frees what it still holds when it is closed.
 */
export class ContainerPasids {
  /** The plane's owner: made at the first allocation, dropped when nothing is held. */
  private owner = 0;
  private heldCount = 0;
  private closed = false;
  /** @internal Runs before a FREE with its range: the container drops the freed PASIDs' bindings first. */
  beforeFree: (min: number, max: number) => void = () => {};

  /** @internal */
  constructor(private readonly plane: PasidPlane, readonly quota: number) {}

  /** PASIDs held now. */
  get count(): number { return this.heldCount; }

  private live(): void {
    if (this.closed) fail("ENODEV", "container is closed");
  }

  /**
   * ALLOC: the lowest free PASID in [min, max] host-wide (never 0; max is
   * clamped to 0xFFFFF). EINVAL for bad bounds or min > max; ENOSPC when the
   * quota is used up or nothing in the range is free; ENOMEM when the node
   * pool cannot record it. Nothing changes on error.
   */
  alloc(range: PasidRange): number {
    this.live();
    const { min, max } = checkRange(range, "alloc");
    if (this.heldCount >= this.quota) fail("ENOSPC", `pasid alloc: the container's quota of ${this.quota} PASIDs is used up`);
    const first = this.owner === 0;
    if (first) {
      this.owner = this.plane.createOwner();
      if (this.owner === 0) fail("ENOMEM", "pasid alloc: no PASID tree node left (createHost pasidNodes)");
    }
    const pasid = this.plane.alloc(this.owner, min, Math.min(max, abi.PASID_MAX));
    if (pasid === abi.PASID_ALLOC_FULL || pasid === abi.PASID_ALLOC_NOMEM) {
      if (first) this.dropOwner();
      if (pasid === abi.PASID_ALLOC_NOMEM) fail("ENOMEM", "pasid alloc: no PASID tree node left (createHost pasidNodes)");
      fail("ENOSPC", `pasid alloc: no free PASID in [${min}, ${max}]`);
    }
    this.heldCount++;
    return pasid;
  }

  /**
   * FREE: frees the PASIDs in [min, max] that this container allocated (others
   * are left alone), unbinding any stage-1 table bound to them; returns how
   * many. Costs O(PASIDs held in the range), whatever its width.
   */
  free(range: PasidRange): number {
    this.live();
    const { min, max } = checkRange(range, "free");
    if (this.owner === 0 || min > abi.PASID_MAX) return 0;
    this.beforeFree(min, max);
    const freed = this.plane.free(this.owner, min, Math.min(max, abi.PASID_MAX));
    this.heldCount -= freed;
    if (this.heldCount === 0) this.dropOwner();
    return freed;
  }

  /** Whether this container holds pasid (a live container; O(tree depth), not O(held)). */
  holds(pasid: number): boolean {
    this.live();
    integer(pasid, "pasid", 0, 0xffffffff);
    return this.owner !== 0 && this.plane.holds(this.owner, pasid);
  }

  /** The PASIDs this container holds, ascending. */
  held(): number[] {
    this.live();
    return this.owner === 0 ? [] : this.plane.held(this.owner);
  }

  private dropOwner(): void {
    this.plane.destroyOwner(this.owner);
    this.owner = 0;
  }

  /** @internal The container is closing: everything held goes back to the host. Returns how many. */
  release(): number {
    if (this.closed) return 0;
    const freed = this.owner === 0 ? 0 : this.plane.destroyOwner(this.owner);
    this.owner = 0;
    this.heldCount = 0;
    this.closed = true;
    return freed;
  }
}

/**
 * One device's PASID table: PASID → stage-1 context id (a Domain's or
 * PageTable's id), read by the engine on the DMA path. attach refuses a bound
 * PASID (EBUSY, as a PASID attach does); replace rebinds.
 */
export class PasidTable {
  private destroyed = false;

  /** @internal */
  constructor(private readonly plane: PasidPlane, readonly id: number) {}

  private live(): number {
    if (this.destroyed) fail("ENODEV", "PASID table is destroyed");
    return this.id;
  }

  private static checkContext(contextId: number): number {
    if (!Number.isInteger(contextId) || contextId < 1 || contextId >= abi.MAX_CONTEXTS) {
      fail("EINVAL", `context id must be an integer in 1..${abi.MAX_CONTEXTS - 1}, got ${show(contextId)}`);
    }
    return contextId;
  }

  private store(pasid: number, contextId: number): void {
    if (this.plane.tableSet(this.id, pasid, contextId) === abi.ERR_ENOMEM) fail("ENOMEM", "no PASID tree node left (createHost pasidNodes)");
  }

  /** Binds pasid to a stage-1 context: EBUSY if it is bound already, ENOMEM when the node pool is empty. */
  attach(pasid: number, contextId: number): void {
    const table = this.live();
    checkPasid(pasid);
    PasidTable.checkContext(contextId);
    if (this.plane.tableLookup(table, pasid) !== 0) fail("EBUSY", `PASID ${pasid} is already bound`);
    this.store(pasid, contextId);
  }

  /** Binds pasid to a stage-1 context whether or not it was bound. */
  replace(pasid: number, contextId: number): void {
    this.live();
    checkPasid(pasid);
    PasidTable.checkContext(contextId);
    this.store(pasid, contextId);
  }

  /** Unbinds pasid; whether it was bound. */
  detach(pasid: number): boolean {
    const table = this.live();
    checkPasid(pasid);
    return this.plane.tableClear(table, pasid);
  }

  /** The stage-1 context bound to pasid, or undefined. */
  lookup(pasid: number): number | undefined {
    const table = this.live();
    checkPasid(pasid);
    const ctx = this.plane.tableLookup(table, pasid);
    return ctx === 0 ? undefined : ctx;
  }

  /**
   * contexts[i] = the context bound to pasids[i], 0 for none (any u32 may be
   * asked: 0 and values above 0xFFFFF are never bound). Returns the misses.
   * Arrays on engine memory (host.allocBuffer) are used in place.
   */
  lookupBatch(pasids: Uint32Array, contexts: Uint32Array): number {
    const table = this.live();
    if (!ArrayBuffer.isView(pasids) || !isInstance(pasids, Uint32Array) || !ArrayBuffer.isView(contexts) || !isInstance(contexts, Uint32Array)
      || contexts.length < pasids.length) {
      fail("EINVAL", "lookupBatch needs two Uint32Arrays, the second at least as long as the first");
    }
    return this.plane.tableLookupBatch(table, pasids, contexts);
  }

  /** [pasid, contextId] pairs, ascending. */
  entries(): [number, number][] { return this.plane.tableEntries(this.live()); }

  /** Frees the table and its nodes. */
  destroy(): void {
    if (this.destroyed) return;
    this.plane.destroyTable(this.id);
    this.destroyed = true;
  }
}
