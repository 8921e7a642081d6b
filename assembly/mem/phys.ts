// Physical RAM accessors. Every page-table entry load or store names an HPA;
// the caller checks it against ramSize first (inRam), so a bad pointer in a
// table becomes a fault, never a trap or a read of engine state.
import { ramBase, ramSize } from "../layout";

// [hpa, hpa + len) lies inside RAM (len > 0, no wrap).
@inline export function inRam(hpa: u64, len: u64): bool {
  return hpa < ramSize && len <= ramSize - hpa;
}

@inline export function ramPtr(hpa: u64): usize { return ramBase + <usize>hpa; }

@inline export function loadPte(hpa: u64): u64 { return load<u64>(ramBase + <usize>hpa); }

@inline export function storePte(hpa: u64, value: u64): void { store<u64>(ramBase + <usize>hpa, value); }
