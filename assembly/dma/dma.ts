// Device DMA through a domain: each piece of a transfer is translated (IOTLB
// first), checked against the access, and copied with one memory.copy per
// page. A fault stops the transfer; the bytes before it stay done, the
// fault is recorded in the ring and described in the control block.
//
// Segment lists live in engine memory, so they are validated here (lengths
// below 2^32, no wrap past 2^64, total within the buffer) before anything
// moves: a bad list is an error with nothing transferred, never a trap.
import { ctrl } from "../layout";
import { inRam, ramPtr } from "../mem/phys";
import { ctxPtr, ctxFlags, ctxTlbSizes, ctxMsiStart, ctxMsiEnd } from "../walk/context";
import { hitNeed, permsAllow } from "../walk/perms";
import { liveFrom, tlbLookup, tlbProbe, isSingleSize, tlbKey, entryOut, entryPerms, entrySizeLog, countHits, tlbGeneration, bumpGeneration } from "../tlb/iotlb";
import { translateOne, outHpa, outSizeLog, outLevel } from "../translate";
import { walkStage } from "../walk/walker";
import { tableLookup } from "../pasid/table";
import { recordFault } from "./faults";
import {
  ST_OK, ERR_EINVAL, ERR_EOVERFLOW, FAULT_OUTPUT_OUTSIDE_RAM, RES_STATUS, RES_LEVEL, RES_BYTES, RES_FAULT_ADDR,
  RES_SEGMENT, RES_STAGE, RES_PIECE_LEN, RES_PIECE_PAGE, SEG_SIZE, SEG_IOVA, SEG_LEN, ACCESS_WRITE, ST_INTERRUPT, PASID_TABLE_NONE,
} from "../abi";

let moved: u64 = 0;

// MSI doorbells as HPAs (an interrupt controller's doorbell page, outside
// RAM): a device write that translates into this window is an interrupt.
let doorbellStart: u64 = 1;
let doorbellEnd: u64 = 0;
export function setDoorbellWindow(start: u64, end: u64): void { doorbellStart = start; doorbellEnd = end; bumpGeneration(); }
let faultLevel: u32 = 0;
let faultStage: u32 = 1;

// The piece of a transfer at cur: translated for the access, checked, and cut
// to what lies in one page (and short of the MSI window for a write). On
// ST_OK the piece is [pieceHpa, pieceHpa + pieceLen) of RAM; otherwise why
// the transfer stops there (a fault, recorded, or an interrupt). Both the
// engine's own copy loop (transfer) and a facade copying into a caller's
// array (dmaPiece) go through here, so they cannot differ.
let pieceHpa: u64 = 0;
let pieceLen: u64 = 0;
@inline function piece(ctxId: u32, pasid: u32, access: u32, need: u32, minStamp: u32, sourceId: u32, cur: u64, want: u64,
  toRam: bool, msiStart: u64, msiEnd: u64): u32 {
  // A write into the untranslated MSI window is an interrupt request, not a memory write.
  if (toRam && cur >= msiStart && cur <= msiEnd) { faultLevel = 0; return ST_INTERRUPT; }
  const st = translateOne(ctxId, pasid, cur, access, need, minStamp, sourceId);
  if (st != ST_OK) { faultLevel = outLevel; faultStage = walkStage; return st; }
  if (toRam && outHpa >= doorbellStart && outHpa <= doorbellEnd) { faultLevel = 0; return ST_INTERRUPT; }
  const pageLeft = ((cur | ((<u64>1 << outSizeLog) - 1)) - cur) + 1;
  let chunk = pageLeft < want ? pageLeft : want;
  // Stop short of the MSI window so the next piece starts on it.
  if (toRam && cur < msiStart && msiStart - cur < chunk && msiStart <= msiEnd) chunk = msiStart - cur;
  if (!inRam(outHpa, chunk)) {
    recordFault(ctxId, pasid, sourceId, cur, access, FAULT_OUTPUT_OUTSIDE_RAM, 0, 1);
    faultLevel = 0; faultStage = 1;
    return FAULT_OUTPUT_OUTSIDE_RAM;
  }
  pieceHpa = outHpa;
  pieceLen = chunk;
  return ST_OK;
}

