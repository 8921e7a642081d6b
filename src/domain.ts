// A domain: one translation context the IOTLB tags entries with, over a page
// table. Translations go through the IOTLB; invalidating after a change to
// the table is the caller's job, as with a real IOMMU.
import { toU64, type Address } from "./addr.js";
import { accessBits, permsOf, reasonName, type Access, type FaultReason, type Perms } from "./access.js";
import { fail } from "./errors.js";
import { domainParts, invalidateScope, translatePasid, batchArrays, type InvalidateOptions } from "./domainargs.js";
import { contextFlags, setContext, type DomainFlags, type PageTableOptions, type ResolvedFormat } from "./format.js";
import { DmaPort, numberAddress } from "./dma.js";
import { HitMemo, memoTag } from "./hitmemo.js";
import { PageTable, probeWalk, type WalkResult } from "./pagetable.js";
import * as abi from "./engine/abi.js";
import type { Engine } from "./engine/engine.js";

export interface TranslateOptions {
  pasid?: number;
}

export type Translation =
  | { hpa: bigint; pageSize: bigint; perms: Perms; /** false when the output lies outside RAM (a DMA there faults) */ inRam: boolean; fault?: undefined }
  | { fault: { reason: FaultReason; level: number; address: bigint; stage: 1 | 2 }; hpa?: undefined };

export type { InvalidateOptions } from "./domainargs.js";

/**
 * A nested domain: a stage-1 table over another domain as stage 2 (a
 * single-stage vtd-sl or arm64 stage-2 domain). Results have both stages'
 * permissions and the smaller page size; faults say which stage failed;
 * the IOTLB entries die with any invalidation of stage 2.
 *
 * - x86-64 or arm64 stage 1: the table lives in guest memory (root and table
 *   pointers are GPAs) and every stage-1 table read is translated through
 *   stage 2. `root` is required.
 * - ggtt (a GPU's global GTT): the table is host-physical, as the GPU reads
 *   its GTT from host memory, and its entries hold IOVAs; only their output
 *   goes through stage 2. The domain makes the table from the options (or
 *   adopts `root`, an HPA, as a page table does) and `domain.pageTable.map(gma,
 *   iova, size, prot)` fills it.
 */
export interface NestedDomainOptions extends PageTableOptions {
  stage2: Domain;
  /** The stage-1 root table: a GPA (4 KiB aligned) for a table in guest memory, required; an HPA, optional, for ggtt. */
  root?: Address;
}

export type DomainOptions = DomainFlags & ({ pageTable: PageTable } | PageTableOptions | NestedDomainOptions);

const BATCH_ITEM_BYTES = 17; // iova + hpa + status
/** Page sizes by log2, made once: a translation's result reuses them. */
const PAGE_SIZES = Array.from({ length: 64 }, (_, log) => 1n << BigInt(log));
const pageSizeOf = (log: number): bigint => PAGE_SIZES[log];

// A number below 2^53 becomes a bigint through these (BigInt() costs half as much again).
const SCRATCH_U64 = new BigUint64Array(1);
const SCRATCH_U32 = new Uint32Array(SCRATCH_U64.buffer);
function bigintOf(n: number): bigint {
  const lo = n >>> 0;
  SCRATCH_U32[0] = lo;
  SCRATCH_U32[1] = (n - lo) / 4294967296;
  return SCRATCH_U64[0];
}

export class Domain {
  readonly id: number;
  readonly dma: DmaPort;
  /** The stage-1 format (for a nested domain) or the page table's. */
  readonly format: ResolvedFormat;
  /** The root table: an HPA, or a GPA for a nested domain whose stage 1 lives in guest memory. */
  readonly root: bigint;
  /** The stage-2 domain of a nested domain. */
  readonly stage2: Domain | undefined;
  private readonly table: PageTable | undefined;
  private readonly ownsTable: boolean;
  private destroyed = false;
  /** The id while the domain lives, 0 after: what its DMA port reads. */
  private readonly idCell = new Int32Array(1);
  /** Translation hits this domain may replay (src/hitmemo.ts). */
  private readonly memo: HitMemo;
  private readonly ramBytes: number;
  /** Nested domains over this one: a stage 2 cannot go while they use it (iommufd refuses to destroy a referenced parent). */
  private nestedUsers = 0;

