// The one page-table walker. A format answers small inlined questions (is
// this entry present, a leaf, reserved; what does it point to; do the
// accumulated permissions allow the access); the walk itself is written once
// and specialised per format at compile time (no indirect calls).
//
// A walk ends in success (walkHpa, walkSizeLog, walkPerms) or in a fault
// reason with the level it happened at (leaf = 0) and the stage (walkStage).
// Tables outside RAM and tables that loop back to one already on the path
// are faults; the walk is bounded by the level count, so it can never hang.
//
// Nested translation: a stage-1 table (root and table pointers are GPAs)
// over a stage-2 context. Every stage-1 table read is itself translated
// through stage 2; the stage-1 output is translated with the access asked
// for; the result has both stages' permissions and the smaller page size.
// Stage-1 accessed/dirty updates are guest-memory writes: each one is its
// own stage-2 translation with write access, so a table page that stage 2
// maps read-only faults (stage 2) instead of being written, and stage 2's
// own A/D marks the table page written. Entries already up to date cost no
// stage-2 write, so a warm walk reads only.
import { ctrl } from "../layout";
import { inRam, loadPte, storePte } from "../mem/phys";
import { permsAllow, accessNeed } from "./perms";
import { ctxRoot, ctxLevels, ctxFlags, ctxRsvdMask, ctxInputBits } from "./context";
import {
  ST_OK, FAULT_NOT_PRESENT, FAULT_PERMISSION, FAULT_TABLE_OUTSIDE_RAM, KIND_INVALID, KIND_LEAF, FAULT_TABLE_CYCLE, CTX_AD, PERM_DIRTY, ACCESS_READ, ACCESS_WRITE,
  TRACE, TRACE_RECORD_SIZE, RES_TRACE_COUNT,
} from "../abi";

export let walkHpa: u64 = 0;
export let walkSizeLog: u32 = 0;
export let walkPerms: u32 = 0;
export let walkLevel: u32 = 0;
export let walkStage: u32 = 1;

// The stage-2 type argument of a single-stage walk: its test folds away.
@final @unmanaged
export class NoStage2 {
  @inline nested(): bool { return false; }
}

// mode bits
export const WALK_UPDATE_AD: u32 = 1; // set accessed/dirty as hardware would
export const WALK_TRACE: u32 = 2;     // record every entry read (probe)

@inline export function isNested<G>(): bool {
  // A format class has no nested() method; only NoStage2 does.
  return !isDefined(changetype<G>(0).nested);
}

@inline function trace(n: u32, pteAddr: u64, pte: u64): void {
  const rec = ctrl + TRACE + <usize>n * TRACE_RECORD_SIZE;
  store<u64>(rec, pteAddr);
  store<u64>(rec, pte, 8);
  store<u32>(ctrl + RES_TRACE_COUNT, n + 1);
}

export function walk<F>(ctx: usize, iova: u64, access: u32, mode: u32): u32 {
  return walkIn<F, NoStage2>(ctx, iova, access, mode, 0);
}

