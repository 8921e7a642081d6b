// The twin's page-table walker: one loop for every format, reading entries
// from RAM as BigInt. A walk ends in a translation or in a fault reason with
// the level it happened at (leaf = 0) and its stage. A table outside RAM, or
// one already on the walk's path (a cycle), is a fault; accessed/dirty bits
// are set as the hardware would only when asked (the IOTLB path of an A/D
// domain). A nested context's table reads and output go through its stage-2
// context, and so does each stage-1 A/D update, as a write; with host-physical
// tables (CTX_S1_PHYS_TABLES, the GPU's GGTT) only the output does.
import * as abi from "../../src/engine/abi.js";
import type { Context, Contexts } from "./context.js";
import { KIND_INVALID, KIND_LEAF } from "./formats.js";
import { permsAllow } from "./perms.js";
import type { Ram } from "./ram.js";

export interface WalkStepRecord { entryAddress: bigint; entry: bigint }

export type WalkOutcome =
  | { status: 0; hpa: bigint; sizeLog: number; perms: number }
  | { status: number; level: number; stage?: 2 };

export interface WalkMode {
  /** Set accessed/dirty bits (only if the context has hardware A/D on). */
  updateAd?: boolean;
  /** Every entry read, top level first. */
  trace?: WalkStepRecord[];
  /** Needed to walk a nested context's stage 2. */
  contexts?: Contexts;
}

export function walk(ram: Ram, ctx: Context, iova: bigint, access: number, mode: WalkMode = {}): WalkOutcome {
  const fmt = ctx.fmt;
  if (!fmt) return { status: abi.FAULT_NO_CONTEXT, level: 0 };
  const flags = ctx.flags;
  const s2 = ctx.s2 !== 0 ? mode.contexts!.get(ctx.s2) : undefined;
  // Where stage-1 tables are read and written: through stage 2 (GPAs), or in RAM as they are.
  const tablesS2 = (flags & abi.CTX_S1_PHYS_TABLES) === 0 ? s2 : undefined;
  const updateAd = mode.updateAd === true && (flags & abi.CTX_AD) !== 0;
  // Stage 2 of a nested walk: the address a stage-1 GPA reaches, or the stage-2 fault.
  const stage2 = (gpa: bigint, acc: number): WalkOutcome => {
    const r = walk(ram, s2!, gpa, acc, { updateAd: mode.updateAd });
    return "hpa" in r ? r : { status: r.status, level: r.level, stage: 2 };
  };
  // An A/D update of a stage-1 entry: a guest-memory write when nested, so stage 2 must allow writing there.
  const store = (entryAddr: bigint, pteAddr: bigint, value: bigint): WalkOutcome | undefined => {
    if (tablesS2) {
      const r = stage2(entryAddr, abi.ACCESS_WRITE);
      if (!("hpa" in r)) return r;
    }
    ram.storePte(pteAddr, value);
    return undefined;
  };
  let level = ctx.levels - 1;
  const inputFault = fmt.inputFault(iova, ctx.inputBits);
  if (inputFault !== 0) return { status: inputFault, level };
  let table = fmt.rootAddr(ctx.root);
  const path = [table];
  let perms = fmt.fullPerms();
  for (;;) {
    const entryAddr = table + (fmt.index(iova, level) << 3n);
    let pteAddr = entryAddr;
    if (tablesS2) {
      const r = stage2(entryAddr, abi.ACCESS_READ);
      if (!("hpa" in r)) return r;
      pteAddr = r.hpa;
    }
    if (!ram.inRam(pteAddr & ~0xfffn, 4096n)) return { status: abi.FAULT_TABLE_OUTSIDE_RAM, level };
    let pte = ram.loadPte(pteAddr);
    mode.trace?.push({ entryAddress: entryAddr, entry: pte });
    const kind = fmt.entryKind(pte, level);
    if (kind === KIND_INVALID) return { status: abi.FAULT_NOT_PRESENT, level };
    const bad = fmt.check(pte, level, ctx.rsvdMask);
    if (bad !== 0) return { status: bad, level };
    if (kind === KIND_LEAF) {
      perms = fmt.narrowLeaf(perms, pte, flags);
      const leafBad = fmt.leafFault(pte, flags);
      if (leafBad !== 0) return { status: leafBad, level };
      if (!permsAllow(perms, access, flags)) return { status: abi.FAULT_PERMISSION, level };
      if (updateAd) {
        const next = (access & abi.ACCESS_WRITE) !== 0 ? fmt.dirtied(pte, flags) : fmt.accessed(pte, flags);
        if (next !== pte) {
          const failed = store(entryAddr, pteAddr, next);
          if (failed) return failed;
          pte = next;
        }
      }
      // Without hardware A/D nothing is left to set on a write: writes may hit in the IOTLB.
      if (!updateAd || fmt.isDirty(pte, flags)) perms |= abi.PERM_DIRTY;
      const sizeLog = fmt.levelShift(level);
      const offset = iova & ((1n << BigInt(sizeLog)) - 1n);
      const out = fmt.leafAddr(pte, level) | offset;
      if (s2) {
        const r = stage2(out, access);
        if (!("hpa" in r)) return r;
        return { status: abi.ST_OK, hpa: r.hpa, sizeLog: Math.min(sizeLog, r.sizeLog), perms: perms & r.perms };
      }
      return { status: abi.ST_OK, hpa: out, sizeLog, perms };
    }
    perms = fmt.narrowTable(perms, pte, flags);
    if (updateAd) {
      const next = fmt.tableAccessed(pte, flags);
      if (next !== pte) {
        const failed = store(entryAddr, pteAddr, next);
        if (failed) return failed;
      }
    }
    table = fmt.tableAddr(pte);
    if (path.includes(table)) return { status: abi.FAULT_TABLE_CYCLE, level };
    path.push(table);
    level--;
  }
}
