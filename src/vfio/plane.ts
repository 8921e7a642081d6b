// What the VFIO layer asks of the data plane: process memory, pinned DMA
// mappings, dirty bits, MSI windows. The container's and process's rules are
// written once over this interface; the engine implements it here, and the
// naive twin implements it in pure TypeScript (bench/naive), so the same
// control logic runs over both and the benchmark compares the data planes.
import * as abi from "../engine/abi.js";
import type { Engine } from "../engine/engine.js";

export interface DataPlane {
  /** mmap: backs every page of [vaddr, last] with a fresh zeroed frame (abi status). */
  processMap(procCtx: number, vaddr: bigint, last: bigint, prot: number): number;
  /** munmap: frees the frames unless pinned, removes the leaves. */
  processUnmap(procCtx: number, vaddr: bigint, last: bigint): void;
  /** Pins [vaddr, last] of the process and maps it at iova in the domain, all or nothing (abi status). */
  pinMap(procCtx: number, domCtx: number, vaddr: bigint, last: bigint, iova: bigint, access: number, prot: number): number;
  /** Unpins what [iova, last] maps, then unmaps it. */
  unpinUnmap(domCtx: number, iova: bigint, last: bigint): void;
  /** One bit per 4 KiB page of [iova, last] (bit 0 = iova): set where the stage-2 dirty bit is; cleared after. */
  readDirty(domCtx: number, iova: bigint, last: bigint): Uint8Array;
  setDomainFlags(domCtx: number, flags: number): void;
  /** An IOVA window whose device writes are interrupt requests (start > end: none). */
  setMsiWindow(domCtx: number, start: bigint, end: bigint): void;
  flushDomain(domCtx: number): void;
  /** The DMA API's map: [iova, last] → hpa.. in the domain's table, largest pages that fit (abi status; nothing changed on an error). */
  mapRange(domCtx: number, iova: bigint, last: bigint, hpa: bigint, prot: number): number;
  /**
   * The DMA API's map of a scatter list: every (iova, last, hpa) triple of
   * `entries` mapped as mapRange maps one, all or nothing (the status of the
   * entry that failed). At most MAP_LIST_MAX triples (ERR_ENOMEM otherwise).
   */
  mapList(domCtx: number, entries: BigUint64Array, prot: number): number;
  /** The DMA API's unmap: the leaves wholly inside [iova, last]; the bytes unmapped. */
  unmapRange(domCtx: number, iova: bigint, last: bigint): bigint;
  /** Invalidates the domain's IOTLB entries (every PASID) over [iova, last]. */
  flushRange(domCtx: number, iova: bigint, last: bigint): void;
  /**
   * A vendor driver's pin (vfio_pin_pages' GUP): npage pages of the process
   * from vaddr, each present and allowing `access`, else ERR_EFAULT with
   * nothing pinned; their frames pinned and their HPAs listed from page `at`
   * of `halves` (each HPA as two 32-bit halves, low first: no BigInt made).
   */
  pinPages(procCtx: number, vaddr: bigint, npage: number, access: number, halves: Uint32Array, at: number): number;
  /** Drops one pin of each frame (frame numbers: HPA / 4 KiB); a frame is freed when nothing else holds it. */
  unpinFrames(frames: readonly number[]): void;
  /**
   * Maps [iova, last] → gpa.. in the guest stage-1 table of nested context
   * ctx, taking new tables from `pool` (GPAs, zeroed by the caller). When the
   * pool is short: ERR_ENOMEM and `needed` (nothing changed).
   */
  guestMap(ctx: number, iova: bigint, last: bigint, gpa: bigint, prot: number, pool: readonly bigint[]): { status: number; needed: number; used: number; released: bigint[] };
  /** Unmaps [iova, last] in the guest table; the GPAs of tables it emptied; status ERR_EFAULT (nothing changed) when stage 2 keeps a table of the range out of reach. */
  guestUnmap(ctx: number, iova: bigint, last: bigint): { bytes: bigint; released: bigint[]; status: number };
}

export class EnginePlane implements DataPlane {
  constructor(private readonly engine: Engine) {}

  processMap(procCtx: number, vaddr: bigint, last: bigint, prot: number): number {
    return this.engine.wasm.procMap(procCtx, vaddr, last, prot);
  }

  processUnmap(procCtx: number, vaddr: bigint, last: bigint): void {
    this.engine.wasm.procUnmap(procCtx, vaddr, last);
  }

  pinMap(procCtx: number, domCtx: number, vaddr: bigint, last: bigint, iova: bigint, access: number, prot: number): number {
    return this.engine.wasm.dmaPinMap(procCtx, domCtx, vaddr, last, iova, access, prot);
  }

  unpinUnmap(domCtx: number, iova: bigint, last: bigint): void {
    this.engine.wasm.dmaUnpinUnmap(domCtx, iova, last);
  }

