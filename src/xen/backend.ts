// A driver domain's IOMMU table (BFN → MFN) and the calls that put other VMs'
// memory in it: delegated mapping of a served VM's frames, grant mapping,
// unmap, query, and narrower mappers for privilege separation. The backend
// names guest frames (VM, GFN) and bus frames; it never sees an MFN.
//
// The table starts as the backend's own memory 1:1 (BFN = GFN) and holds
// nothing else until a call here adds it ("strict" IOMMU tables). Every
// removal invalidates the IOTLB before it returns.
import { fail } from "../errors.js";
import { bool, field, integer, list, options, perCallOptions } from "../args.js";
import { toU64, type Address } from "../addr.js";
import * as abi from "../engine/abi.js";
import { LiveMappings } from "../dmaapi/live.js";
import type { XenContext, XenEnv } from "./env.js";
import { RO, RW } from "./p2m.js";
import type { Grant } from "./grants.js";
import type { Vm } from "./vm.js";
import type { DeviceFrame } from "../shadow/mapper.js";

/** One delegated page of a backend's table, as query() and mappings() tell it (never an MFN). */
export interface ForeignMapping {
  /** The bus frame the backend's devices use. */
  bfn: bigint;
  /** The id of the VM whose memory it is. */
  vm: number;
  gfn: bigint;
  write: boolean;
  /** The grant it was mapped through (mapGrant), if any. */
  gref?: number;
}

export interface ForeignMapRequest {
  /** First bus frame. */
  bfn: Address;
  /** The served VM (or its id). */
  vm: Vm | number;
  /** First guest frame of that VM. */
  gfn: Address;
  /** Pages, default 1. */
  count?: number;
  /** Writable by the device; default false. */
  write?: boolean;
}

export interface GrantMapRequest {
  bfn: Address;
  /** The VM that granted (or its id). */
  vm: Vm | number;
  gref: number;
  /** Default false; a read-only grant refuses true (EPERM). */
  write?: boolean;
}

export interface ForeignUnmapRequest {
  bfn: Address;
  /** Pages, default 1. */
  count?: number;
}

export interface RestrictOptions {
  /** Ids (or VMs) it may map: each must be served by this backend now. */
  vms: readonly (Vm | number)[];
  /** Pages it may hold mapped at once (ENOSPC beyond); default unlimited. */
  maxPages?: number;
}

/** What a backend's table asks of the hypervisor. */
export interface XenCore {
  /** A live VM named by object or id (EINVAL for neither; EPERM for no such live VM: nothing to be served). */
  resolve(vm: unknown, what: string): Vm;
  isServed(backend: Vm, vm: Vm): boolean;
}

/** A page in the table: whose frame, and who put it there. */
interface Entry {
  vm: Vm;
  gfn: number;
  write: boolean;
  grant: Grant | undefined;
  by: RestrictedMapper | undefined;
}

const MAP_KEYS = ["bfn", "vm", "gfn", "count", "write"] as const;
const UNMAP_KEYS = ["bfn", "count"] as const;

/** Pages per call: a count is checked against this before anything is walked. */
const MAX_COUNT = 0x40000;

export class BackendIommu {
  /** @internal Delegated pages by BFN (a map/unmap cycle sets and deletes one: LiveMappings takes that churn). */
  readonly entries = new LiveMappings<Entry>();
  /** Fresh pages of the backend's own at BFNs above its memory (a PPGTT shadow's tables), by BFN: their HPAs. */
  private readonly frames = new Map<number, bigint>();
  private readonly bfnLimit: number;
  private alive = true;

  /** @internal */
  constructor(
    private readonly env: XenEnv<unknown>,
    private readonly core: XenCore,
    /** The backend VM whose table this is. */
    readonly owner: Vm,
    /** @internal */
    readonly context: XenContext,
    /** BFNs below this are the backend's own 1:1 memory (or all of RAM, for the exposeMfn baseline). */
    private readonly ownBfns: number,
  ) {
    this.bfnLimit = 2 ** (env.inputBits - 12);
  }

  /** @internal The context id the devices' DMA goes through (0 once destroyed). */
  get contextId(): number { return this.alive ? this.context.id : 0; }

  /**
   * Maps `count` pages of a served VM's memory at bus frames bfn.. . All or
   * nothing. EPERM: vm not served by this backend, or the backend itself;
   * EINVAL: a GFN beyond the VM's memory, a BFN beyond the IOMMU's address
   * width; EEXIST: a BFN in use; ENOMEM: no frame for the table.
   */
  map(request: ForeignMapRequest): bigint {
    const r = this.mapArgs(request, "map");
    if (r.vm === this.owner) fail("EPERM", `map: VM ${r.vm.id} is the backend itself (its memory is already at BFN = GFN)`);
    if (!this.core.isServed(this.owner, r.vm)) fail("EPERM", `map: VM ${r.vm.id} is not served by backend ${this.owner.id}`);
    return this.place(r.bfn, r.vm, r.gfn, r.count, r.write, undefined, undefined);
  }