// Moves len bytes between iova.. and buf..; returns the status, bytes done in `moved`.
function transfer(ctxId: u32, pasid: u32, access: u32, need: u32, minStamp: u32, sourceId: u32, iova: u64, len: u64, buf: usize): u32 {
  const toRam = (access & ACCESS_WRITE) != 0;
  const ctx = ctxPtr(ctxId);
  const msiStart = ctxMsiStart(ctx), msiEnd = ctxMsiEnd(ctx);
  let done: u64 = 0;
  let cur = iova;
  while (done < len) {
    const st = piece(ctxId, pasid, access, need, minStamp, sourceId, cur, len - done, toRam, msiStart, msiEnd);
    if (st != ST_OK) { moved = done; return st; }
    if (toRam) memory.copy(ramPtr(pieceHpa), buf + <usize>done, <usize>pieceLen);
    else memory.copy(buf + <usize>done, ramPtr(pieceHpa), <usize>pieceLen);
    done += pieceLen;
    cur += pieceLen;
  }
  moved = done;
  return ST_OK;
}

@inline function report(status: u32, bytes: u64, faultAddr: u64, segment: u32): u32 {
  store<u32>(ctrl + RES_STATUS, status);
  store<u64>(ctrl + RES_BYTES, bytes);
  store<u64>(ctrl + RES_FAULT_ADDR, faultAddr);
  store<u32>(ctrl + RES_LEVEL, faultLevel);
  store<u32>(ctrl + RES_SEGMENT, segment);
  store<u32>(ctrl + RES_STAGE, faultStage);
  return status;
}

@inline function wraps(iova: u64, len: u64): bool { return len != 0 && iova + (len - 1) < iova; }

// A device's PASID-tagged request goes to the stage-1 context its PASID table
// names (table != 0); no binding, or no table (PASID_TABLE_NONE), is context
// 0, which faults (no-context). Table 0: the PASID only tags IOTLB entries.
@inline function resolveContext(ctxId: u32, pasid: u32, table: u32): u32 {
  // Context 0 walks nothing, so no walk sets the stage its fault reports: start at 1.
  walkStage = 1;
  if (pasid == 0 || table == 0) return ctxId;
  return table == PASID_TABLE_NONE ? 0 : tableLookup(table, pasid);
}

export function dmaCopy(ctxIdIn: u32, pasid: u32, access: u32, sourceId: u32, iova: u64, len: u32, buf: usize, table: u32): u32 {
  faultLevel = 0; faultStage = 1;
  const ctxId = resolveContext(ctxIdIn, pasid, table);
  if (wraps(iova, len)) return report(ERR_EOVERFLOW, 0, iova, 0);
  const need = hitNeed(access, ctxFlags(ctxPtr(ctxId)));
  const st = transfer(ctxId, pasid, access, need, liveFrom(ctxId, pasid), sourceId, iova, len, buf);
  return report(st, moved, st == ST_OK ? 0 : iova + moved, 0);
}

// One piece of a DMA into or out of a caller's own array, which the facade
// copies itself (one copy, as a device model's unprotected copy makes): the
// piece at iova (below 2^53, so a number crosses, not a BigInt) of at most
// `want` bytes. Returns its offset in linear memory, its length in
// RES_PIECE_LEN; or a status below PIECE_STATUS_LIMIT, reported as dmaCopy
// reports one (RES_BYTES 0: the facade counts what it moved before).
//
// RES_PIECE_PAGE says whether the facade may replay the piece (src/hitmemo.ts).
export function dmaPiece(ctxIdIn: u32, pasid: u32, access: u32, sourceId: u32, iova: f64, want: u32, table: u32): u32 {
  faultLevel = 0; faultStage = 1;
  const ctxId = resolveContext(ctxIdIn, pasid, table);
  const ctx = ctxPtr(ctxId);
  const cur = <u64>iova;
  const toRam = (access & ACCESS_WRITE) != 0;
  const msiStart = ctxMsiStart(ctx), msiEnd = ctxMsiEnd(ctx);
  const generation = tlbGeneration;
  const st = piece(ctxId, pasid, access, hitNeed(access, ctxFlags(ctx)), liveFrom(ctxId, pasid), sourceId, cur, want, toRam, msiStart, msiEnd);
  if (st != ST_OK) return report(st, 0, cur, 0);
  store<u32>(ctrl + RES_PIECE_LEN, <u32>pieceLen);
  // A successful piece that left the generation alone was an IOTLB hit (a miss fills, and a fill bumps it).
  store<u32>(ctrl + RES_PIECE_PAGE, tlbGeneration == generation ? replayPage(cur, toRam, msiStart, msiEnd) : 0);
  return <u32>ramPtr(pieceHpa);
}

