// Per-device PASID tables: PASID → stage-1 context id, one tree per device,
// read on the DMA path. Context ids are never 0 (context slot 0 is never
// handed out), so a lookup reads 0 for "no entry" straight from the tree.
import { xaCreate, xaDestroy, xaLookup, xaStore, xaErase, xaFind, xaNodesNeeded, xaNodesFree } from "./xarray";
import { ST_OK, ERR_ENOMEM } from "../abi";

// An empty table (its tree's root), or 0 when the node pool is empty.
export function tableCreate(): u32 { return xaCreate(); }
export function tableDestroy(table: u32): void { xaDestroy(table); }

// The stage-1 context bound to pasid, 0 for none: four loads, no branch.
@inline export function tableLookup(table: u32, pasid: u32): u32 { return xaLookup(table, pasid); }

// Binds pasid (1..PASID_MAX) to ctxId (non-zero), replacing any binding;
// ERR_ENOMEM with nothing changed when the pool cannot hold it.
export function tableSet(table: u32, pasid: u32, ctxId: u32): u32 {
  if (xaNodesNeeded(table, pasid) > xaNodesFree()) return ERR_ENOMEM;
  xaStore(table, pasid, ctxId);
  return ST_OK;
}

export function tableClear(table: u32, pasid: u32): bool { return xaErase(table, pasid); }

// The lowest bound PASID ≥ from, or XA_NONE.
export function tableNext(table: u32, from: u32): u32 { return xaFind(table, from, 0xFFFFFFFF); }

// pasids[i] → contexts[i] (0: none), u32 arrays; returns the misses. The
// lookup is inlined (nothing is called per PASID), four a turn so the loop's
// own work is shared by four walks whose loads overlap.
export function tableLookupBatch(table: u32, pasids: usize, contexts: usize, count: u32): u32 {
  let misses: u32 = 0;
  let i: u32 = 0;
  for (; i + 4 <= count; i += 4) {
    const off = <usize>i << 2;
    const c0 = tableLookup(table, load<u32>(pasids + off));
    const c1 = tableLookup(table, load<u32>(pasids + off, 4));
    const c2 = tableLookup(table, load<u32>(pasids + off, 8));
    const c3 = tableLookup(table, load<u32>(pasids + off, 12));
    store<u32>(contexts + off, c0);
    store<u32>(contexts + off, c1, 4);
    store<u32>(contexts + off, c2, 8);
    store<u32>(contexts + off, c3, 12);
    misses += <u32>(c0 == 0) + <u32>(c1 == 0) + <u32>(c2 == 0) + <u32>(c3 == 0);
  }
  for (; i < count; i++) {
    const off = <usize>i << 2;
    const ctxId = tableLookup(table, load<u32>(pasids + off));
    store<u32>(contexts + off, ctxId);
    misses += <u32>(ctxId == 0);
  }
  return misses;
}
