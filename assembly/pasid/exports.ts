// PASID tables and allocation: the engine's export surface for them
// (re-exported by assembly/index.ts). Arguments are checked by the facade
// (src/vfio/pasid.ts): owners and tables are live roots, PASIDs ≤ PASID_MAX
// where a single PASID is named.
import { ownerCreate, ownerDestroy, allocPasid, freePasids, heldPasids } from "./alloc";
import { tableCreate, tableDestroy, tableSet, tableClear, tableLookup, tableLookupBatch, tableNext } from "./table";
import { xaNodesFree, xaNodesTotal, xaVisits } from "./xarray";

// ---- the allocator: PASIDs are host-wide, each held by one owner (a container)
export function pasidOwnerCreate(): u32 { return ownerCreate(); }
export function pasidOwnerDestroy(owner: u32): u32 { return ownerDestroy(owner); }
export function pasidAlloc(owner: u32, min: u32, max: u32): u32 { return allocPasid(owner, min, max); }
export function pasidFree(owner: u32, min: u32, max: u32): u32 { return freePasids(owner, min, max); }
export function pasidHeld(owner: u32, from: u32, out: usize, cap: u32): u32 { return heldPasids(owner, from, out, cap); }

// ---- per-device PASID tables: PASID → stage-1 context id
export function pasidTableCreate(): u32 { return tableCreate(); }
export function pasidTableDestroy(table: u32): void { tableDestroy(table); }
export function pasidTableSet(table: u32, pasid: u32, ctxId: u32): u32 { return tableSet(table, pasid, ctxId); }
export function pasidTableClear(table: u32, pasid: u32): bool { return tableClear(table, pasid); }
export function pasidTableLookup(table: u32, pasid: u32): u32 { return tableLookup(table, pasid); }
export function pasidTableLookupBatch(table: u32, pasids: usize, contexts: usize, count: u32): u32 {
  return tableLookupBatch(table, pasids, contexts, count);
}
export function pasidTableNext(table: u32, from: u32): u32 { return tableNext(table, from); }

// ---- the node pool, and a debug counter of nodes read by searches, stores and erases
export function pasidNodesFree(): u32 { return xaNodesFree(); }
export function pasidNodesTotal(): u32 { return xaNodesTotal(); }
export function pasidNodeVisits(): u64 { return xaVisits(); }
