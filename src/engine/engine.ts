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

export class Engine {
  readonly wasm: EngineExports;
  readonly buffer: ArrayBuffer;
  readonly bytes: Uint8Array;
  readonly data: DataView;
  readonly ctrl: number;
  /** The control block as u32s (index = offset / 4): cheaper to read than the DataView on a per-call path. */
  readonly ctrl32: Uint32Array;
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
    this.ctrl = wasm.controlBlock();
    this.ctrl32 = new Uint32Array(this.buffer, this.ctrl, abi.CTRL_SIZE >>> 2);
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
