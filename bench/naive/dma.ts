// Device DMA through a domain in the twin: every piece of a transfer is
// translated through the IOTLB page by page and copied with Uint8Array.set.
// A fault stops the transfer; the bytes before it stay done and the fault is
// recorded. Errors are thrown only for bad arguments, as in the facade.
//
// One facade detail shows in the IOTLB counters and is mirrored: a buffer
// that is not on engine memory (for the twin: not from allocBuffer() and not
// a view of RAM) is moved through a staging area of STAGE_DATA bytes, and a
// transfer restarts with a fresh translation at each staging boundary.
//
// A device write that reaches an MSI doorbell is an interrupt request, not a
// memory write: an IOVA in the context's MSI window (checked before
// translation, VT-d's interrupt range), or an IOVA that translates into the
// host's doorbell HPA window (an SMMU's ITS page). The transfer ends there;
// the next (up to) 4 bytes of the buffer are the MSI data and count as moved.
import * as abi from "../../src/engine/abi.js";
import type { Address, DmaFault, DmaInterrupt, DmaOptions, DmaResult, SgOptions, SgResult, SgSegments } from "../../src/index.js";
import { DmaCalls, PIECES_BELOW, dmaRequest, normalizeSegments, requestAccess, requestPasid, sgRequest, type Piece } from "../../src/dma.js";
import { bytes as checkBytes } from "../../src/args.js";
import { accessFlags, fail, hex, reasonName, toU64 } from "./args.js";
import type { Translator } from "./translate.js";

const STAGE_SEGS = 4096;
const STAGE_DATA = abi.STAGING_SIZE - STAGE_SEGS * abi.SEG_SIZE;


interface Stop { status: number; moved: number; level: number; stage?: 1 | 2 }

/** Outcome of a batch of pieces: a fault, an interrupt (its IOVA), or neither. */
interface Ran { bytes: number; segment: number; fault?: DmaFault; interruptAt?: bigint }

/** The host's MSI doorbell (HPAs, inclusive; start > end: none). */
export interface DoorbellWindow { start: bigint; end: bigint }

export class NaiveDmaPort extends DmaCalls {
  constructor(
    private readonly translator: Translator,
    private readonly isDirect: (view: ArrayBufferView) => boolean,
    private readonly contextId: () => number,
    private readonly sourceId: number,
    private readonly doorbell: DoorbellWindow,
    private readonly raise?: (interrupt: DmaInterrupt) => void,
    /** A device's PASID table: the stage-1 context a PASID is bound to (0: none), undefined when the device has no table. */
    private readonly resolvePasid?: (pasid: number) => number | undefined,
  ) { super(); }

  /** The context a request goes through: a PASID-tagged one through the device's PASID table. */
  private target(id: number, pasid: number): number {
    return (pasid !== 0 ? this.resolvePasid?.(pasid) : undefined) ?? id;
  }

  sg(segments: SgSegments, buffer: Uint8Array, opts: SgOptions): SgResult {
    const request = sgRequest(opts);
    const access = requestAccess(request), pasid = requestPasid(request);
    checkBytes(buffer, "sg buffer");
    const id = this.contextId();
    const direct = this.isDirect(buffer);
    if (direct && segments instanceof BigUint64Array && this.isDirect(segments)) {
      // The facade hands such a list to the engine as is, which checks it.
      if (segments.length % 2 !== 0) fail("EINVAL", "sg: a BigUint64Array segment list holds (iova, length) pairs");
      const list = normalizeSegments(segments);
      if (list.reduce((n, s) => n + s.length, 0) > buffer.byteLength) fail("EINVAL", `sg: segments total more than the ${buffer.byteLength}-byte buffer`);
      const r = this.run(this.target(id, pasid), list, buffer, pasid, access);
      if (r.interruptAt !== undefined) return { ...this.interrupt(buffer, r.bytes, r.interruptAt), segment: r.segment };
      return r.fault ? { bytes: r.bytes, segment: r.segment, fault: r.fault } : { bytes: r.bytes, segment: r.segment };
    }
    const list = normalizeSegments(segments);
    let total = 0;
    for (const s of list) total += s.length;
    if (total > buffer.byteLength) fail("EINVAL", `sg: segments total ${total} bytes, buffer has ${buffer.byteLength}`);
    return this.staged(this.target(id, pasid), list, buffer, direct, pasid, access);
  }

  protected single(iova: Address, buffer: Uint8Array, base: number, opts?: DmaOptions): DmaResult {
    const request = dmaRequest(opts, base);
    const access = requestAccess(request), pasid = requestPasid(request);
    const start = toU64(iova, "iova");
    const id = this.contextId();
    if (start + BigInt(buffer.byteLength) > 1n << 64n) fail("EOVERFLOW", `dma: ${hex(start)} + ${buffer.byteLength} wraps past 2^64`);
    const piece = [{ iova: start, length: buffer.byteLength, segment: 0 }];
    // As the facade: a buffer on engine memory, or a transfer below 2^53 (copied piece by piece), moves page by page with no staging.
    if (this.isDirect(buffer) || start + BigInt(buffer.byteLength) <= PIECES_BELOW) {
      const r = this.run(this.target(id, pasid), piece, buffer, pasid, access);
      if (r.interruptAt !== undefined) return this.interrupt(buffer, r.bytes, r.interruptAt);
      return r.fault ? { bytes: r.bytes, fault: r.fault } : { bytes: r.bytes };
    }
    const r = this.staged(this.target(id, pasid), piece, buffer, false, pasid, access);
    if (r.interrupt) return { bytes: r.bytes, interrupt: r.interrupt };
    return r.fault ? { bytes: r.bytes, fault: r.fault } : { bytes: r.bytes };
  }