  /** @internal */
  constructor(private readonly engine: Engine, makeTable: (o: PageTableOptions) => PageTable, options: DomainOptions) {
    const parts = domainParts<PageTable, Domain>(options, makeTable);
    ({ table: this.table, ownsTable: this.ownsTable, format: this.format, root: this.root, stage2: this.stage2 } = parts);
    let contextBits: number;
    try {
      contextBits = contextFlags(this.format, options);
      this.id = engine.allocContextId();
    } catch (e) {
      if (this.ownsTable) this.table!.destroy();
      throw e;
    }
    setContext(engine.wasm, this.id, this.format, contextBits, this.root);
    this.idCell[0] = this.id;
    if (this.stage2) {
      engine.wasm.contextSetNested(this.id, this.stage2.id, parts.physTables ? 1 : 0);
      this.stage2.nestedUsers++;
    }
    // The port reads the id from a cell while the domain lives (destroy zeroes it, and liveId then throws ENODEV).
    this.dma = new DmaPort(engine, () => this.liveId(), 0, undefined, undefined, this.idCell);
    this.memo = new HitMemo(engine);
    this.ramBytes = Number(engine.ramSize);
  }

  /** The page table the domain translates with (a nested domain's stage 1 in guest memory has none: EOPNOTSUPP; a ggtt's over stage 2 is its host-physical GTT). */
  get pageTable(): PageTable {
    if (!this.table) fail("EOPNOTSUPP", "a nested domain's stage-1 table lives in guest memory; it has no host page-table builder");
    return this.table;
  }

  /** @internal */
  liveId(): number {
    if (this.destroyed) fail("ENODEV", `domain ${this.id} was destroyed`);
    return this.id;
  }

  /** Translates one address through the IOTLB (a miss walks and fills; a fault is recorded). */
  translate(iova: Address, access: Access = "read", opts?: TranslateOptions): Translation {
    const id = this.liveId();
    const bits = accessBits(access);
    const pasid = translatePasid(opts);
    const at = numberAddress(iova);
    if (at < 0) {
      // At or above 2^53: a bigint crosses as an i64.
      const i = toU64(iova, "iova");
      if (this.engine.wasm.translate(id, pasid, i, bits, 0) !== abi.ST_OK) return this.fault(i);
      const c = this.engine.ctrl32;
      const hpa = this.engine.u64(abi.RES_HPA);
      return { hpa, pageSize: pageSizeOf(c[abi.RES_SIZE_LOG >> 2]), perms: permsOf(c[abi.RES_PERMS >> 2]), inRam: hpa < this.engine.ramSize };
    }
    const tag = memoTag(id, pasid, bits);
    const memo = this.memo;
    const slot = memo.find(tag, at);
    let hpa: number, sizeLog: number, perms: number;
    if (slot >= 0) {
      hpa = memo.out(slot, at);
      const info = memo.word(slot);
      sizeLog = info & 63;
      perms = info >>> 6;
    } else {
      hpa = this.translateNumber(id, pasid, bits, at, tag);
      if (hpa < 0) return this.fault(bigintOf(at));
      const c = this.engine.ctrl32;
      sizeLog = c[abi.RES_SIZE_LOG >> 2];
      perms = c[abi.RES_PERMS >> 2];
    }
    return { hpa: bigintOf(hpa), pageSize: pageSizeOf(sizeLog), perms: permsOf(perms), inRam: hpa < this.ramBytes };
  }

  /** The fault the last translation recorded, as translate() reports it. */
  private fault(address: bigint): Translation {
    const e = this.engine;
    return { fault: { reason: reasonName(e.u32(abi.RES_STATUS)), level: e.u32(abi.RES_LEVEL), address, stage: e.u32(abi.RES_STAGE) === 2 ? 2 : 1 } };
  }

  /**
   * The HPA iova translates to through the IOTLB, as a number, or -1 when it
   * faults (the fault is recorded as translate() records it). The per-access
   * call for a device model: with a number iova nothing is allocated and no
   * BigInt is made (HPAs are below 2^52, exact as numbers).
   */
  translateHpa(iova: Address, access: Access = "read", opts?: TranslateOptions): number {
    const id = this.liveId();
    const bits = accessBits(access);
    const pasid = translatePasid(opts);
    const at = numberAddress(iova);
    if (at < 0) {
      const i = toU64(iova, "iova");
      return this.engine.wasm.translate(id, pasid, i, bits, 0) === abi.ST_OK ? Number(this.engine.u64(abi.RES_HPA)) : -1;
    }
    const tag = memoTag(id, pasid, bits);
    const slot = this.memo.find(tag, at);
    return slot >= 0 ? this.memo.out(slot, at) : this.translateNumber(id, pasid, bits, at, tag);
  }

