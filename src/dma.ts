// Device DMA through a domain. Nothing here throws for a translation
// failure: a transfer stops at the first fault and reports the bytes it
// completed and the fault. Errors are thrown only for bad arguments.
//
// A buffer on engine memory (allocBuffer(), or a view of RAM) is passed by
// offset: one copy, page by page, inside WASM. A single transfer from any
// other array, below 2^53, goes piece by piece: the engine translates each
// piece and this copies it once between the array and RAM (no BigInt, no
// staging); a piece that repeats an IOTLB hit, with nothing changed since,
// skips the engine (src/hitmemo.ts). Scatter-gather lists and transfers above 2^53 go through the
// engine's staging area in chunks, one WASM call per chunk. The engine
// itself checks wrap-around and segment lists.
import { bool, bytes as checkBytes, field, isInstance, list as checkList, options, perCallOptions, show } from "./args.js";
import { toU64, toLength, hex, U64_MAX, type Address } from "./addr.js";
import { reasonName, accessFlags, type AccessFlags, type FaultReason } from "./access.js";
import { fail } from "./errors.js";
import * as abi from "./engine/abi.js";
import type { Engine } from "./engine/engine.js";
import { HitMemo, memoTag, pageEnd } from "./hitmemo.js";

export interface DmaOptions {
  /** PASID of the request; 0 (the default) means none. */
  pasid?: number;
  /** A privileged (supervisor) request. */
  privileged?: boolean;
}

export interface DmaFault {
  reason: FaultReason;
  /** The first address that could not be transferred. */
  address: bigint;
  level: number;
  stage: 1 | 2;
  pasid: number;
  access: Required<AccessFlags>;
}

/** A device write that reached an MSI doorbell: an interrupt request, not memory. */
export interface DmaInterrupt { address: bigint; data: number }

export interface DmaResult {
  bytes: number;
  fault?: DmaFault;
  /** The write stopped at an MSI doorbell and raised this interrupt (its ≤ 4 data bytes are counted in bytes). */
  interrupt?: DmaInterrupt;
}
export interface DmaReadResult extends DmaResult { data: Uint8Array }
export interface SgResult extends DmaResult {
  /** Index of the segment that faulted (segments.length when none did). */
  segment: number;
}

/** A scatter-gather list: objects, or a BigUint64Array of (iova, length) pairs. */
export type SgSegments = ReadonlyArray<{ iova: Address; length: Address }> | BigUint64Array;

export interface SgOptions extends DmaOptions {
  /** "read": device reads memory into the buffer; "write": device writes the buffer to memory. */
  direction: "read" | "write";
}

// Staging: a table of segments, then data.
const STAGE_SEGS = 4096;

export function checkPasid(pasid: number | undefined): number {
  if (pasid === undefined) return 0;
  if (!Number.isInteger(pasid) || pasid < 0 || pasid > 0xfffff) fail("EINVAL", `pasid must be an integer in 0..0xfffff, got ${show(pasid)}`);
  return pasid;
}

const TWO_53 = 2 ** 53;
/** A single transfer ending at or below this address goes piece by piece from the caller's array (no staging). */
export const PIECES_BELOW = 1n << 53n;

/**
 * The iova as a number when the whole transfer lies below 2^53 (so every
 * address of it is exact as a double), else -1; a bad iova throws as iovaOf does.
 */
function numberIova(iova: Address, len: number): number {
  const at = numberAddress(iova);
  if (at < 0) iovaOf(iova);
  return at >= 0 && at + len <= TWO_53 ? at : -1;
}

// A bigint below 2^53 becomes a number through these (Number() costs ten times as much).
const SCRATCH_U64 = new BigUint64Array(1);
const SCRATCH_U32 = new Uint32Array(SCRATCH_U64.buffer);

/** iova as a number when it is a number or bigint in [0, 2^53), else -1 (the caller refuses a bad one). */
export function numberAddress(iova: Address): number {
  if (typeof iova === "number") return Number.isSafeInteger(iova) && iova >= 0 ? iova : -1;
  if (typeof iova !== "bigint" || iova < 0n || iova >= 9007199254740992n) return -1;
  SCRATCH_U64[0] = iova;
  return SCRATCH_U32[0] + SCRATCH_U32[1] * 4294967296;
}

