// A domain of the twin: a context the IOTLB tags entries with, over a page
// table. Translations go through the IOTLB; invalidation is the caller's job.
import * as abi from "../../src/engine/abi.js";
import type { Access, Address, DomainFlags, InvalidateOptions, PageTableOptions, Translation, TranslateOptions, WalkResult } from "../../src/index.js";
import { accessBits, batchArrays, domainParts, fail, invalidateScope, permsOf, reasonName, toU64, translatePasid } from "./args.js";
import { NaiveDmaPort } from "./dma.js";
import { NaivePageTable, probeWalk, releaseContext, type NaiveCore } from "./pagetable.js";
import { contextFlags, type ResolvedFormat } from "../../src/format.js";
import type { Translator } from "./translate.js";

/** A nested domain of the twin: a stage-1 table in guest memory, or a host-physical ggtt, over a stage-2 domain (see the facade's Domain). */
export interface NaiveNestedOptions extends PageTableOptions { stage2: NaiveDomain; root?: Address }

export type NaiveDomainOptions = DomainFlags & ({ pageTable: NaivePageTable } | PageTableOptions | NaiveNestedOptions);

export class NaiveDomain {
  readonly id: number;
  readonly dma: NaiveDmaPort;
  readonly format: ResolvedFormat;
  readonly root: bigint;
  readonly stage2: NaiveDomain | undefined;
  private readonly table: NaivePageTable | undefined;
  private readonly ownsTable: boolean;
  private destroyed = false;
  /** Nested domains over this one: a stage 2 cannot go while they use it (iommufd refuses to destroy a referenced parent). */
  private nestedUsers = 0;

  constructor(private readonly core: NaiveCore, private readonly translator: Translator, isDirect: (view: ArrayBufferView) => boolean,
    makeTable: (o: PageTableOptions) => NaivePageTable, options: NaiveDomainOptions) {
    const parts = domainParts<NaivePageTable, NaiveDomain>(options, makeTable);
    ({ table: this.table, ownsTable: this.ownsTable, format: this.format, root: this.root, stage2: this.stage2 } = parts);
    let contextBits: number;
    try {
      contextBits = contextFlags(this.format, options);
      this.id = core.contexts.alloc();
    } catch (e) {
      if (this.ownsTable) this.table!.destroy();
      throw e;
    }
    core.contexts.set(this.id, this.format, contextBits, this.root);
    if (this.stage2) {
      core.contexts.setNested(this.id, this.stage2.id, parts.physTables);
      this.stage2.nestedUsers++;
    }
    this.dma = new NaiveDmaPort(translator, isDirect, () => this.liveId(), 0, core.doorbell);
  }

  get pageTable(): NaivePageTable {
    if (!this.table) fail("EOPNOTSUPP", "a nested domain's stage-1 table lives in guest memory; it has no host page-table builder");
    return this.table;
  }

  /** @internal */
  liveId(): number {
    if (this.destroyed) fail("ENODEV", `domain ${this.id} was destroyed`);
    return this.id;
  }

  translate(iova: Address, access: Access = "read", opts?: TranslateOptions): Translation {
    const id = this.liveId();
    const i = toU64(iova, "iova");
    const pasid = translatePasid(opts);
    const r = this.translator.translate(id, pasid, i, accessBits(access), 0);
    if (!("hpa" in r)) return { fault: { reason: reasonName(r.status), level: r.level, address: i, stage: "stage" in r && r.stage === 2 ? 2 : 1 } };
    return { hpa: r.hpa, pageSize: 1n << BigInt(r.sizeLog), perms: permsOf(r.perms), inRam: r.hpa < this.core.ram.size };
  }

  translateHpa(iova: Address, access: Access = "read", opts?: TranslateOptions): number {
    const id = this.liveId();
    const bits = accessBits(access);
    const pasid = translatePasid(opts);
    const r = this.translator.translate(id, pasid, toU64(iova, "iova"), bits, 0);
    return "hpa" in r ? Number(r.hpa) : -1;
  }

  translateBatch(iovas: BigUint64Array, access: Access, out: BigUint64Array, status: Uint8Array, opts?: TranslateOptions): number {
    const id = this.liveId();
    const bits = accessBits(access);
    const pasid = translatePasid(opts);
    const n = batchArrays(iovas, out, status);
    let faults = 0;
    for (let k = 0; k < n; k++) {
      const r = this.translator.translate(id, pasid, iovas[k], bits, 0);
      out[k] = "hpa" in r ? r.hpa : 0n;
      status[k] = r.status;
      if (r.status !== abi.ST_OK) faults++;
    }
    return faults;
  }

  walk(iova: Address, access: Access = "read"): WalkResult {
    return probeWalk(this.core, this.liveId(), this.format.levels, toU64(iova, "iova"), accessBits(access));
  }

  invalidate(opts: InvalidateOptions = {}): void {
    const id = this.liveId();
    const iotlb = this.core.iotlb;
    const { pasid, range } = invalidateScope(opts);
    if (range) iotlb.flushRange(id, pasid, range.first, range.last);
    else if (pasid === undefined) iotlb.flushContext(id);
    else iotlb.flushPasid(id, pasid);
  }

  destroy(): void {
    if (this.destroyed) return;
    if (this.nestedUsers > 0) fail("EBUSY", `domain ${this.id} is the stage 2 of ${this.nestedUsers} nested domain(s): destroy them first`);
    if (this.stage2) this.stage2.nestedUsers--;
    releaseContext(this.core, this.id);
    this.destroyed = true;
    if (this.ownsTable) this.table!.destroy();
  }
}