// s2: the stage-2 context of a nested walk (G its format), else 0 with G = NoStage2.
export function walkIn<F, G>(ctx: usize, iova: u64, access: u32, mode: u32, s2: usize): u32 {
  const fmt = changetype<F>(0);
  const nested = isNested<G>();
  walkStage = 1;
  const levels = ctxLevels(ctx);
  const flags = ctxFlags(ctx);
  const rsvdMask = ctxRsvdMask(ctx);
  const updateAd = (mode & WALK_UPDATE_AD) != 0 && (flags & CTX_AD) != 0;
  const tracing = (mode & WALK_TRACE) != 0;
  if (tracing) store<u32>(ctrl + RES_TRACE_COUNT, 0);
  let level = levels - 1;
  walkLevel = level;
  const inputFault = fmt.inputFault(iova, ctxInputBits(ctx));
  if (inputFault != 0) return inputFault;
  let table = fmt.rootAddr(ctxRoot(ctx));
  // Tables already on this path, to refuse cycles (at most 5 levels deep).
  let seen0: u64 = table, seen1: u64 = u64.MAX_VALUE, seen2: u64 = u64.MAX_VALUE, seen3: u64 = u64.MAX_VALUE;
  let perms = fmt.fullPerms();
  let depth: u32 = 0;
  while (true) {
    walkLevel = level;
    const pteAddr = table + (<u64>fmt.index(iova, level) << 3);
    let pteHpa = pteAddr;
    if (nested) {
      // The table lives in guest memory: find it through stage 2 (a read).
      const st = walkIn<G, NoStage2>(s2, pteAddr, ACCESS_READ, mode & WALK_UPDATE_AD, 0);
      if (st != ST_OK) { walkStage = 2; return st; }
      pteHpa = walkHpa;
      walkLevel = level;
    }
    if (!inRam(pteHpa & ~<u64>0xfff, 4096)) return FAULT_TABLE_OUTSIDE_RAM;
    let pte = loadPte(pteHpa);
    if (tracing) trace(depth, pteAddr, pte);
    const kind = fmt.entryKind(pte, level);
    if (kind == KIND_INVALID) return FAULT_NOT_PRESENT;
    const bad = fmt.check(pte, level, rsvdMask);
    if (bad != 0) return bad;
    if (kind == KIND_LEAF) {
      perms = fmt.narrowLeaf(perms, pte, flags);
      const leafBad = fmt.leafFault(pte, flags);
      if (leafBad != 0) return leafBad;
      if (!permsAllow(perms, accessNeed(access, flags))) return FAULT_PERMISSION;
      const sizeLog = fmt.levelShift(level);
      if (updateAd) {
        const next = (access & ACCESS_WRITE) != 0 ? fmt.dirtied(pte, flags) : fmt.accessed(pte, flags);
        if (next != pte) {
          const st = storeEntry<G>(s2, pteAddr, pteHpa, next, mode);
          if (st != ST_OK) return st;
          pte = next;
        }
      }
      // Without hardware A/D there is nothing to set on a write, so writes may hit in the IOTLB.
      if (!updateAd || fmt.isDirty(pte, flags)) perms |= PERM_DIRTY;
      const gpa = fmt.leafAddr(pte, level) | (iova & ((<u64>1 << sizeLog) - 1));
      if (nested) {
        const st = walkIn<G, NoStage2>(s2, gpa, access, mode & WALK_UPDATE_AD, 0);
        if (st != ST_OK) { walkStage = 2; return st; }
        combineStages(perms, sizeLog, level);
        return ST_OK;
      }
      walkHpa = gpa;
      walkSizeLog = sizeLog;
      walkPerms = perms;
      return ST_OK;
    }
    perms = fmt.narrowTable(perms, pte, flags);
    if (updateAd) {
      const next = fmt.tableAccessed(pte, flags);
      if (next != pte) {
        const st = storeEntry<G>(s2, pteAddr, pteHpa, next, mode);
        if (st != ST_OK) return st;
        walkLevel = level;
      }
    }
    table = fmt.tableAddr(pte);
    depth++;
    if (table == seen0 || table == seen1 || table == seen2 || table == seen3) return FAULT_TABLE_CYCLE;
    if (depth == 1) seen1 = table; else if (depth == 2) seen2 = table; else if (depth == 3) seen3 = table;
    level--;
  }
}

// After a stage-2 walk of a stage-1 output (walkHpa is its result): both
// stages' permissions, the smaller page size, and the stage-1 level.
@inline export function combineStages(s1Perms: u32, s1SizeLog: u32, s1Level: u32): void {
  walkPerms = s1Perms & walkPerms;
  if (s1SizeLog < walkSizeLog) walkSizeLog = s1SizeLog;
  walkLevel = s1Level;
}

// Stores an updated stage-1 entry. Nested, it is a write to guest memory at
// pteAddr (a GPA): stage 2 must allow the write, and sets its own A/D.
@inline function storeEntry<G>(s2: usize, pteAddr: u64, pteHpa: u64, next: u64, mode: u32): u32 {
  if (isNested<G>()) {
    const st = walkIn<G, NoStage2>(s2, pteAddr, ACCESS_WRITE, mode & WALK_UPDATE_AD, 0);
    if (st != ST_OK) { walkStage = 2; return st; }
  }
  storePte(pteHpa, next);
  return ST_OK;
}

// For a context whose format is unknown (none, or released): the fault is
// reported at level 0. Its stage is set by the caller that knows it (a
// missing stage 2 in dispatch, context 0 in the DMA paths). Not here: with
// the store here the batch hit loop ran at 11 ns instead of 8 in V8 although
// its own wasm was unchanged (where V8 places its machine code follows what
// was compiled before it); this shape measured fast. See the bench notes.
export function noWalk(status: u32): u32 { walkLevel = 0; return status; }