  /**
   * Translates iova (below 2^53) in the engine: its HPA, or -1 on a fault
   * (described in the control block). A hit is remembered, with its page size
   * and permissions as the slot's word, so the next one skips the engine
   * (src/hitmemo.ts).
   */
  private translateNumber(id: number, pasid: number, bits: number, at: number, tag: number): number {
    const e = this.engine;
    const generation = e.generation[0];
    const hpa = e.wasm.translateNumber(id, pasid, at, bits, 0);
    // A translation that left the generation alone was a hit (a miss fills, and a fill bumps it).
    if (hpa >= 0 && e.generation[0] === generation) {
      const c = e.ctrl32;
      const sizeLog = c[abi.RES_SIZE_LOG >> 2];
      this.memo.record(tag, at, hpa, c[abi.RES_PERMS >> 2] * 64 + sizeLog);
    }
    return hpa;
  }

  /**
   * Translates iovas[i] into out[i] (0 on a fault) with status[i] (0, or the
   * fault reason code); returns the number of faults. Arrays from
   * host.createTranslationBatch() are used in place; others are staged.
   */
  translateBatch(iovas: BigUint64Array, access: Access, out: BigUint64Array, status: Uint8Array, opts?: TranslateOptions): number {
    const id = this.liveId();
    const bits = accessBits(access);
    const pasid = translatePasid(opts);
    const n = batchArrays(iovas, out, status);
    const e = this.engine;
    const inI = e.isDirect(iovas), inO = e.isDirect(out), inS = e.isDirect(status);
    if (inI >= 0 && inO >= 0 && inS >= 0 && inI % 8 === 0 && inO % 8 === 0) {
      return e.wasm.translateBatch(id, pasid, bits, 0, inI, inO, inS, n);
    }
    const chunk = Math.floor(e.stagingSize / BATCH_ITEM_BYTES / 8) * 8;
    const sIova = e.staging, sOut = e.staging + chunk * 8, sStatus = e.staging + chunk * 16;
    let faults = 0;
    for (let start = 0; start < n; start += chunk) {
      const count = Math.min(chunk, n - start);
      new BigUint64Array(e.buffer, sIova, count).set(iovas.subarray(start, start + count));
      faults += e.wasm.translateBatch(id, pasid, bits, 0, sIova, sOut, sStatus, count);
      out.set(new BigUint64Array(e.buffer, sOut, count), start);
      status.set(new Uint8Array(e.buffer, sStatus, count), start);
    }
    return faults;
  }

  /** A probe walk with this domain's request rules: no IOTLB fill, no A/D update. */
  walk(iova: Address, access: Access = "read"): WalkResult {
    return probeWalk(this.engine, this.liveId(), this.format.levels, toU64(iova, "iova"), accessBits(access));
  }

  /** Invalidates the IOTLB: the whole domain, one PASID, or a page range. */
  invalidate(opts: InvalidateOptions = {}): void {
    const id = this.liveId();
    const w = this.engine.wasm;
    const { pasid, range } = invalidateScope(opts);
    if (range) w.iotlbFlushRange(id, pasid ?? 0, pasid === undefined ? 1 : 0, range.first, range.last);
    else if (pasid === undefined) w.iotlbFlushContext(id);
    else w.iotlbFlushPasid(id, pasid);
  }

  /** Invalidates the domain's IOTLB entries and releases it (and a page table it created). */
  destroy(): void {
    if (this.destroyed) return;
    if (this.nestedUsers > 0) fail("EBUSY", `domain ${this.id} is the stage 2 of ${this.nestedUsers} nested domain(s): destroy them first`);
    if (this.stage2) this.stage2.nestedUsers--;
    this.idCell[0] = 0;
    this.engine.releaseContextId(this.id);
    this.destroyed = true;
    if (this.ownsTable) this.table!.destroy();
  }
}
