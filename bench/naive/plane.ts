// The twin's data plane for VFIO (src/vfio/plane.ts's DataPlane): process
// memory over fresh frames, pinned DMA mappings, dirty bits and MSI windows,
// written the obvious way over the twin's tables, frame allocator and pin
// counts. The container's and process's rules are the facade's own code,
// run over this plane.
import * as abi from "../../src/engine/abi.js";
import type { DataPlane } from "../../src/vfio/plane.js";
import type { GuestMapResult, UndoLog } from "./builder.js";
import { nestingIds } from "../../src/format.js";
import { checkRange, forEachFrame, visitLeaves } from "./leaves.js";
import type { NaiveCore } from "./pagetable.js";
import type { FramePins } from "./pins.js";

/** Pages of dirty bitmap the engine's plane reads per call: its staging area, 8 bits a byte. */

export class NaivePlane implements DataPlane {
  constructor(private readonly core: NaiveCore, private readonly pins: FramePins) {}

  private ctx(id: number) { return this.core.contexts.get(id); }

  processMap(procCtx: number, vaddr: bigint, last: bigint, prot: number): number {
    const proc = this.ctx(procCtx);
    // Processes model Linux on x86: their tables are always x86-64.
    if (proc.fmt?.id !== abi.FORMAT_X86_64) return abi.ERR_EINVAL;
    return this.core.builder.mapFresh(proc, vaddr, last, prot);
  }

  processUnmap(procCtx: number, vaddr: bigint, last: bigint): void {
    const proc = this.ctx(procCtx);
    if (proc.fmt?.id !== abi.FORMAT_X86_64) return;
    forEachFrame(this.core.ram, proc, vaddr, last, (hpa) => this.pins.disown(hpa));
    this.core.builder.unmap(proc, vaddr, last);
  }

  /**
   * Checks every page first (EFAULT, nothing touched); then pins page by page
   * and maps each physically contiguous run as soon as the next page breaks
   * it, with the largest pages that fit. A failed run (EEXIST, ENOMEM) undoes
   * the runs mapped, the tables they created and every pin taken.
   */
  pinMap(procCtx: number, domCtx: number, vaddr: bigint, last: bigint, iova: bigint, access: number, prot: number): number {
    const { ram, builder } = this.core;
    const proc = this.ctx(procCtx), dom = this.ctx(domCtx);
    if (proc.fmt?.id !== abi.FORMAT_X86_64) return abi.ERR_EINVAL;
    if (checkRange(ram, proc, vaddr, last, access) !== abi.ST_OK) return abi.ERR_EFAULT;
    if (!dom.fmt) return abi.ERR_EINVAL;
    const delta = BigInt.asUintN(64, iova - vaddr);
    const target = (v: bigint): bigint => BigInt.asUintN(64, v + delta);
    const undo: UndoLog = [];
    let run: { vaddr: bigint; hpa: bigint; bytes: bigint } | undefined;
    let pinnedEnd = vaddr, mappedEnd = vaddr;
    const flush = (): number => {
      if (!run) return abi.ST_OK;
      const st = builder.map(dom, target(run.vaddr), target(run.vaddr + run.bytes - 1n), run.hpa, prot, { undo });
      if (st === abi.ST_OK) mappedEnd = run.vaddr + run.bytes;
      return st;
    };
    let st = visitLeaves(ram, proc, vaddr, last, ({ cur, chunkLast, hpa }) => {
      const bytes = chunkLast - cur + 1n;
      for (let off = 0n; off < bytes; off += 4096n) this.pins.pin(hpa + off);
      pinnedEnd = chunkLast + 1n;
      if (run && run.hpa + run.bytes === hpa) { run.bytes += bytes; return abi.ST_OK; }
      const flushed = flush();
      run = { vaddr: cur, hpa, bytes };
      return flushed;
    });
    if (st === abi.ST_OK) st = flush();
    if (st === abi.ST_OK) { builder.commit(dom, undo); return st; }
    if (mappedEnd !== vaddr) builder.rollback(dom, iova, iova + (mappedEnd - vaddr) - 1n, undo);
    if (pinnedEnd !== vaddr) forEachFrame(ram, proc, vaddr, pinnedEnd - 1n, (hpa) => this.pins.unpin(hpa));
    return st;
  }

  unpinUnmap(domCtx: number, iova: bigint, last: bigint): void {
    const dom = this.ctx(domCtx);
    forEachFrame(this.core.ram, dom, iova, last, (hpa) => this.pins.unpin(hpa));
    this.core.builder.unmap(dom, iova, last);
  }

