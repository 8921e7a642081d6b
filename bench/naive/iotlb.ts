// The twin's IOTLB: a Map from set index to that set's ways, each way an
// entry tagged (page number, page size, context id, PASID) or empty. The set
// index, the probe order (the context's cached page sizes, smallest first,
// ways in order), the fill (the way holding the same tag, else the first
// empty way, else the set's FIFO victim) and the counters are the engine's,
// so hits, misses and evictions agree.
//
// The engine flushes a context, a PASID or everything by epochs; here the
// matching entries are simply deleted. Its PASID flush epochs live in
// PASID_FLUSH_SLOTS hashed slots, so flushing one (context, PASID) also kills
// the entries of every pair hashing to the same slot; that is mirrored.
import * as abi from "../../src/engine/abi.js";
import type { Contexts } from "./context.js";

export interface TlbEntry {
  vpn: bigint;
  ctxId: number;
  pasid: number;
  sizeLog: number;
  /** Output page base. */
  outPage: bigint;
  perms: number;
}

export interface IotlbCounters { hits: number; misses: number; evictions: number; invalidations: number; walks: number }

export function pasidSlot(ctxId: number, pasid: number): number {
  return ((Math.imul(ctxId, 0x9e3779b1) ^ Math.imul(pasid, 0x85ebca77)) >>> 20) & (abi.PASID_FLUSH_SLOTS - 1);
}

function sizeLogsOf(mask: bigint): number[] {
  const logs: number[] = [];
  for (let s = 0; s < 64; s++) if ((mask >> BigInt(s)) & 1n) logs.push(s);
  return logs;
}

export class NaiveIotlb {
  readonly setsLog: number;
  readonly counters: IotlbCounters = { hits: 0, misses: 0, evictions: 0, invalidations: 0, walks: 0 };
  private readonly setList = new Map<number, (TlbEntry | undefined)[]>();
  private readonly victims = new Map<number, number>();

  constructor(readonly sets: number, readonly ways: number, private readonly contexts: Contexts) {
    this.setsLog = Math.log2(sets);
  }

  private setOf(vpn: bigint, ctxId: number, sizeLog: number): number {
    const lo = Number(vpn & 0xffffffffn);
    const hi = Number((vpn >> BigInt(this.setsLog)) & 0xffffffffn);
    return ((lo ^ hi ^ (ctxId << 4) ^ sizeLog) & (this.sets - 1)) >>> 0;
  }

  private waysOf(set: number): (TlbEntry | undefined)[] {
    let ways = this.setList.get(set);
    if (!ways) { ways = new Array<TlbEntry | undefined>(this.ways).fill(undefined); this.setList.set(set, ways); }
    return ways;
  }

  /** The first entry covering iova for (ctxId, pasid), probing cached page sizes smallest first. */
  lookup(ctxId: number, pasid: number, iova: bigint): TlbEntry | undefined {
    for (const sizeLog of sizeLogsOf(this.contexts.get(ctxId).tlbSizes)) {
      const vpn = iova >> BigInt(sizeLog);
      const ways = this.setList.get(this.setOf(vpn, ctxId, sizeLog));
      if (!ways) continue;
      const hit = ways.find((e) => e !== undefined && e.vpn === vpn && e.ctxId === ctxId && e.pasid === pasid && e.sizeLog === sizeLog);
      if (hit) return hit;
    }
    return undefined;
  }

  fill(ctxId: number, pasid: number, iova: bigint, sizeLog: number, outPage: bigint, perms: number): void {
    const vpn = iova >> BigInt(sizeLog);
    const set = this.setOf(vpn, ctxId, sizeLog);
    const ways = this.waysOf(set);
    // A live entry with the same tag is refreshed in place (a write that walked to set
    // the dirty bit must not leave the older, clean copy first in line).
    let way = ways.findIndex((e) => e !== undefined && e.vpn === vpn && e.ctxId === ctxId && e.pasid === pasid && e.sizeLog === sizeLog);
    if (way < 0) way = ways.findIndex((e) => e === undefined);
    if (way < 0) {
      way = this.victims.get(set) ?? 0;
      this.victims.set(set, (way + 1) % this.ways);
      this.counters.evictions++;
    }
    ways[way] = { vpn, ctxId, pasid, sizeLog, outPage, perms };
    const ctx = this.contexts.get(ctxId);
    ctx.tlbSizes |= 1n << BigInt(sizeLog);
  }

  private dropWhere(match: (e: TlbEntry) => boolean): void {
    for (const ways of this.setList.values()) {
      for (let w = 0; w < ways.length; w++) {
        const e = ways[w];
        if (e !== undefined && match(e)) ways[w] = undefined;
      }
    }
  }

  flushAll(): void {
    this.dropWhere(() => true);
    for (const id of this.contexts.ids()) this.contexts.get(id).tlbSizes = 0n;
    this.counters.invalidations++;
  }

  /** Any invalidation of a context also ends the combined entries of contexts nested over it. */
  private dropNestedOver(ctxId: number): void {
    this.dropWhere((e) => this.contexts.get(e.ctxId).s2 === ctxId);
  }

  flushContext(ctxId: number): void {
    this.dropWhere((e) => e.ctxId === ctxId);
    this.dropNestedOver(ctxId);
    this.contexts.get(ctxId).tlbSizes = 0n;
    this.counters.invalidations++;
  }

  flushPasid(ctxId: number, pasid: number): void {
    const slot = pasidSlot(ctxId, pasid);
    this.dropWhere((e) => pasidSlot(e.ctxId, e.pasid) === slot);
    this.dropNestedOver(ctxId);
    this.counters.invalidations++;
  }

  /** Entries of ctxId (one PASID, or any when pasid is undefined) whose page overlaps [first, last]. */
  flushRange(ctxId: number, pasid: number | undefined, first: bigint, last: bigint): void {
    this.dropNestedOver(ctxId);
    for (const sizeLog of sizeLogsOf(this.contexts.get(ctxId).tlbSizes)) {
      const firstVpn = first >> BigInt(sizeLog), lastVpn = last >> BigInt(sizeLog);
      this.dropWhere((e) => e.ctxId === ctxId && e.sizeLog === sizeLog && (pasid === undefined || e.pasid === pasid)
        && e.vpn >= firstVpn && e.vpn <= lastVpn);
    }
    this.counters.invalidations++;
  }
}