  /** The write stopped at a doorbell after `done` bytes: up to 4 more bytes of the buffer are the MSI data. */
  private interrupt(buffer: Uint8Array, done: number, address: bigint): DmaResult {
    const n = Math.min(4, buffer.byteLength - done);
    let data = 0;
    for (let k = n - 1; k >= 0; k--) data = data * 256 + buffer[done + k];
    const interrupt = { address, data };
    this.raise?.(interrupt);
    return { bytes: done + n, interrupt };
  }

  /** Cuts the list where the facade's staging batches end, then runs it batch by batch. */
  private staged(id: number, list: Piece[], buffer: Uint8Array, direct: boolean, pasid: number, access: number): SgResult {
    let done = 0;
    let i = 0;
    let offsetInSeg = 0;
    while (i < list.length) {
      const batch: Piece[] = [];
      let bytes = 0;
      while (i < list.length && batch.length < STAGE_SEGS) {
        const seg = list[i];
        const left = seg.length - offsetInSeg;
        const room = direct ? left : Math.min(left, STAGE_DATA - bytes);
        if (room === 0 && left > 0) break;
        batch.push({ iova: seg.iova + BigInt(offsetInSeg), length: room, segment: seg.segment });
        bytes += room;
        if (room === left) { i++; offsetInSeg = 0; } else { offsetInSeg += room; break; }
      }
      const r = this.run(id, batch, buffer.subarray(done), pasid, access);
      done += r.bytes;
      if (r.interruptAt !== undefined) return { ...this.interrupt(buffer, done, r.interruptAt), segment: batch[r.segment].segment };
      if (r.fault) return { bytes: done, segment: batch[r.segment].segment, fault: r.fault };
    }
    return { bytes: done, segment: list.length };
  }

  /** Moves the pieces in order, packed in buffer; stops at the first fault. */
  private run(ctxId: number, pieces: Piece[], buffer: Uint8Array, pasid: number, access: number): Ran {
    let done = 0;
    for (let k = 0; k < pieces.length; k++) {
      const { iova, length } = pieces[k];
      const stop = this.transfer(ctxId, pasid, access, iova, length, buffer, done);
      done += stop.moved;
      if (stop.status === abi.ST_INTERRUPT) return { bytes: done, segment: k, interruptAt: iova + BigInt(stop.moved) };
      if (stop.status !== abi.ST_OK) {
        const fault: DmaFault = {
          reason: reasonName(stop.status),
          address: iova + BigInt(stop.moved),
          level: stop.level,
          stage: stop.stage ?? 1,
          pasid,
          access: accessFlags(access),
        };
        return { bytes: done, segment: k, fault };
      }
    }
    return { bytes: done, segment: pieces.length };
  }

  private transfer(ctxId: number, pasid: number, access: number, iova: bigint, len: number, buffer: Uint8Array, bufOffset: number): Stop {
    const { ram, faults, contexts } = this.translator;
    const toRam = (access & abi.ACCESS_WRITE) !== 0;
    const { msiStart, msiEnd } = contexts.get(ctxId);
    let done = 0;
    let cur = iova;
    while (done < len) {
      if (toRam && cur >= msiStart && cur <= msiEnd) return { status: abi.ST_INTERRUPT, moved: done, level: 0 };
      const t = this.translator.translate(ctxId, pasid, cur, access, this.sourceId);
      if (!("hpa" in t)) return { status: t.status, moved: done, level: t.level, stage: "stage" in t && t.stage === 2 ? 2 : 1 };
      if (toRam && t.hpa >= this.doorbell.start && t.hpa <= this.doorbell.end) return { status: abi.ST_INTERRUPT, moved: done, level: 0 };
      const pageLeft = Number((cur | ((1n << BigInt(t.sizeLog)) - 1n)) - cur + 1n);
      let chunk = Math.min(pageLeft, len - done);
      // Stop short of the MSI window, so the next piece starts on it.
      if (toRam && msiStart <= msiEnd && cur < msiStart && msiStart - cur < BigInt(chunk)) chunk = Number(msiStart - cur);
      if (!ram.inRam(t.hpa, BigInt(chunk))) {
        faults.record(ctxId, pasid, this.sourceId, cur, access, abi.FAULT_OUTPUT_OUTSIDE_RAM, 0);
        return { status: abi.FAULT_OUTPUT_OUTSIDE_RAM, moved: done, level: 0 };
      }
      const hpa = Number(t.hpa);
      const at = bufOffset + done;
      if (toRam) ram.bytes.set(buffer.subarray(at, at + chunk), hpa);
      else buffer.set(ram.bytes.subarray(hpa, hpa + chunk), at);
      done += chunk;
      cur += BigInt(chunk);
    }
    return { status: abi.ST_OK, moved: done, level: 0 };
  }
}