  /**
   * Maps the page a grant names at bus frame bfn (no serve needed: the grant
   * is the guest's consent). ENOENT: no such grant; EPERM: granted to another
   * domain, or write on a read-only grant; EINVAL, EEXIST, ENOMEM as map.
   */
  mapGrant(request: GrantMapRequest): bigint {
    const o = options(request, "mapGrant request", ["bfn", "vm", "gref", "write"] as const);
    const vm = this.core.resolve(o.vm, "mapGrant: vm");
    const gref = integer(o.gref, "mapGrant: gref", 0, 0xffffffff);
    const write = bool(o.write, "mapGrant: write", false);
    const bfn = this.bfnOf(o.bfn, "mapGrant");
    this.live();
    const grant = vm.grants.get(gref);
    if (grant === undefined) fail("ENOENT", `mapGrant: VM ${vm.id} has no grant ${gref}`);
    if (grant.to !== this.owner) fail("EPERM", `mapGrant: grant ${gref} of VM ${vm.id} is for VM ${grant.to.id}, not ${this.owner.id}`);
    if (write && grant.readOnly) fail("EPERM", `mapGrant: grant ${gref} of VM ${vm.id} is read-only`);
    return this.place(bfn, vm, grant.gfn, 1, write, grant, undefined);
  }

  /** Unmaps the delegated pages in [bfn, bfn + count) (the backend's own memory is EINVAL); the pages unmapped. */
  unmap(request: ForeignUnmapRequest): number {
    const { bfn, count } = this.unmapArgs(request);
    this.live();
    return this.remove(bfn, count, undefined);
  }

  /** What bus frame bfn holds: the VM and guest frame (never an MFN); undefined for none or the backend's own memory. */
  query(bfn: Address): ForeignMapping | undefined {
    const b = this.bfnOf(bfn, "query");
    const e = this.entries.get(b);
    return e === undefined ? undefined : describe(b, e);
  }

  /** Every delegated page, by BFN. */
  mappings(): ForeignMapping[] {
    return [...this.entries].sort((a, b) => a[0] - b[0]).map(([b, e]) => describe(b, e));
  }

  /**
   * A mapper that can map only these VMs' memory (each served by this backend
   * now, else EPERM), within maxPages pages at once (ENOSPC). Hand it to code
   * that needs mapping rights and keep the rest of the backend without them.
   * It loses a VM's right when that VM is unserved (EPERM).
   */
  restrict(given: RestrictOptions): RestrictedMapper {
    const o = options(given, "restrict options", ["vms", "maxPages"] as const);
    if (o.vms === undefined) fail("EINVAL", "restrict: vms is required (ids of served VMs)");
    const vms = list(o.vms, "restrict: vms").map((v, i) => this.core.resolve(v, `restrict: vms[${i}]`));
    const maxPages = o.maxPages === undefined ? Number.MAX_SAFE_INTEGER : integer(o.maxPages, "restrict: maxPages", 0, Number.MAX_SAFE_INTEGER);
    this.live();
    for (const vm of vms) {
      if (vm === this.owner || !this.core.isServed(this.owner, vm)) fail("EPERM", `restrict: VM ${vm.id} is not served by backend ${this.owner.id}`);
    }
    return new RestrictedMapper(this, this.core, new Set(vms), maxPages);
  }

  /**
   * @internal A fresh zeroed page for the backend itself (Xen's
   * populate_physmap: the backend's kernel allocating a page), mapped
   * read-write at bus frame bfn for its devices: a shadow table the GPU
   * walks. EEXIST for a BFN in use; ENOMEM when no frame is left (nothing kept).
   */
  ownFrame(bfn: number, onRelease: () => void): DeviceFrame {
    this.live();
    this.requireFree(bfn);
    const env = this.env, id = this.context.id, at = BigInt(bfn) * 4096n;
    let hpa: bigint;
    try {
      hpa = env.ram.allocFrames(1);
    } catch {
      return fail("ENOMEM", `no free frame for backend ${this.owner.id}`);
    }
    env.ram.write(hpa, new Uint8Array(4096));
    if (env.plane.mapRange(id, at, at + 4095n, hpa, RW) !== abi.ST_OK) {
      env.ram.freeFrames(hpa, 1);
      fail("ENOMEM", `no frame left for backend ${this.owner.id}'s IOMMU table`);
    }
    this.frames.set(bfn, hpa);
    return {
      bus: at,
      write: (offset, bytes) => env.ram.write(hpa + BigInt(offset), bytes),
      release: () => {
        if (this.frames.delete(bfn)) {
          env.plane.unmapRange(id, at, at + 4095n);
          env.plane.flushRange(id, at, at + 4095n);
          env.ram.freeFrames(hpa, 1);
        }
        onRelease();
      },
    };
  }