/**
 * Copies a piece between RAM (engine memory at `off`) and the caller's
 * array at `at`, allocating nothing for short pieces: one function a
 * direction, so each stays simple where it is inlined. (A Uint8Array's length
 * is its byteLength, and much cheaper to read.)
 */
function copyPiece(e: Engine, off: number, buffer: Uint8Array, at: number, len: number, toRam: boolean, fresh: boolean): void {
  if (toRam) copyToRam(e, off, buffer, at, len);
  else copyFromRam(e, off, buffer, at, len, fresh);
}

/** A whole array of more than a few words is one set(), whose native copy wins then; a short piece goes by words; a long one through a view of the array. */
function copyToRam(e: Engine, off: number, buffer: Uint8Array, at: number, len: number): void {
  if (at === 0 && len === buffer.length && len > SHORT_SET) e.bytes.set(buffer, off);
  else if (len <= SHORT_COPY) copyShort(e, off, buffer, at, len, true);
  else e.bytes.set(buffer.subarray(at, at + len), off);
}

/**
 * A short piece goes by words (a view would allocate); a long one, or one
 * into an array this port just made (reading its .buffer costs), through a
 * view of RAM the engine keeps (Engine.view: reading a buffer again makes none).
 */
function copyFromRam(e: Engine, off: number, buffer: Uint8Array, at: number, len: number, fresh: boolean): void {
  if (len <= SHORT_COPY && !fresh) copyShort(e, off, buffer, at, len, false);
  else buffer.set(e.view(off, len), at);
}
const SHORT_COPY = 128;
const SHORT_SET = 32;
const TWO_32 = 2 ** 32;

/**
 * A short copy with no view made, by the widest words both ends are aligned
 * to: 8 bytes through BigInt64Arrays (optimised code moves them as raw
 * 64-bit words, no BigInt made), else 4 through Int32Arrays (exact bits, unlike
 * floats), else 4 through DataViews; then the last bytes one by one. Any of
 * these outruns set() and a subarray view at these sizes.
 */
function copyShort(e: Engine, off: number, buffer: Uint8Array, at: number, len: number, toRam: boolean): void {
  const base = callerOffset(buffer) + at;
  let words: number;
  // Word indexes are taken with >>>: an array's buffer lies below 4 GiB (else bytes go through the DataView).
  if (((off | base) & 7) === 0 && base < TWO_32) {
    words = len & ~7;
    const mine = callerLongs, ram = e.longs;
    const m = base >>> 3, r = off >>> 3, n = words >>> 3;
    if (toRam) for (let i = 0; i < n; i++) ram[r + i] = mine[m + i];
    else for (let i = 0; i < n; i++) mine[m + i] = ram[r + i];
  } else if (((off | base) & 3) === 0 && base < TWO_32) {
    words = len & ~3;
    const mine = callerWords, ram = e.words;
    const m = base >>> 2, r = off >>> 2, n = words >>> 2;
    if (toRam) for (let i = 0; i < n; i++) ram[r + i] = mine[m + i];
    else for (let i = 0; i < n; i++) mine[m + i] = ram[r + i];
  } else {
    words = len & ~3;
    const view = callerData ??= new DataView(buffer.buffer), ram = e.data;
    if (toRam) for (let i = 0; i < words; i += 4) ram.setInt32(off + i, view.getInt32(base + i));
    else for (let i = 0; i < words; i += 4) view.setInt32(base + i, ram.getInt32(off + i));
  }
  for (let i = words; i < len; i++) {
    if (toRam) e.bytes[off + i] = buffer[at + i];
    else buffer[at + i] = e.bytes[off + i];
  }
}