  readDirty(domCtx: number, iova: bigint, last: bigint): Uint8Array {
    const dom = this.ctx(domCtx);
    const pages = ((last - iova) >> 12n) + 1n;
    const out = new Uint8Array(Number((pages + 7n) / 8n));
    visitLeaves(this.core.ram, dom, iova, last, ({ cur, chunkLast, pte, pteAddr, fmt }) => {
      if (!fmt.isDirty(pte, dom.flags)) return abi.ST_OK;
      for (let page = (cur - iova) >> 12n; page <= (chunkLast - iova) >> 12n; page++) out[Number(page >> 3n)] |= 1 << Number(page & 7n);
      this.core.ram.storePte(pteAddr, fmt.cleaned(pte));
      return abi.ST_OK;
    });
    // The cleaned range is invalidated once, so the next write walks again
    // and sets the dirty bit anew.
    this.core.iotlb.flushRange(domCtx, undefined, iova, last);
    return out;
  }

  /** Checks every page first (EFAULT, nothing pinned), then pins each frame and lists it. */
  pinPages(procCtx: number, vaddr: bigint, npage: number, access: number, halves: Uint32Array, at: number): number {
    const proc = this.ctx(procCtx);
    if (proc.fmt?.id !== abi.FORMAT_X86_64 || npage === 0) return abi.ERR_EINVAL;
    const last = vaddr + BigInt(npage) * 4096n - 1n;
    if (checkRange(this.core.ram, proc, vaddr, last, access) !== abi.ST_OK) return abi.ERR_EFAULT;
    let i = at;
    forEachFrame(this.core.ram, proc, vaddr, last, (hpa) => {
      this.pins.pin(hpa);
      halves[2 * i] = Number(hpa & 0xffffffffn);
      halves[2 * i + 1] = Number(hpa >> 32n);
      i++;
    });
    return abi.ST_OK;
  }

  unpinFrames(frames: readonly number[]): void {
    for (const f of frames) this.pins.unpin(BigInt(f) << 12n);
  }

  setDomainFlags(domCtx: number, flags: number): void { this.core.contexts.setFlags(domCtx, flags); }
  setMsiWindow(domCtx: number, start: bigint, end: bigint): void { this.core.contexts.setMsiWindow(domCtx, start, end); }
  flushDomain(domCtx: number): void { this.core.iotlb.flushContext(domCtx); }
  mapRange(domCtx: number, iova: bigint, last: bigint, hpa: bigint, prot: number): number { return this.core.builder.map(this.ctx(domCtx), iova, last, hpa, prot); }
  unmapRange(domCtx: number, iova: bigint, last: bigint): bigint { return this.core.builder.unmap(this.ctx(domCtx), iova, last); }

  /** Each (iova, last, hpa) triple in turn; when one fails, the leaves of those before it go, then the undo log. */
  mapList(domCtx: number, entries: BigUint64Array, prot: number): number {
    if (entries.length / 3 > abi.MAP_LIST_MAX) return abi.ERR_ENOMEM;
    const { builder } = this.core;
    const dom = this.ctx(domCtx);
    const undo: UndoLog = [];
    for (let k = 0; k < entries.length; k += 3) {
      const st = builder.map(dom, entries[k], entries[k + 1], entries[k + 2], prot, { undo });
      if (st === abi.ST_OK) continue;
      for (let j = 0; j < k; j += 3) builder.unmap(dom, entries[j], entries[j + 1], true);
      builder.undoTables(undo);
      return st;
    }
    builder.commit(dom, undo);
    return abi.ST_OK;
  }
  flushRange(domCtx: number, iova: bigint, last: bigint): void { this.core.iotlb.flushRange(domCtx, undefined, iova, last); }

  /** A guest table of nested context ctx: the engine's checks (a stage-1 format over a stage-2 one), then the builder over guest pages. */
  private guestTable(ctx: number) {
    const stage1 = this.ctx(ctx);
    const s2 = stage1.s2 === 0 ? undefined : this.ctx(stage1.s2);
    const s1ok = stage1.fmt !== undefined && nestingIds("stage1").ids.includes(stage1.fmt.id);
    const s2ok = s2?.fmt !== undefined && nestingIds("stage2").ids.includes(s2.fmt.id);
    return s1ok && s2ok ? { stage1, s2 } : undefined;
  }

  guestMap(ctx: number, iova: bigint, last: bigint, gpa: bigint, prot: number, pool: readonly bigint[]): GuestMapResult {
    const t = this.guestTable(ctx);
    if (!t) return { status: abi.ERR_EINVAL, needed: 0, used: 0, released: [] };
    return this.core.builder.guestMap(t.stage1, t.s2, iova, last, gpa, prot, pool);
  }

  guestUnmap(ctx: number, iova: bigint, last: bigint): { bytes: bigint; released: bigint[]; status: number } {
    const t = this.guestTable(ctx);
    if (!t) return { bytes: 0n, released: [], status: abi.ST_OK };
    return this.core.builder.guestUnmap(t.stage1, t.s2, iova, last);
  }
}
