// One engine instance: the WASM exports, views on its memory (which never
// grows after init, so the views stay valid), the layout, and context ids.
import * as abi from "./abi.js";
import { instantiateEngine, type EngineExports } from "./load.js";
import { fail } from "../errors.js";

export interface EngineOptions {
  ramSize: bigint;
  iotlbSets: number;
  iotlbWays: number;
  faultRingSize: number;
  arenaSize: number;
  /** Nodes in the PASID trees' pool (default PASID_NODES_DEFAULT). */
  pasidNodes?: number;
}

/** Views kept by Engine.view. */
const VIEWS = 1024;

export class Engine {
  readonly wasm: EngineExports;
  readonly buffer: ArrayBuffer;
  readonly bytes: Uint8Array;
  readonly data: DataView;
  /** The memory as 64- and 32-bit words (short aligned copies, src/dma.ts). */
  readonly longs: BigInt64Array;
  readonly words: Int32Array;
  readonly ctrl: number;
  /** The control block as u32s (index = offset / 4): cheaper to read than the DataView on a per-call path. */
  readonly ctrl32: Uint32Array;
  /** The engine's TLB generation (TLB_GENERATION): while it holds, every IOTLB lookup answers as it did. */
  readonly generation: Float64Array;
  /** IOTLB hits replayed by hit memos (src/hitmemo.ts) and not yet added to the engine's counter: see counters(). */
  readonly replayedHits = new Float64Array(1);
  readonly ramBase: number;
  readonly ramSize: bigint;
  readonly staging: number;
  readonly stagingSize: number;
  readonly arena: number;
  readonly arenaSize: number;
  private readonly freeIds: number[] = [];
  private lastView: ArrayBufferView | undefined;
  private lastDirect = -1;
  private nextId = 1;

  private constructor(wasm: EngineExports) {
    this.wasm = wasm;
    this.buffer = wasm.memory.buffer;
    this.bytes = new Uint8Array(this.buffer);
    this.data = new DataView(this.buffer);
    this.longs = new BigInt64Array(this.buffer);
    this.words = new Int32Array(this.buffer);
    this.ctrl = wasm.controlBlock();
    this.ctrl32 = new Uint32Array(this.buffer, this.ctrl, abi.CTRL_SIZE >>> 2);
    this.generation = new Float64Array(this.buffer, this.ctrl + abi.TLB_GENERATION, 1);
    this.ramBase = this.u32(abi.LAYOUT_RAM_BASE);
    this.ramSize = this.u64(abi.LAYOUT_RAM_SIZE);
    this.staging = this.u32(abi.LAYOUT_STAGING);
    this.stagingSize = this.u32(abi.LAYOUT_STAGING_SIZE);
    this.arena = this.u32(abi.LAYOUT_ARENA);
    this.arenaSize = this.u32(abi.LAYOUT_ARENA_SIZE);
  }

  static async create(options: EngineOptions): Promise<Engine> {
    const wasm = await instantiateEngine();
    const setsLog = Math.log2(options.iotlbSets);
    const faultLog = Math.log2(options.faultRingSize);
    const status = wasm.init(options.ramSize, setsLog, options.iotlbWays, faultLog, options.arenaSize, options.pasidNodes ?? abi.PASID_NODES_DEFAULT);
    if (status !== 0) fail("ENOMEM", `cannot lay out ${options.ramSize} bytes of RAM plus engine state in one WebAssembly.Memory`);
    return new Engine(wasm);
  }

  /** Control-block fields. */
  u32(offset: number): number { return this.data.getUint32(this.ctrl + offset, true); }
  u64(offset: number): bigint { return this.data.getBigUint64(this.ctrl + offset, true); }
  setU32(offset: number, value: number): void { this.data.setUint32(this.ctrl + offset, value, true); }

  /**
   * Publishes the IOTLB counters to the control block (CNT_*), the replayed
   * hits added first: the one way to read them, so they are the engine's own.
   */
  counters(): void {
    const replayed = this.replayedHits[0];
    if (replayed !== 0) {
      this.wasm.iotlbAddHits(replayed);
      this.replayedHits[0] = 0;
    }
    this.wasm.iotlbCounters();
  }

  /**
   * A view of len bytes of this memory at off, for a long copy out of RAM:
   * kept (one per 4 KiB page of off, the last length asked), so a device
   * model that reads the same buffer again makes no new view.
   */
  view(off: number, len: number): Uint8Array {
    const i = (off >>> 12) & (VIEWS - 1);
    const v = this.views[i];
    if (v !== undefined && this.viewAt[2 * i] === off && this.viewAt[2 * i + 1] === len) return v;
    const made = new Uint8Array(this.buffer, off, len);
    this.views[i] = made;
    this.viewAt[2 * i] = off;
    this.viewAt[2 * i + 1] = len;
    return made;
  }
  private readonly views: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(VIEWS).fill(undefined);
  private readonly viewAt = new Float64Array(2 * VIEWS);

  /** Linear-memory offset of an HPA already checked against RAM. */
  ramOffset(hpa: bigint): number { return this.ramBase + Number(hpa); }

  /** The byte offset of a view on this engine's memory, or -1 when it is not one. */
  offsetOf(view: ArrayBufferView): number {
    return view.buffer === this.buffer ? view.byteOffset : -1;
  }

  /**
   * The offset to hand the engine for a view on its memory above the engine
   * state (the buffer arena or RAM), or -1 when the view must be staged.
   */
  isDirect(view: ArrayBufferView): number {
    // Reading .buffer/.byteOffset of a view on WebAssembly memory costs tens
    // of ns; callers tend to reuse one buffer, so remember the last answer
    // (a view's buffer and offset never change: this memory never grows).
    if (view === this.lastView) return this.lastDirect;
    const off = this.offsetOf(view);
    this.lastView = view;
    this.lastDirect = off >= this.arena ? off : -1;
    return this.lastDirect;
  }

  allocContextId(): number {
    const id = this.freeIds.pop() ?? this.nextId;
    if (id === this.nextId) {
      if (id >= abi.MAX_CONTEXTS) fail("ENOSPC", `all ${abi.MAX_CONTEXTS - 1} page-table contexts are in use`);
      this.nextId++;
    }
    return id;
  }

  releaseContextId(id: number): void {
    this.wasm.contextDestroy(id);
    this.freeIds.push(id);
  }
}