// A device model reuses its arrays: the last one's offset in its buffer, and
// views of that buffer as 8- and 4-byte words and (made when needed) as a
// DataView, are kept.
let callerArray: Uint8Array | undefined;
let callerBase = 0;
let callerLongs: BigInt64Array = new BigInt64Array(0);
let callerWords: Int32Array = new Int32Array(0);
let callerData: DataView | undefined;
/** buffer.byteOffset, with the views above made for buffer. */
function callerOffset(buffer: Uint8Array): number {
  if (buffer !== callerArray) {
    callerArray = buffer;
    callerBase = buffer.byteOffset;
    const whole = buffer.buffer as ArrayBuffer & { resizable?: boolean; growable?: boolean };
    // A resizable buffer gets views that track its length.
    const tracking = whole.resizable === true || whole.growable === true;
    callerLongs = tracking ? new BigInt64Array(whole) : new BigInt64Array(whole, 0, whole.byteLength >>> 3);
    callerWords = tracking ? new Int32Array(whole) : new Int32Array(whole, 0, whole.byteLength >>> 2);
    callerData = undefined;
  }
  return callerBase;
}

// A completed transfer of n bytes: one frozen result per length, so a hit
// allocates nothing; the last one is at hand (a device model repeats its lengths).
const COMPLETED = new Map<number, DmaResult>();
let lastCompleted: DmaResult = Object.freeze({ bytes: 0 });
function completed(n: number): DmaResult {
  if (lastCompleted.bytes === n) return lastCompleted;
  if (n >= 65536) return { bytes: n };
  let r = COMPLETED.get(n);
  if (r === undefined) COMPLETED.set(n, r = Object.freeze({ bytes: n }));
  return (lastCompleted = r);
}

// The last array checked (a device model reuses its arrays): it stays a
// Uint8Array while its prototype is the one it was checked with, and one
// detached since has no bytes, so it is checked again.
let checkedArray: Uint8Array | undefined;
let checkedProto: unknown;
function callerBytes(value: Uint8Array, what: string): Uint8Array {
  if (value === checkedArray && value.length !== 0 && Object.getPrototypeOf(value) === checkedProto) return value;
  checkedArray = checkBytes(value, what);
  checkedProto = Object.getPrototypeOf(value);
  return value;
}

const iovaOf = (iova: Address): bigint => (typeof iova === "bigint" && iova >= 0n && iova <= U64_MAX ? iova : toU64(iova, "iova"));

/** One segment of an sg request, checked: its place in the list is `segment`. */
export interface Piece { iova: bigint; length: number; segment: number }

/**
 * The calls every DMA port offers, written once over the port's own single
 * transfer (the engine's DmaPort, and the twin's). `sgRequest` reads the
 * direction and privilege of a scatter-gather request the same way for both.
 */
export abstract class DmaCalls {
  /** One transfer; `fresh`: buffer is a plain array this port just made (never on engine memory). */
  protected abstract single(iova: Address, buffer: Uint8Array, base: number, opts?: DmaOptions, fresh?: boolean): DmaResult;

  /**
   * Device reads len bytes at iova (memory → a new buffer). `data` holds the
   * bytes read: all of them, or those before a fault. A long read goes in
   * chunks, so a huge len allocates only what was read.
   */
  read(iova: Address, len: number, opts?: DmaOptions): DmaReadResult {
    const n = toLength(len, "len");
    const start = iovaOf(iova);
    if (n <= READ_CHUNK) {
      const data = new Uint8Array(n);
      const r = this.single(start, data, abi.ACCESS_READ, opts, true);
      const got = r.bytes === n ? data : data.subarray(0, r.bytes);
      return r.fault ? { data: got, bytes: r.bytes, fault: r.fault } : { data: got, bytes: r.bytes };
    }
    if (start + BigInt(n) > 1n << 64n) fail("EOVERFLOW", `dma: ${hex(start)} + ${n} wraps past 2^64`);
    const parts: Uint8Array[] = [];
    let done = 0;
    let fault: DmaFault | undefined;
    while (done < n) {
      const part = new Uint8Array(Math.min(READ_CHUNK, n - done));
      const r = this.single(start + BigInt(done), part, abi.ACCESS_READ, opts, true);
      parts.push(part.subarray(0, r.bytes));
      done += r.bytes;
      if (r.fault) { fault = r.fault; break; }
    }
    const data = parts.length === 1 ? parts[0] : new Uint8Array(done);
    if (parts.length > 1) parts.reduce((at, p) => { data.set(p, at); return at + p.length; }, 0);
    return fault ? { data, bytes: done, fault } : { data, bytes: done };
  }