  // ---- shared by the backend's calls and its restricted mappers

  /** @internal Checks a map request's arguments (EINVAL), before any rule. */
  mapArgs(request: ForeignMapRequest, what: string): { bfn: number; vm: Vm; gfn: number; count: number; write: boolean } {
    // A backend maps page by page: a plain request is read in place, each
    // field once, and no message is built unless a check fails.
    const o = perCallOptions(request, "map request", MAP_KEYS);
    const vm = this.core.resolve(field(o, "vm", what), "map: vm");
    const given = field(o, "count", what);
    const count = given === undefined ? 1 : integer(given, "map: count", 1, MAX_COUNT);
    const write = bool(field(o, "write", what), "map: write", false);
    const bfn = this.bfnOf(field(o, "bfn", what), what);
    const g = field(o, "gfn", what);
    const gfn = typeof g === "number" && Number.isSafeInteger(g) && g >= 0 ? g : toU64(g as Address, "map: gfn");
    this.live();
    if ((typeof gfn === "number" ? gfn + count > vm.gfnCount : gfn + BigInt(count) > BigInt(vm.gfnCount))) fail("EINVAL", `${what}: GFNs ${gfn}..+${count} are beyond VM ${vm.id}'s ${vm.gfnCount} pages`);
    if (bfn + count > this.bfnLimit) fail("EINVAL", `${what}: BFNs ${bfn}..+${count} are beyond the IOMMU's ${this.env.inputBits}-bit address width`);
    return { bfn, vm, gfn: Number(gfn), count, write };
  }

  /** @internal */
  unmapArgs(request: ForeignUnmapRequest): { bfn: number; count: number } {
    const o = perCallOptions(request, "unmap request", UNMAP_KEYS);
    const given = field(o, "count", "unmap");
    const count = given === undefined ? 1 : integer(given, "unmap: count", 1, MAX_COUNT);
    const bfn = this.bfnOf(field(o, "bfn", "unmap"), "unmap");
    if (bfn + count > this.bfnLimit) fail("EINVAL", `unmap: BFNs ${bfn}..+${count} are beyond the IOMMU's address width`);
    if (bfn < this.ownBfns) fail("EINVAL", `unmap: BFN ${bfn} is the backend's own memory, not a delegated mapping`);
    return { bfn, count };
  }

  /** @internal Maps checked pages: EEXIST, then the table (ENOMEM, undone); the first BFN. */
  place(bfn: number, vm: Vm, gfn: number, count: number, write: boolean, grant: Grant | undefined, by: RestrictedMapper | undefined): bigint {
    for (let k = 0; k < count; k++) {
      this.requireFree(bfn + k);
    }
    const plane = this.env.plane, id = this.context.id;
    const prot = write ? RW : RO;
    for (let k = 0; k < count; k++) {
      const at = BigInt(bfn + k) * 4096n;
      if (plane.mapRange(id, at, at + 4095n, vm.p2m.mfnAddress(gfn + k), prot) !== abi.ST_OK) {
        if (k > 0) {
          const first = BigInt(bfn) * 4096n, last = at - 1n;
          plane.unmapRange(id, first, last);
          plane.flushRange(id, first, last);
        }
        fail("ENOMEM", `no frame left for backend ${this.owner.id}'s IOMMU table`);
      }
    }
    for (let k = 0; k < count; k++) this.entries.set(bfn + k, { vm, gfn: gfn + k, write, grant, by });
    if (grant !== undefined) grant.maps++;
    if (by !== undefined) by.held += count;
    return BigInt(bfn);
  }

  /** @internal Unmaps the delegated pages in [bfn, bfn + count) (those `only` mapped, when given; others EPERM); invalidates; the pages unmapped. */
  remove(bfn: number, count: number, only: RestrictedMapper | undefined): number {
    if (only !== undefined) {
      for (let k = 0; k < count; k++) {
        const e = this.entries.get(bfn + k);
        if (e !== undefined && e.by !== only) fail("EPERM", `unmap: BFN ${bfn + k} was not mapped through this mapper`);
      }
    }
    let pages = 0;
    const plane = this.env.plane, id = this.context.id;
    if (count === 1) {
      const e = this.entries.get(bfn);
      if (e === undefined) return 0;
      const at = BigInt(bfn) * 4096n;
      plane.unmapRange(id, at, at + 4095n);
      plane.flushRange(id, at, at + 4095n);
      this.forget(bfn, e);
      return 1;
    }
    for (let k = 0; k < count; k++) {
      const e = this.entries.get(bfn + k);
      if (e === undefined) continue;
      const at = BigInt(bfn + k) * 4096n;
      plane.unmapRange(id, at, at + 4095n);
      this.forget(bfn + k, e);
      pages++;
    }
    if (pages > 0) plane.flushRange(id, BigInt(bfn) * 4096n, BigInt(bfn + count) * 4096n - 1n);
    return pages;
  }

