// The twin's PASID plane: the allocator and device PASID tables written the
// obvious way with Maps and Sets. The facade's rules (src/vfio/pasid.ts:
// checks, quota, errno) run over it unchanged, so the differential test and
// the benchmark compare the engine's trees with this.
//
// Allocation scans [min, max] for the first PASID not in the host-wide Map;
// a range free walks the owner's whole Set. There is no node pool: nothing
// here fails with ENOMEM.
import * as abi from "../../src/engine/abi.js";
import type { PasidPlane, PasidStats } from "../../src/vfio/pasid.js";

export class NaivePasidPlane implements PasidPlane {
  /** PASID → owner, host-wide. */
  private readonly allocated = new Map<number, number>();
  private readonly owners = new Map<number, Set<number>>();
  private readonly tables = new Map<number, NaivePasidTable>();
  private nextId = 1;

  createOwner(): number {
    const owner = this.nextId++;
    this.owners.set(owner, new Set());
    return owner;
  }

  destroyOwner(owner: number): number {
    const freed = this.free(owner, 0, abi.PASID_MAX);
    this.owners.delete(owner);
    return freed;
  }

  alloc(owner: number, min: number, max: number): number {
    for (let pasid = Math.max(min, 1); pasid <= max; pasid++) {
      if (this.allocated.has(pasid)) continue;
      this.allocated.set(pasid, owner);
      this.owners.get(owner)!.add(pasid);
      return pasid;
    }
    return abi.PASID_ALLOC_FULL;
  }

  free(owner: number, min: number, max: number): number {
    const held = this.owners.get(owner)!;
    let freed = 0;
    for (const pasid of held) {
      if (pasid < min || pasid > max) continue;
      held.delete(pasid);
      this.allocated.delete(pasid);
      freed++;
    }
    return freed;
  }

  held(owner: number): number[] { return [...this.owners.get(owner)!].sort((a, b) => a - b); }
  holds(owner: number, pasid: number): boolean { return this.owners.get(owner)!.has(pasid); }

  createTable(): number {
    const id = this.nextId++;
    this.tables.set(id, new NaivePasidTable());
    return id;
  }

  destroyTable(table: number): void { this.tables.delete(table); }
  tableSet(table: number, pasid: number, ctxId: number): number { this.tables.get(table)!.map.set(pasid, ctxId); return abi.ST_OK; }
  tableClear(table: number, pasid: number): boolean { return this.tables.get(table)!.map.delete(pasid); }
  tableLookup(table: number, pasid: number): number { return this.tables.get(table)!.map.get(pasid) ?? 0; }
  tableLookupBatch(table: number, pasids: Uint32Array, contexts: Uint32Array): number { return this.tables.get(table)!.lookupBatch(pasids, contexts); }
  tableEntries(table: number): [number, number][] { return [...this.tables.get(table)!.map].sort((a, b) => a[0] - b[0]); }

  /** No node pool: the counts are zero. */
  stats(): PasidStats { return { nodes: 0, nodesFree: 0, nodeVisits: 0 }; }
}

/** A device PASID table as a Map: PASID → stage-1 context id. */
export class NaivePasidTable {
  readonly map = new Map<number, number>();

  lookupBatch(pasids: Uint32Array, contexts: Uint32Array): number {
    const map = this.map;
    let misses = 0;
    for (let i = 0; i < pasids.length; i++) {
      const ctx = map.get(pasids[i]);
      if (ctx === undefined) { contexts[i] = 0; misses++; } else contexts[i] = ctx;
    }
    return misses;
  }
}