  /** Device reads target.length bytes at iova into target. */
  readInto(iova: Address, target: Uint8Array, opts?: DmaOptions): DmaResult {
    return this.single(iova, callerBytes(target, "readInto target"), abi.ACCESS_READ, opts);
  }

  /** Device writes bytes to memory at iova. */
  write(iova: Address, bytes: Uint8Array, opts?: DmaOptions): DmaResult {
    return this.single(iova, callerBytes(bytes, "write bytes"), abi.ACCESS_WRITE, opts);
  }
}

/** The cell of a port whose owner keeps none: always 0, so the port asks its closure. */
const NO_CELL = new Int32Array(1);

/** Reads longer than this go in chunks of it. */
const READ_CHUNK = 1 << 20;

/**
 * A DMA's options, checked before anything moves: the PASID (0: none) and the
 * access bits with the privileged bit, packed in one number (pasid <<
 * ACCESS_BITS | access) so a per-call path allocates nothing. A frozen
 * options object can never gain a key, so its keys are checked once (a
 * device model passes the same one with every call); its fields are read
 * every time.
 */
export function dmaRequest(opts: DmaOptions | undefined, base: number): number {
  if (opts === undefined) return base;
  let o: { pasid?: unknown; privileged?: unknown };
  // The last frozen object seen is the one a device model passes every call: no set lookup for it.
  if (opts === lastFrozen || frozenOptions.has(opts)) o = lastFrozen = opts;
  else {
    o = perCallOptions(opts, "DMA options", DMA_KEYS);
    if (o === opts && isFrozen(opts)) frozenOptions.add(opts);
  }
  const pasid = checkPasid(field(o, "pasid", "DMA options") as number | undefined);
  return pasid * (1 << ACCESS_BITS) + (bool(field(o, "privileged", "DMA options"), "privileged", false) ? base | abi.ACCESS_PRIV : base);
}



/** The access bits (read, write, exec, privileged) below the PASID in a packed request. */
const ACCESS_BITS = 4;
export const requestAccess = (request: number): number => request & ((1 << ACCESS_BITS) - 1);
export const requestPasid = (request: number): number => request >>> ACCESS_BITS;

const DMA_KEYS = ["pasid", "privileged"] as const;
/** Frozen DMA options objects whose keys dmaRequest has checked, and the last one used. */
const frozenOptions = new WeakSet<object>();
let lastFrozen: object | undefined;
/** Object.isFrozen, false when a proxy's trap throws. */
function isFrozen(o: object): boolean {
  try {
    return Object.isFrozen(o);
  } catch {
    return false;
  }
}
const SG_KEYS = ["pasid", "privileged", "direction"] as const;

/** An sg request packed as dmaRequest packs one: its direction (EINVAL unless "read" or "write"), privilege and PASID. */
export function sgRequest(opts: SgOptions): number {
  const o = perCallOptions(opts, "sg options", SG_KEYS);
  const direction = field(o, "direction", "sg options");
  const base = direction === "write" ? abi.ACCESS_WRITE : direction === "read" ? abi.ACCESS_READ : -1;
  if (base < 0) fail("EINVAL", `sg: direction must be "read" or "write", got ${show(direction)}`);
  const access = bool(field(o, "privileged", "sg options"), "privileged", false) ? base | abi.ACCESS_PRIV : base;
  return checkPasid(field(o, "pasid", "sg options") as number | undefined) * (1 << ACCESS_BITS) + access;
}

export class DmaPort extends DmaCalls {
  private readonly stageData: number;
  private readonly stageDataSize: number;
  private readonly memo: HitMemo;
  /** The last array found not on engine memory (a device model reuses its arrays; engine memory never moves). */
  private lastCaller: Uint8Array | undefined;