  readDirty(domCtx: number, iova: bigint, last: bigint): Uint8Array {
    const e = this.engine;
    const pages = ((last - iova) >> 12n) + 1n;
    const out = new Uint8Array(Number((pages + 7n) / 8n));
    // The engine writes into the staging area, a chunk of pages at a time (a
    // whole number of bytes), without cleaning: a large leaf may straddle two
    // chunks and must read dirty in both.
    const chunkPages = BigInt(e.stagingSize * 8);
    for (let done = 0n; done < pages; done += chunkPages) {
      const n = pages - done < chunkPages ? pages - done : chunkPages;
      const bytes = Number((n + 7n) / 8n);
      e.bytes.fill(0, e.staging, e.staging + bytes);
      const first = iova + (done << 12n);
      e.wasm.dirtyBitmap(domCtx, first, first + (n << 12n) - 1n, abi.PAGE_SHIFT, e.staging, 0);
      out.set(e.bytes.subarray(e.staging, e.staging + bytes), Number(done / 8n));
    }
    // Then one pass cleans the whole range (2^63-byte "pages": a one-byte
    // bitmap) and invalidates it, so the next write walks and sets the bit anew.
    e.bytes[e.staging] = 0;
    e.wasm.dirtyBitmap(domCtx, iova, last, 63, e.staging, 1);
    return out;
  }

  guestMap(ctx: number, iova: bigint, last: bigint, gpa: bigint, prot: number, pool: readonly bigint[]): { status: number; needed: number; used: number; released: bigint[] } {
    const e = this.engine;
    if (pool.length * 8 > e.stagingSize) return { status: abi.ERR_ENOMEM, needed: pool.length, used: 0, released: [] };
    new BigUint64Array(e.buffer, e.staging, pool.length).set(pool);
    // The emptied tables a leaf replaced are listed after the pool.
    const releasedAt = e.staging + pool.length * 8;
    const cap = e.stagingSize / 8 - pool.length;
    const status = e.wasm.ptGuestMap(ctx, iova, last, gpa, prot, e.staging, pool.length, releasedAt, cap);
    const ok = status === abi.ST_OK;
    const released = ok ? [...new BigUint64Array(e.buffer, releasedAt, e.wasm.guestTablesReleased())] : [];
    return { status, needed: e.wasm.guestTablesNeeded(), used: ok ? e.wasm.guestTablesNeeded() : 0, released };
  }

  guestUnmap(ctx: number, iova: bigint, last: bigint): { bytes: bigint; released: bigint[]; status: number } {
    const e = this.engine;
    const cap = e.stagingSize / 8;
    const bytes = BigInt.asUintN(64, e.wasm.ptGuestUnmap(ctx, iova, last, e.staging, cap));
    const n = Math.min(e.wasm.guestTablesReleased(), cap);
    return { bytes, released: [...new BigUint64Array(e.buffer, e.staging, n)], status: e.wasm.guestUnmapStatus() };
  }

  pinPages(procCtx: number, vaddr: bigint, npage: number, access: number, halves: Uint32Array, at: number): number {
    const e = this.engine;
    // A call pins at most VFIO_PIN_PAGES_MAX_ENTRIES (512) pages: the list fits the staging area.
    if (npage * 8 > e.stagingSize) return abi.ERR_EINVAL;
    const st = e.wasm.extPin(procCtx, vaddr, npage, access, e.staging);
    if (st !== abi.ST_OK) return st;
    const words = e.words, from = e.staging >>> 2;
    for (let k = 0; k < 2 * npage; k++) halves[2 * at + k] = words[from + k];
    return st;
  }

  unpinFrames(frames: readonly number[]): void {
    const e = this.engine;
    const room = e.stagingSize / 8;
    // Each HPA as two 32-bit halves (no BigInt made).
    const halves = new Uint32Array(e.buffer, e.staging, room * 2);
    for (let done = 0; done < frames.length; done += room) {
      const n = Math.min(room, frames.length - done);
      for (let i = 0; i < n; i++) {
        const f = frames[done + i];
        halves[2 * i] = (f % 2 ** 20) * 4096;
        halves[2 * i + 1] = Math.floor(f / 2 ** 20);
      }
      e.wasm.extUnpin(e.staging, n);
    }
  }

  setDomainFlags(domCtx: number, flags: number): void { this.engine.wasm.contextSetFlags(domCtx, flags); }
  setMsiWindow(domCtx: number, start: bigint, end: bigint): void { this.engine.wasm.contextSetMsiWindow(domCtx, start, end); }
  flushDomain(domCtx: number): void { this.engine.wasm.iotlbFlushContext(domCtx); }
  mapRange(domCtx: number, iova: bigint, last: bigint, hpa: bigint, prot: number): number { return this.engine.wasm.ptMap(domCtx, iova, last, hpa, prot); }
  unmapRange(domCtx: number, iova: bigint, last: bigint): bigint { return BigInt.asUintN(64, this.engine.wasm.ptUnmap(domCtx, iova, last)); }

  mapList(domCtx: number, entries: BigUint64Array, prot: number): number {
    const e = this.engine;
    // The engine reads the triples from staging, which holds MAP_LIST_MAX of them.
    if (entries.length / 3 > abi.MAP_LIST_MAX) return abi.ERR_ENOMEM;
    new BigUint64Array(e.buffer, e.staging, entries.length).set(entries);
    return e.wasm.ptMapList(domCtx, e.staging, entries.length / 3, prot);
  }
  flushRange(domCtx: number, iova: bigint, last: bigint): void { this.engine.wasm.iotlbFlushRange(domCtx, 0, 1, iova, last); }
}
