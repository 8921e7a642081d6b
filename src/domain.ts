// A domain: one translation context the IOTLB tags entries with, over a page
// table. Translations go through the IOTLB; invalidating after a change to
// the table is the caller's job, as with a real IOMMU.
import { toU64, lastOf, requireAligned, hex, PAGE_SIZE, type Address } from "./addr.js";
import { accessBits, permsOf, reasonName, type Access, type FaultReason, type Perms } from "./access.js";
import { fail } from "./errors.js";
import { setContext, type DomainFlags, type PageTableOptions } from "./format.js";
import { DmaPort, checkPasid } from "./dma.js";
import { PageTable, probeWalk, type WalkResult } from "./pagetable.js";
import * as abi from "./engine/abi.js";
import type { Engine } from "./engine/engine.js";

export interface TranslateOptions {
  pasid?: number;
}

export type Translation =
  | { hpa: bigint; pageSize: bigint; perms: Perms; /** false when the output lies outside RAM (a DMA there faults) */ inRam: boolean; fault?: undefined }
  | { fault: { reason: FaultReason; level: number; address: bigint }; hpa?: undefined };

export interface InvalidateOptions {
  /** Only this PASID's entries (default: every PASID of the domain). */
  pasid?: number;
  /** Start of a page range (4 KiB aligned); without it the whole domain (or PASID) is invalidated. */
  iova?: Address;
  /** Number of 4 KiB pages in the range (default 1). */
  npages?: Address;
  /** Only leaf entries changed. The IOTLB caches only leaf translations, so this narrows nothing. */
  leaf?: boolean;
}

export type DomainOptions = DomainFlags & ({ pageTable: PageTable } | PageTableOptions);

const BATCH_ITEM_BYTES = 17; // iova + hpa + status

export class Domain {
  readonly id: number;
  readonly pageTable: PageTable;
  readonly dma: DmaPort;
  private readonly ownsTable: boolean;
  private destroyed = false;

  constructor(private readonly engine: Engine, makeTable: (o: PageTableOptions) => PageTable, options: DomainOptions) {
    if ("pageTable" in options && options.pageTable) {
      this.pageTable = options.pageTable;
      this.ownsTable = false;
    } else {
      this.pageTable = makeTable(options as PageTableOptions);
      this.ownsTable = true;
    }
    try {
      this.id = engine.allocContextId();
    } catch (e) {
      if (this.ownsTable) this.pageTable.destroy();
      throw e;
    }
    setContext(engine.wasm, this.id, this.pageTable.format, options, this.pageTable.root);
    this.dma = new DmaPort(engine, () => this.liveId(), 0);
  }

  private liveId(): number {
    if (this.destroyed) fail("ENODEV", `domain ${this.id} was destroyed`);
    return this.id;
  }

  /** Translates one address through the IOTLB (a miss walks and fills; a fault is recorded). */
  translate(iova: Address, access: Access = "read", opts: TranslateOptions = {}): Translation {
    const id = this.liveId();
    const i = toU64(iova, "iova");
    const st = this.engine.wasm.translate(id, checkPasid(opts.pasid), i, accessBits(access), 0);
    const e = this.engine;
    if (st !== abi.ST_OK) return { fault: { reason: reasonName(st), level: e.u32(abi.RES_LEVEL), address: i } };
    const hpa = e.u64(abi.RES_HPA);
    return { hpa, pageSize: 1n << BigInt(e.u32(abi.RES_SIZE_LOG)), perms: permsOf(e.u32(abi.RES_PERMS)), inRam: hpa < e.ramSize };
  }

  /**
   * Translates iovas[i] into out[i] (0 on a fault) with status[i] (0, or the
   * fault reason code); returns the number of faults. Arrays from
   * host.createTranslationBatch() are used in place; others are staged.
   */
  translateBatch(iovas: BigUint64Array, access: Access, out: BigUint64Array, status: Uint8Array, opts: TranslateOptions = {}): number {
    const id = this.liveId();
    const bits = accessBits(access);
    const pasid = checkPasid(opts.pasid);
    const n = iovas.length;
    if (out.length < n || status.length < n) fail("EINVAL", `translateBatch: out and status need ${n} entries`);
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
    return probeWalk(this.engine, this.liveId(), this.pageTable.format.levels, toU64(iova, "iova"), accessBits(access));
  }

  /** Invalidates the IOTLB: the whole domain, one PASID, or a page range. */
  invalidate(opts: InvalidateOptions = {}): void {
    const id = this.liveId();
    const w = this.engine.wasm;
    const pasid = opts.pasid === undefined ? undefined : checkPasid(opts.pasid);
    if (opts.iova === undefined) {
      if (opts.npages !== undefined) fail("EINVAL", "invalidate: npages without iova");
      if (pasid === undefined) w.iotlbFlushContext(id);
      else w.iotlbFlushPasid(id, pasid);
      return;
    }
    const first = toU64(opts.iova, "iova");
    requireAligned(first, PAGE_SIZE, "invalidate iova");
    const npages = toU64(opts.npages ?? 1, "npages");
    if (npages === 0n) fail("EINVAL", "invalidate: npages is zero");
    const size = npages * PAGE_SIZE;
    if (size > 1n << 64n) fail("EOVERFLOW", `invalidate: ${npages} pages is more than the address space`);
    const last = lastOf(first, size, `invalidate ${hex(first)}`);
    w.iotlbFlushRange(id, pasid ?? 0, pasid === undefined ? 1 : 0, first, last);
  }

  /** Invalidates the domain's IOTLB entries and releases it (and a page table it created). */
  destroy(): void {
    if (this.destroyed) return;
    this.engine.releaseContextId(this.id);
    this.destroyed = true;
    if (this.ownsTable) this.pageTable.destroy();
  }
}