  /**
   * @internal `contextId` says which context the port's requests go through
   * now; `idCell`, when the owner keeps one, holds it while it cannot change
   * (0: ask contextId). A domain's port has a cell: its id is fixed for its
   * life, and the closure's call (the call site sees every kind of owner's
   * closure, so V8 cannot inline it) cost a 64-byte transfer a seventh of its time.
   */
  constructor(private readonly engine: Engine, private readonly contextId: () => number, private readonly sourceId: number,
    private readonly raise?: (interrupt: DmaInterrupt) => void, private readonly pasidTable?: () => number,
    private readonly idCell: Int32Array = NO_CELL) {
    super();
    this.stageData = engine.staging + STAGE_SEGS * abi.SEG_SIZE;
    this.stageDataSize = engine.stagingSize - STAGE_SEGS * abi.SEG_SIZE;
    this.memo = new HitMemo(engine);
  }

  /** Moves every segment, in order, to or from one packed buffer. */
  sg(segments: SgSegments, buffer: Uint8Array, opts: SgOptions): SgResult {
    const request = sgRequest(opts);
    const access = requestAccess(request), pasid = requestPasid(request);
    checkBytes(buffer, "sg buffer");
    const id = this.context();
    const e = this.engine;
    const direct = e.isDirect(buffer);
    // A pair list and a buffer both on engine memory: one call, validated by the engine.
    if (direct >= 0 && ArrayBuffer.isView(segments) && isInstance(segments, BigUint64Array) && e.isDirect(segments) >= 0) {
      if (segments.length % 2 !== 0) fail("EINVAL", "sg: a BigUint64Array segment list holds (iova, length) pairs");
      const count = segments.length / 2;
      const st = e.wasm.dmaSg(id, pasid, access, this.sourceId, segments.byteOffset, count, direct, buffer.byteLength, this.pasidTable?.() ?? 0);
      if (st >= abi.ERR_EINVAL) this.rejectList(st, segments, count);
      if (st === abi.ST_INTERRUPT) return { ...this.interrupt(buffer, e.u32(abi.RES_BYTES), 0), segment: e.u32(abi.RES_SEGMENT) };
      return this.result(st, pasid, access, count);
    }
    const list = normalizeSegments(segments);
    let total = 0;
    for (const s of list) total += s.length;
    if (total > buffer.byteLength) fail("EINVAL", `sg: segments total ${total} bytes, buffer has ${buffer.byteLength}`);
    return this.staged(id, list, buffer, direct, pasid, access);
  }

  private rejectList(st: number, segments: BigUint64Array, count: number): never {
    const i = this.engine.u32(abi.RES_SEGMENT);
    if (i === count) fail("EINVAL", `sg: segments total more than the ${segments.byteLength}-byte buffer`);
    if (st === abi.ERR_EOVERFLOW) fail("EOVERFLOW", `sg: segment ${i}: ${hex(segments[2 * i])} + ${segments[2 * i + 1]} wraps past 2^64`);
    fail("EINVAL", `sg: segment ${i} length ${segments[2 * i + 1]} is 2^32 or more`);
  }

  // readInto and write again, as DmaCalls has them: this class's own copies,
  // so their call of single() sees one class. The shared ones, called on the
  // engine's port and the twin's in one process, are polymorphic there, and
  // that cost a 64-byte write a tenth of its time (V8 shares feedback between
  // closures of one function literal, so a class factory would not help).
  /**
   * Device reads len bytes at iova (memory → a new buffer). `data` holds the
   * bytes read: all of them, or those before a fault. A long read goes in
   * chunks, so a huge len allocates only what was read.
   */
  override read(iova: Address, len: number, opts?: DmaOptions): DmaReadResult {
    // First, a transfer with no options that one remembered hit covers whole
    // is one slice() of RAM: one allocation and one native copy, where the
    // shared path (DmaCalls.read) makes the array, then a view of RAM to copy from.
    if (opts === undefined && typeof iova === "number" && typeof len === "number" && len > 0 && len <= READ_CHUNK) {
      const at = numberIova(iova, len);
      if (at >= 0 && Number.isInteger(len)) {
        const off = this.memo.covered(memoTag(this.context(), 0, abi.ACCESS_READ), at, len);
        if (off >= 0) return { data: this.engine.bytes.slice(off, off + len), bytes: len };
      }
    }
    return super.read(iova, len, opts);
  }