  /** @internal Revokes every page of vm's memory from the table (invalidated before it returns); the pages revoked. */
  revoke(vm: Vm): number {
    let pages = 0;
    const plane = this.env.plane, id = this.context.id;
    for (const [b, e] of this.entries) {
      if (e.vm !== vm) continue;
      const at = BigInt(b) * 4096n;
      plane.unmapRange(id, at, at + 4095n);
      plane.flushRange(id, at, at + 4095n);
      this.forget(b, e);
      pages++;
    }
    return pages;
  }

  /** @internal The backend is destroyed: every delegated page goes, then the table. */
  destroy(): void {
    for (const [b, e] of this.entries) this.forget(b, e);
    this.alive = false;
    this.env.plane.flushRange(this.context.id, 0n, BigInt(this.bfnLimit) * 4096n - 1n);
    this.context.destroy();
    // The shadows went first and gave their pages back; a page left over goes once no table maps it.
    for (const hpa of this.frames.values()) this.env.ram.freeFrames(hpa, 1);
    this.frames.clear();
  }

  /** EEXIST unless bfn is free: not the backend's own memory, no delegated page, no page of its own there. */
  private requireFree(bfn: number): void {
    if (bfn < this.ownBfns || this.entries.has(bfn) || this.frames.has(bfn)) fail("EEXIST", `BFN ${bfn} of backend ${this.owner.id} is in use`);
  }

  private forget(bfn: number, e: Entry): void {
    this.entries.delete(bfn);
    if (e.grant !== undefined) e.grant.maps--;
    if (e.by !== undefined) e.by.held--;
  }

  private bfnOf(value: unknown, what: string): number {
    if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0 && value < this.bfnLimit) return value;
    const b = toU64(value as Address, `${what}: bfn`);
    if (b >= BigInt(this.bfnLimit)) fail("EINVAL", `${what}: BFN ${b} is beyond the IOMMU's ${this.env.inputBits}-bit address width`);
    return Number(b);
  }

  /** @internal */
  live(): void {
    if (!this.alive) fail("ENODEV", `backend ${this.owner.id} is destroyed`);
  }
}

/**
 * A narrower mapper from backend.iommu.restrict(): maps only its VMs' memory
 * while they are served, within its page budget, and unmaps only what it
 * mapped. It never sees an MFN either.
 */
export class RestrictedMapper {
  /** @internal Pages it holds mapped now. */
  held = 0;

  /** @internal */
  constructor(private readonly iommu: BackendIommu, private readonly core: XenCore, private readonly vms: ReadonlySet<Vm>, readonly maxPages: number) {}

  /** The ids of the VMs it may map, ascending. */
  get vmIds(): number[] { return [...this.vms].map((v) => v.id).sort((a, b) => a - b); }

  /** Pages it holds mapped now. */
  get pages(): number { return this.held; }

  /** As backend.iommu.map, for its VMs only (EPERM otherwise, or once unserved); ENOSPC past its budget. */
  map(request: ForeignMapRequest): bigint {
    const r = this.iommu.mapArgs(request, "map");
    if (!this.vms.has(r.vm) || !this.core.isServed(this.iommu.owner, r.vm)) fail("EPERM", `map: this mapper may not map VM ${r.vm.id}'s memory`);
    if (this.held + r.count > this.maxPages) fail("ENOSPC", `map: ${r.count} more pages would pass this mapper's budget of ${this.maxPages}`);
    return this.iommu.place(r.bfn, r.vm, r.gfn, r.count, r.write, undefined, this);
  }

  /** Unmaps pages it mapped (a page another mapped: EPERM, nothing changed); the pages unmapped. */
  unmap(request: ForeignUnmapRequest): number {
    const { bfn, count } = this.iommu.unmapArgs(request);
    this.iommu.live();
    return this.iommu.remove(bfn, count, this);
  }

  /** What bfn holds, when it is one of its VMs' pages. */
  query(bfn: Address): ForeignMapping | undefined {
    const m = this.iommu.query(bfn);
    return m !== undefined && [...this.vms].some((v) => v.id === m.vm) ? m : undefined;
  }

  /** The pages of its VMs in the backend's table. */
  mappings(): ForeignMapping[] {
    const ids = new Set(this.vmIds);
    return this.iommu.mappings().filter((m) => ids.has(m.vm));
  }
}

function describe(bfn: number, e: Entry): ForeignMapping {
  const m: ForeignMapping = { bfn: BigInt(bfn), vm: e.vm.id, gfn: BigInt(e.gfn), write: e.write };
  if (e.grant !== undefined) m.gref = e.grant.ref;
  return m;
}