// After a hit: while the generation holds, the same lookup from anywhere in
// cur's 4 KiB IOVA page hits the same entry, and piece() makes the same
// piece (to the end of the translation page or the transfer) when nothing
// but the lookup could stop it there: the whole translation page is RAM, and
// for a write, no part of it is in the MSI window (IOVA) or the doorbell
// (HPA). Then log2 of the page size, else 0.
@inline function replayPage(cur: u64, toRam: bool, msiStart: u64, msiEnd: u64): u32 {
  const mask = (<u64>1 << outSizeLog) - 1;
  const hpaFirst = outHpa & ~mask;
  if (!inRam(hpaFirst, mask + 1)) return 0;
  if (toRam) {
    const iovaFirst = cur & ~mask;
    if (msiStart <= msiEnd && msiStart <= iovaFirst + mask && msiEnd >= iovaFirst) return 0;
    if (doorbellStart <= doorbellEnd && doorbellStart <= hpaFirst + mask && doorbellEnd >= hpaFirst) return 0;
  }
  return outSizeLog;
}

// Scatter-gather: segments in order, packed into one buffer of bufLen bytes.
// Stops at the first fault; RES_SEGMENT says which segment.
export function dmaScatterGather(ctxIdIn: u32, pasid: u32, access: u32, sourceId: u32, segs: usize, count: u32, buf: usize, bufLen: u32, table: u32): u32 {
  faultLevel = 0; faultStage = 1;
  const ctxId = resolveContext(ctxIdIn, pasid, table);
  let total: u64 = 0;
  for (let i: u32 = 0; i < count; i++) {
    const seg = segs + <usize>i * SEG_SIZE;
    const len = load<u64>(seg + SEG_LEN);
    if (len > 0xFFFFFFFF) return report(ERR_EINVAL, 0, 0, i);
    if (wraps(load<u64>(seg + SEG_IOVA), len)) return report(ERR_EOVERFLOW, 0, 0, i);
    total += len;
  }
  if (total > <u64>bufLen) return report(ERR_EINVAL, 0, 0, count);
  const ctx = ctxPtr(ctxId);
  const need = hitNeed(access, ctxFlags(ctx));
  const minStamp = liveFrom(ctxId, pasid);
  const keyBase = tlbKey(ctxId, pasid, 0);
  const toRam = (access & ACCESS_WRITE) != 0;
  const msiStart = ctxMsiStart(ctx), msiEnd = ctxMsiEnd(ctx);
  // The lookup plan, as in translateBatch: redone after a slow segment.
  let sizes = ctxTlbSizes(ctx);
  let single = isSingleSize(sizes);
  let sizeLog = <u32>ctz(sizes), key = keyBase | <u64>sizeLog, salt = (ctxId << 4) ^ sizeLog;
  let done: u64 = 0;
  let hits: u32 = 0;
  for (let i: u32 = 0; i < count; i++) {
    const seg = segs + <usize>i * SEG_SIZE;
    const iova = load<u64>(seg + SEG_IOVA);
    const len = load<u64>(seg + SEG_LEN);
    if (len == 0) continue;
    // Fast path: an IOTLB hit whose page holds the whole segment, in RAM
    // (so never a doorbell), and for a write, clear of the MSI window.
    // Anything else takes transfer(), which counts for itself.
    const e = single ? tlbProbe(key, salt, sizeLog, iova, minStamp) : tlbLookup(ctxId, keyBase, iova, minStamp, sizes);
    if (e != 0 && permsAllow(entryPerms(e), need) && !(toRam && msiStart <= msiEnd && iova <= msiEnd && iova + (len - 1) >= msiStart)) {
      const pageMask = (<u64>1 << (single ? sizeLog : entrySizeLog(e))) - 1;
      const offset = iova & pageMask;
      const hpa = entryOut(e) | offset;
      if (len - 1 <= pageMask - offset && inRam(hpa, len)) {
        hits++;
        if (toRam) memory.copy(ramPtr(hpa), buf + <usize>done, <usize>len);
        else memory.copy(buf + <usize>done, ramPtr(hpa), <usize>len);
        done += len;
        continue;
      }
    }
    const st = transfer(ctxId, pasid, access, need, minStamp, sourceId, iova, len, buf + <usize>done);
    done += moved;
    sizes = ctxTlbSizes(ctx);
    single = isSingleSize(sizes);
    sizeLog = <u32>ctz(sizes); key = keyBase | <u64>sizeLog; salt = (ctxId << 4) ^ sizeLog;
    if (st != ST_OK) { countHits(hits); return report(st, done, iova + moved, i); }
  }
  countHits(hits);
  return report(ST_OK, done, 0, count);
}