  /** Device reads target.length bytes at iova into target. */
  override readInto(iova: Address, target: Uint8Array, opts?: DmaOptions): DmaResult {
    return this.single(iova, callerBytes(target, "readInto target"), abi.ACCESS_READ, opts);
  }

  /** Device writes bytes to memory at iova. */
  override write(iova: Address, bytes: Uint8Array, opts?: DmaOptions): DmaResult {
    return this.single(iova, callerBytes(bytes, "write bytes"), abi.ACCESS_WRITE, opts);
  }

  protected single(iova: Address, buffer: Uint8Array, base: number, opts?: DmaOptions, fresh = false): DmaResult {
    let access = base, pasid = 0;
    if (opts !== undefined) {
      const request = dmaRequest(opts, base);
      access = requestAccess(request);
      pasid = requestPasid(request);
    }
    // The common case first, kept small: the caller's own array (an array this
    // port just made is not on engine memory: no need to look, reading its
    // .buffer costs) at an IOVA below 2^53. The engine translates piece by
    // piece and this copies, once.
    if (fresh || buffer === this.lastCaller || this.callerArray(buffer)) {
      const at = numberIova(iova, buffer.length);
      if (at >= 0) return this.pieces(this.context(), pasid, access, at, buffer, fresh);
      return this.stagedSingle(iova, buffer, pasid, access);
    }
    return this.directSingle(iova, buffer, pasid, access);
  }

  /** Whether buffer is the caller's own (not on engine memory); the last such is remembered. */
  private callerArray(buffer: Uint8Array): boolean {
    if (this.engine.isDirect(buffer) >= 0) return false;
    this.lastCaller = buffer;
    return true;
  }

  /** The context the port's requests go through now. */
  private context(): number {
    return this.idCell[0] || this.contextId();
  }

  /** One transfer of the caller's array at an IOVA of 2^53 or more: through the staging area. */
  private stagedSingle(iova: Address, buffer: Uint8Array, pasid: number, access: number): DmaResult {
    const start = iovaOf(iova);
    if (start + BigInt(buffer.byteLength) > 1n << 64n) fail("EOVERFLOW", `dma: ${hex(start)} + ${buffer.byteLength} wraps past 2^64`);
    const r = this.staged(this.context(), [{ iova: start, length: buffer.byteLength, segment: 0 }], buffer, -1, pasid, access);
    if (r.interrupt) return { bytes: r.bytes, interrupt: r.interrupt };
    return r.fault ? { bytes: r.bytes, fault: r.fault } : { bytes: r.bytes };
  }

  /** One transfer of a buffer on engine memory: one engine call, which copies too. */
  private directSingle(iova: Address, buffer: Uint8Array, pasid: number, access: number): DmaResult {
    const direct = this.engine.isDirect(buffer);
    const start = iovaOf(iova);
    const id = this.context();
    const st = this.engine.wasm.dma(id, pasid, access, this.sourceId, start, buffer.byteLength, direct, this.pasidTable?.() ?? 0);
    if (st === abi.ST_OK) return completed(buffer.byteLength);
    if (st === abi.ERR_EOVERFLOW) fail("EOVERFLOW", `dma: ${hex(start)} + ${buffer.byteLength} wraps past 2^64`);
    if (st === abi.ST_INTERRUPT) return this.interrupt(buffer, this.engine.u32(abi.RES_BYTES), 0);
    const r = this.result(st, pasid, access, 1);
    return { bytes: r.bytes, fault: r.fault };
  }

