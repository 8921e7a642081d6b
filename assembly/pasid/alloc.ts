// The host-wide PASID allocator (the 2020 VFIO_IOMMU_PASID_REQUEST proposal):
// one tree of allocated PASIDs for the whole host (PASID → owner), and per
// owner (a container) a tree of the PASIDs it holds. The owner's tree is
// what makes "free [min, max]" cost O(PASIDs held in the range): it is walked
// with "first held PASID ≥ cursor" searches, never index by index. An owner
// is named by the root node of its tree.
//
// Quotas, argument checks and errno live in the facade (src/vfio/pasid.ts).
import { xaCreate, xaDestroy, xaFind, xaFindFree, xaStore, xaErase, xaEraseFound, xaNodesNeeded, xaNodesFree, xaInit } from "./xarray";
import { XA_NONE, PASID_MAX, PASID_ALLOC_FULL, PASID_ALLOC_NOMEM } from "../abi";

// Root of the host-wide tree of allocated PASIDs.
let allocated: u32 = 0;

export function pasidSpaceInit(): void {
  xaInit();
  allocated = xaCreate();
}

// A new owner with nothing held: its tree's root, or 0 when the pool is empty.
export function ownerCreate(): u32 { return xaCreate(); }

// The lowest free PASID in [min, max] (never 0), now held by owner; or
// PASID_ALLOC_FULL, or PASID_ALLOC_NOMEM with nothing changed.
export function allocPasid(owner: u32, min: u32, max: u32): u32 {
  if (allocated == 0) return PASID_ALLOC_NOMEM;
  if (max > PASID_MAX) max = PASID_MAX;
  const pasid = xaFindFree(allocated, min == 0 ? 1 : min, max);
  if (pasid == XA_NONE) return PASID_ALLOC_FULL;
  // Both stores are checked before either is made: all or nothing.
  if (xaNodesNeeded(allocated, pasid) + xaNodesNeeded(owner, pasid) > xaNodesFree()) return PASID_ALLOC_NOMEM;
  xaStore(allocated, pasid, owner);
  xaStore(owner, pasid, pasid);
  return pasid;
}

// Frees the PASIDs owner holds in [min, max]; returns how many. Each step is
// one "first held ≥ cursor" search and two erases (the owner's along the
// path the search left), so the cost follows the PASIDs held, not the width
// of the range.
export function freePasids(owner: u32, min: u32, max: u32): u32 {
  if (max > PASID_MAX) max = PASID_MAX;
  let freed: u32 = 0;
  let cursor = min;
  while (cursor <= max) {
    const pasid = xaFind(owner, cursor, max);
    if (pasid == XA_NONE) break;
    xaEraseFound(pasid);
    xaErase(allocated, pasid);
    freed++;
    cursor = pasid + 1;
  }
  return freed;
}

// Frees everything owner holds and its tree; returns how many PASIDs.
export function ownerDestroy(owner: u32): u32 {
  const freed = freePasids(owner, 0, PASID_MAX);
  xaDestroy(owner);
  return freed;
}

// Writes up to cap PASIDs held by owner, from `from` up, as u32s at out;
// returns how many.
export function heldPasids(owner: u32, from: u32, out: usize, cap: u32): u32 {
  let count: u32 = 0;
  let cursor = from;
  while (count < cap && cursor <= PASID_MAX) {
    const pasid = xaFind(owner, cursor, PASID_MAX);
    if (pasid == XA_NONE) break;
    store<u32>(out + (<usize>count << 2), pasid);
    count++;
    cursor = pasid + 1;
  }
  return count;
}