  /**
   * A transfer between RAM and an array of the caller's: each piece is
   * translated and checked by the engine (dmaStep, the same piece logic as
   * its own copies), then copied here straight between the array and RAM.
   * A piece the engine said may be replayed (an IOTLB hit) is remembered, and
   * the same lookup again, while nothing that could change it has happened,
   * skips the engine (src/hitmemo.ts). No BigInt, no staging, nothing
   * allocated on a hit.
   */
  private pieces(id: number, pasid: number, access: number, at: number, buffer: Uint8Array, fresh: boolean): DmaResult {
    // The PASID table matters only to a PASID-tagged request. A request it
    // routes is not memoised: the table can change without the engine's TLB generation.
    const table = pasid === 0 ? 0 : this.pasidTable?.() ?? 0;
    const tag = table === 0 ? memoTag(id, pasid, access) : -1;
    const n = buffer.length;
    // Nothing to move: no lookup (a memo find counts the hit it replays).
    if (n === 0) return completed(0);
    // The common case first, kept small: the whole transfer is one piece the memo replays.
    const off = this.memo.covered(tag, at, n);
    if (off < 0) return this.piecesFrom(id, pasid, access, at, buffer, fresh, table, tag);
    // A whole array written is one set() when long enough (its native copy wins then).
    if ((access & abi.ACCESS_WRITE) !== 0 && n > SHORT_SET) this.engine.bytes.set(buffer, off);
    else copyPiece(this.engine, off, buffer, 0, n, (access & abi.ACCESS_WRITE) !== 0, fresh);
    return completed(n);
  }

  /** The transfer piece by piece. */
  private piecesFrom(id: number, pasid: number, access: number, at: number, buffer: Uint8Array, fresh: boolean, table: number, tag: number): DmaResult {
    const e = this.engine;
    const n = buffer.length;
    const toRam = (access & abi.ACCESS_WRITE) !== 0;
    const memo = this.memo;
    let done = 0;
    while (done < n) {
      const cur = at + done;
      const slot = memo.find(tag, cur);
      let off: number, len: number;
      if (slot >= 0) {
        off = memo.out(slot, cur);
        // To the end of the translation page (the slot's word), as the engine's piece would go.
        len = Math.min(n - done, memo.word(slot) - cur);
      } else {
        off = this.step(id, pasid, access, cur, n - done, table, tag);
        if (off < abi.PIECE_STATUS_LIMIT) return this.stopped(off, buffer, done, pasid, access);
        len = e.ctrl32[abi.RES_PIECE_LEN >> 2];
      }
      copyPiece(e, off, buffer, done, len, toRam, fresh);
      done += len;
    }
    return completed(n);
  }

  /**
   * The engine's piece at cur (dmaStep): its offset in linear memory, its
   * length in RES_PIECE_LEN; or why the transfer stops there (a status
   * below PIECE_STATUS_LIMIT). A piece the engine says may be replayed is
   * remembered under `tag` (-1: never).
   */
  private step(id: number, pasid: number, access: number, cur: number, want: number, table: number, tag: number): number {
    const e = this.engine;
    const off = e.wasm.dmaStep(id, pasid, access, this.sourceId, cur, want, table) >>> 0;
    if (off >= abi.PIECE_STATUS_LIMIT && tag >= 0) {
      const page = e.ctrl32[abi.RES_PIECE_PAGE >> 2];
      if (page !== 0) this.memo.record(tag, cur, off, pageEnd(cur, page));
    }
    return off;
  }

  /** A transfer that stopped after `done` bytes with status st: an interrupt, or a fault. */
  private stopped(st: number, buffer: Uint8Array, done: number, pasid: number, access: number): DmaResult {
    if (st === abi.ST_INTERRUPT) return this.interrupt(buffer, done, 0);
    return { bytes: done, fault: this.result(st, pasid, access, 1).fault };
  }

  /**
   * Runs pieces in batches that fit the staging area (segments split where a
   * batch's data would not fit). With a direct buffer only the segment table
   * is staged.
   */
  private staged(id: number, list: Piece[], buffer: Uint8Array, direct: number, pasid: number, access: number): SgResult {
    const e = this.engine;
    const toMemory = (access & abi.ACCESS_WRITE) !== 0;
    const segCount = list.length;
    let done = 0;
    let i = 0;
    let offsetInSeg = 0;
    while (i < segCount) {
      const batch: Piece[] = [];
      let bytes = 0;
      while (i < segCount && batch.length < STAGE_SEGS) {
        const seg = list[i];
        const left = seg.length - offsetInSeg;
        const room = direct >= 0 ? left : Math.min(left, this.stageDataSize - bytes);
        if (room === 0 && left > 0) break;
        batch.push({ iova: seg.iova + BigInt(offsetInSeg), length: room, segment: seg.segment });
        bytes += room;
        if (room === left) { i++; offsetInSeg = 0; } else { offsetInSeg += room; break; }
      }
      for (let k = 0; k < batch.length; k++) {
        const rec = e.staging + k * abi.SEG_SIZE;
        e.data.setBigUint64(rec + abi.SEG_IOVA, batch[k].iova, true);
        e.data.setBigUint64(rec + abi.SEG_LEN, BigInt(batch[k].length), true);
      }
      const bufPtr = direct >= 0 ? direct + done : this.stageData;
      if (direct < 0 && toMemory) e.bytes.set(buffer.subarray(done, done + bytes), this.stageData);
      const st = e.wasm.dmaSg(id, pasid, access, this.sourceId, e.staging, batch.length, bufPtr, direct >= 0 ? buffer.byteLength - done : bytes, this.pasidTable?.() ?? 0);
      const moved = e.u32(abi.RES_BYTES);
      if (direct < 0 && !toMemory) buffer.set(e.bytes.subarray(this.stageData, this.stageData + moved), done);
      done += moved;
      if (st === abi.ST_INTERRUPT) {
        const r = this.interrupt(buffer, done, 0);
        return { ...r, segment: batch[e.u32(abi.RES_SEGMENT)].segment };
      }
      if (st !== abi.ST_OK) {
        const r = this.result(st, pasid, access, segCount);
        return { bytes: done, segment: batch[e.u32(abi.RES_SEGMENT)].segment, fault: r.fault };
      }
    }
    return { bytes: done, segment: segCount };
  }

  /**
   * The write reached a doorbell after `done` bytes: the next (up to) 4 bytes
   * of the buffer are the MSI data, little-endian. The transfer ends there.
   */
  private interrupt(buffer: Uint8Array, done: number, base: number): DmaResult {
    const n = Math.min(4, buffer.byteLength - base - done);
    let data = 0;
    for (let k = n - 1; k >= 0; k--) data = data * 256 + buffer[base + done + k];
    const interrupt = { address: this.engine.u64(abi.RES_FAULT_ADDR), data };
    this.raise?.(interrupt);
    return { bytes: done + n, interrupt };
  }

  /** Reads the outcome of the last transfer from the control block. */
  private result(st: number, pasid: number, access: number, segments: number): SgResult {
    const e = this.engine;
    // A transfer moves less than 2^32 bytes, so the low word is the count.
    const bytes = e.u32(abi.RES_BYTES);
    if (st === abi.ST_OK) return { bytes, segment: segments };
    return {
      bytes,
      segment: e.u32(abi.RES_SEGMENT),
      fault: {
        reason: reasonName(st),
        address: e.u64(abi.RES_FAULT_ADDR),
        level: e.u32(abi.RES_LEVEL),
        stage: e.u32(abi.RES_STAGE) === 2 ? 2 : 1,
        pasid,
        access: accessFlags(access),
      },
    };
  }
}

/** An sg segment list (objects, or (iova, length) pairs in a BigUint64Array), checked: EINVAL or EOVERFLOW naming the segment. */
export function normalizeSegments(segments: SgSegments): Piece[] {
  const list: Piece[] = [];
  if (ArrayBuffer.isView(segments) && isInstance(segments, BigUint64Array)) {
    if (segments.length % 2 !== 0) fail("EINVAL", "sg: a BigUint64Array segment list holds (iova, length) pairs");
    for (let k = 0; k < segments.length; k += 2) list.push(piece(segments[k], segments[k + 1], k / 2));
  } else {
    checkList(segments, "sg segments").forEach((s, k) => {
      const seg = options(s, `sg segment ${k}`, ["iova", "length"] as const);
      list.push(piece(seg.iova as Address, seg.length as Address, k));
    });
  }
  return list;
}

function piece(iova: Address, length: Address, segment: number): Piece {
  const start = toU64(iova, `segment ${segment} iova`);
  const len = toLength(length, `segment ${segment} length`);
  if (start + BigInt(len) > 1n << 64n) fail("EOVERFLOW", `segment ${segment}: ${hex(start)} + ${len} wraps past 2^64`);
  return { iova: start, length: len, segment };
}
