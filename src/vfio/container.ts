// A VFIO container with the type1 (v2) IOMMU driver: one set of DMA mappings
// shared by every group attached to it, in one IOMMU domain whose page table
// is the arch's stage-2 format. The checks follow drivers/vfio and their
// order decides the errno when several fail (docs/vfio-type1.md, v6.18).
import { show } from "../args.js";
import { toU64, toLength, hex, PAGE_SIZE, U64_MAX, type Address } from "../addr.js";
import { fail, IommuError } from "../errors.js";
import { bool, bytes as checkBytes, integer, isInstance, list as checkList, options } from "../args.js";
import { Process } from "./process.js";
import * as abi from "../engine/abi.js";
import type { DataPlane } from "./plane.js";
import type { PageTableOptions } from "../format.js";
import { MappingList, type DmaMapping } from "./mappings.js";
import type { Topology } from "./topology.js";
import { isRelaxable, overlaps, subtractRanges, type IovaRange, type ReservedRegion } from "./reserved.js";
import { placeDoorbell, DOORBELL_HPA } from "./msi.js";
import { stage1Domain, type Stage1Description } from "./bind.js";
import { GuestPageTable, checkGuestTableOptions, takeGuestPage, type GuestPageTableOptions, type GuestTableContext } from "./guest.js";
import type { ContainerPasids, PasidSpace, PasidTable } from "./pasid.js";

/** type1 v2, or nesting: the mappings are stage 2 and devices bind guest stage-1 tables to PASIDs. */
export type IommuType = "type1v2" | "nesting";

export interface BindPgtblOptions extends Stage1Description {
  /** A PASID this container allocated (c.pasid.alloc). */
  pasid: number;
  /** The stage-1 root table: a GPA. */
  root: Address;
}

/** One entry of c.invalidate: a PASID's (or every bound PASID's) stage-1 entries over [addr, addr + npages·4 KiB). */
export interface InvalidateEntry {
  pasid?: number;
  /** 4 KiB aligned; addr 0 with npages 2^64 - 1 means everything. */
  addr: Address;
  npages: Address;
  leaf?: boolean;
  /** Only the LEAF flag (1) is known; any other bit is EOPNOTSUPP. */
  flags?: number;
}

/** Guest memory as the guest sees it: GPAs, through the container's stage 2. */
export interface GuestMemory {
  read(gpa: Address, len: number): Uint8Array;
  write(gpa: Address, bytes: Uint8Array): void;
  readU64(gpa: Address): bigint;
  writeU64(gpa: Address, value: Address): void;
  /** A page table the guest builds in its memory (the builder, over stage 2). */
  pageTable(options: GuestPageTableOptions): GuestPageTable;
}

/** A device as a binding sees it. */
interface Stage1Device { readonly bdf: string; readonly group: { readonly id: number }; pasidTable: PasidTable | undefined }

export interface MapDmaRequest {
  vaddr: Address;
  /** Where the device sees it; omitted: the container picks one (iommufd's IOAS_MAP without FIXED_IOVA). */
  iova?: Address;
  size: Address;
  read?: boolean;
  write?: boolean;
  /** Whose memory; default the process the container was opened by. */
  process?: Process;
}

export type UnmapDmaRequest = { iova: Address; size: Address } | { all: true };

/** UNMAP_DMA with VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: the pages of the range written since the last report, read as it is unmapped. */
export interface UnmapDirtyRequest { iova: Address; size: Address; dirtyBitmap: { pgsize: Address } }

/** What an unmap with dirtyBitmap returns: the bytes unmapped, and one bit per pgsize page of [iova, iova + size). */
export interface UnmapDirtyResult { size: bigint; bitmap: Uint8Array }

export interface ContainerInfo {
  /** Bitmap of the IOMMU page sizes (AND over the attached domains). */
  pgsizes: bigint;
  /** The valid IOVA list, inclusive ranges. */
  iovaRanges: IovaRange[];
  /** MAP_DMA entries left before ENOSPC. */
  dmaAvail: number;
  /** The MIGRATION capability: dirty-page granule and the largest bitmap one call may ask for. */
  migration: { pgsize: bigint; maxDirtyBitmapSize: bigint };
}

export interface DirtyBitmapRequest { iova: Address; size: Address; pgsize: Address }

/** The domain a container builds (the engine's Domain, or the twin's). */
export interface ContainerDomain {
  readonly id: number;
  readonly pageTable: {
    map(iova: bigint, hpa: bigint, size: bigint, prot: { read?: boolean; write?: boolean }): void;
    iovaToPhys(iova: bigint): bigint | undefined;
  };
  /** Without a range: every entry of the domain. */
  invalidate(opts?: { iova: bigint; npages: bigint }): void;
  destroy(): void;
}

/** What a container needs from its host and groups (wired by Host). */
export interface ContainerHost {
  plane: DataPlane;
  topology: Topology;
  dmaEntryLimit: number;
  allowUnsafeInterrupts: boolean;
  /** The stage-2 page-table format of this arch. */
  stage2: PageTableOptions;
  /** Physical RAM (for guest-memory access through stage 2). */
  ram: { read(hpa: bigint, len: number): Uint8Array; write(hpa: bigint, bytes: Uint8Array): void };
  createDomain(options: PageTableOptions): ContainerDomain;
  /** The host-wide PASID space the container allocates from. */
  pasids: PasidSpace;
}

const MAX_DIRTY_BITMAP_BYTES = 1n << 28n;

export class Container {
  private iommu: IommuType | undefined;
  private domainRef: ContainerDomain | undefined;
  private readonly groupIds: number[] = [];
  private readonly handles = new Map<number, { forget(): void }>();
  /** Bound stage-1 tables: one nested domain per (device, PASID). */
  private readonly bindings: { device: Stage1Device; pasid: number; domain: ContainerDomain }[] = [];
  /** The nested contexts of guest page tables built with c.gpa.pageTable, released with the stage 2 they run over. */
  private readonly guestTables = new Set<GuestTableContext>();
  private iovas: IovaRange[] = [];
  private allowed: IovaRange[] | undefined;
  private readonly maps = new MappingList();
  private dirtyTracking = false;
  private doorbell: bigint | undefined;
  private closed = false;
  readonly dirty: {
    start: () => void;
    stop: () => void;
    bitmap: (request: DirtyBitmapRequest) => Uint8Array;
    readonly tracking: boolean;
  };
  /** VFIO_IOMMU_PASID_REQUEST: PASIDs from the host-wide space, within this container's quota. */
  readonly pasid: ContainerPasids;

  /**
   * Guest memory at GPAs, through the container's mappings (stage 2): how a
   * guest (or a test acting as one) writes its stage-1 tables. EFAULT where
   * nothing is mapped; EINVAL before SET_IOMMU.
   */
  readonly gpa: GuestMemory;

  /** @internal */
  constructor(private readonly host: ContainerHost, readonly process: Process | undefined, pasidQuota?: number) {
    this.pasid = host.pasids.open(pasidQuota);
    // A freed PASID may be handed out again: no device may keep walking its old table.
    this.pasid.beforeFree = (min, max) => this.dropBindings((b) => b.pasid >= min && b.pasid <= max);
    this.gpa = this.guestMemory();
    const self = this;
    this.dirty = {
      start: () => this.dirtyStart(),
      stop: () => this.dirtyStop(),
      bitmap: (request) => this.dirtyBitmap(request),
      get tracking() { return self.dirtyTracking; },
    };
  }

  // ------------------------------------------------------------------ state

  /** The IOMMU domain of the container (undefined until SET_IOMMU). */
  get domain(): ContainerDomain | undefined { return this.domainRef; }
  get iommuType(): IommuType | undefined { return this.iommu; }
  get groups(): readonly number[] { return this.groupIds; }
  /** The MSI doorbell IOVA mapped for sw-msi (SMMUv3), if any. */
  get msiDoorbellIova(): bigint | undefined { return this.doorbell; }

  /** VFIO_CHECK_EXTENSION for the types this model implements. */
  checkExtension(type: string): boolean { return type === "type1v2" || type === "nesting"; }

  private live(): void {
    if (this.closed) fail("ENODEV", "container is closed");
  }

  private requireIommu(): ContainerDomain {
    this.live();
    if (!this.iommu || !this.domainRef) fail("EINVAL", "no IOMMU driver is set on this container (setIommu first)");
    return this.domainRef;
  }

  // ------------------------------------------------------------------ groups

  /** VFIO_SET_IOMMU: needs at least one group; attaches every group to a new domain. */
  setIommu(type: IommuType): void {
    this.live();
    if (this.groupIds.length === 0 || this.iommu) fail("EINVAL", this.iommu ? "an IOMMU driver is already set" : "the container holds no group");
    if (type !== "type1v2" && type !== "nesting") fail(typeof type === "string" ? "ENODEV" : "EINVAL", `no IOMMU driver for ${show(type)} (supported: type1v2, nesting)`);
    const domain = this.host.createDomain(this.host.stage2);
    try {
      // Most recently added group first, as the kernel attaches them.
      const order = [...this.groupIds].reverse();
      const attached: number[] = [];
      let list: IovaRange[] = [];
      for (const g of order) {
        list = this.attachChecks(g, attached);
        attached.push(g);
      }
      this.domainRef = domain;
      this.iommu = type;
      this.iovas = list;
      this.configureDomain(domain);
      for (const g of order) this.afterAttach(g);
    } catch (e) {
      // Nothing of the attempt stays: no driver, no IOVA list, no doorbell.
      domain.destroy();
      this.domainRef = undefined;
      this.iommu = undefined;
      this.iovas = [];
      this.doorbell = undefined;
      throw e;
    }
  }

  /**
   * The type1 attach checks for group g joining `others` (already attached):
   * reserved regions against existing mappings, the new IOVA list, MSI
   * isolation, allowed IOVA ranges. Returns the IOVA list with g attached.
   */
  private attachChecks(g: number, others: readonly number[]): IovaRange[] {
    const topo = this.host.topology;
    const regions = topo.reservedRegions(g).filter((r) => !isRelaxable(r.type));
    for (const r of regions) {
      if (this.maps.overlaps(r.start, r.end)) fail("EINVAL", `group ${g}: reserved region [${hex(r.start)}, ${hex(r.end)}] (${r.type}) overlaps an existing DMA mapping`);
    }
    const list = topo.iovaList([...others, g]);
    if (list.length === 0) fail("EINVAL", `group ${g}: no valid IOVA range would be left`);
    if (!this.host.allowUnsafeInterrupts && !topo.msiIsolated(g)) {
      fail("EPERM", `group ${g}: no MSI isolation (interrupt remapping); allowUnsafeInterrupts is off`);
    }
    if (this.allowed) {
      for (const r of regions) {
        if (this.allowed.some((a) => overlaps(a, r))) fail("EADDRINUSE", `group ${g}: reserved region [${hex(r.start)}, ${hex(r.end)}] lies in an allowed IOVA range`);
      }
    }
    return list;
  }

  /** After a group joined the domain: its sw-msi doorbell (SMMUv3), when it has sw-msi and no msi region. */
  private afterAttach(g: number): void {
    const regions = this.host.topology.reservedRegions(g);
    const swMsi = regions.filter((r) => r.type === "sw-msi");
    if (swMsi.length === 0 || regions.some((r) => r.type === "msi") || this.doorbell !== undefined) return;
    const window = swMsi[swMsi.length - 1];
    const iova = placeDoorbell(window, this.allReserved(), this.maps);
    // Write-only, like the kernel's doorbell mapping; it leads to the doorbell's HPA, outside RAM.
    this.domainRef!.pageTable.map(iova, DOORBELL_HPA, PAGE_SIZE, { read: false, write: true });
    this.doorbell = iova;
    this.iovas = this.withoutDoorbell(this.iovas);
  }

  /** A doorbell placed outside its sw-msi window is taken out of the valid IOVA list (no MAP may land on it). */
  private withoutDoorbell(list: IovaRange[]): IovaRange[] {
    const bell = this.doorbell;
    return bell === undefined ? list : subtractRanges(list, [{ start: bell, end: bell + PAGE_SIZE - 1n }]);
  }

  private configureDomain(domain: ContainerDomain): void {
    // VT-d: the interrupt window is decoded before translation.
    const msi = this.host.topology.preset.hardwareReserved.find((r) => r.type === "msi");
    if (msi) this.host.plane.setMsiWindow(domain.id, msi.start, msi.end);
  }

  private allReserved(): ReservedRegion[] {
    return this.groupIds.flatMap((g) => this.host.topology.reservedRegions(g));
  }

  /** @internal VFIO_GROUP_SET_CONTAINER, from the group's side; `handle` lets close() detach it. */
  attachGroup(g: number, handle: { forget(): void }): void {
    this.live();
    if (this.iommu) {
      const list = this.attachChecks(g, this.groupIds);
      const iovas = this.iovas;
      this.groupIds.push(g);
      this.iovas = this.withoutDoorbell(list);
      try {
        this.afterAttach(g);
      } catch (e) {
        this.groupIds.pop();
        this.iovas = iovas;
        throw e;
      }
    } else {
      this.groupIds.push(g);
    }
    this.handles.set(g, handle);
  }

  /**
   * @internal VFIO_GROUP_UNSET_CONTAINER: the group's devices lose every
   * PASID binding they had here (its IOTLB entries go with it) before the
   * call returns; the last group out releases the driver and every mapping.
   */
  detachGroup(g: number): void {
    const i = this.groupIds.indexOf(g);
    if (i < 0) return;
    this.groupIds.splice(i, 1);
    this.handles.delete(g);
    this.dropBindings((b) => b.device.group.id === g);
    if (!this.iommu) return;
    if (this.groupIds.length === 0) {
      this.release();
      return;
    }
    const list = this.withoutDoorbell(this.host.topology.iovaList(this.groupIds));
    if (list.length > 0) this.iovas = list;
  }

  /** Each page of [gpa, gpa + len) through stage 2 (a probe: no IOTLB, no A/D); EFAULT where nothing is mapped. */
  private guestPieces(gpa: Address, len: number): { hpa: bigint; offset: number; bytes: number }[] {
    const domain = this.requireIommu();
    const start = toU64(gpa, "gpa");
    const out: { hpa: bigint; offset: number; bytes: number }[] = [];
    for (let done = 0; done < len;) {
      const at = start + BigInt(done);
      const hpa = domain.pageTable.iovaToPhys(at);
      if (hpa === undefined) fail("EFAULT", `GPA ${hex(at)} is not mapped in the container`);
      const bytes = Math.min(len - done, Number(PAGE_SIZE - (at & (PAGE_SIZE - 1n))));
      out.push({ hpa, offset: done, bytes });
      done += bytes;
    }
    return out;
  }

  private guestMemory(): GuestMemory {
    const read = (gpa: Address, len: number): Uint8Array => {
      const n = toLength(len, "gpa read length");
      // Every page is resolved before anything is allocated for the copy.
      const list = this.guestPieces(gpa, n);
      const out = new Uint8Array(n);
      for (const p of list) out.set(this.host.ram.read(p.hpa, p.bytes), p.offset);
      return out;
    };
    const write = (gpa: Address, bytes: Uint8Array): void => {
      const data = checkBytes(bytes, "gpa write bytes");
      for (const p of this.guestPieces(gpa, data.length)) this.host.ram.write(p.hpa, data.subarray(p.offset, p.offset + p.bytes));
    };
    return {
      read,
      write,
      pageTable: (options) => this.guestPageTable(options, write),
      readU64: (gpa) => new DataView(read(gpa, 8).buffer).getBigUint64(0, true),
      writeU64: (gpa, value) => {
        const b = new Uint8Array(8);
        new DataView(b.buffer).setBigUint64(0, toU64(value, "value"), true);
        write(gpa, b);
      },
    };
  }

  /**
   * Everything is checked before the guest's memory is touched: the options,
   * the table's description, the root. A root from allocTable goes back to
   * freeTable when the call fails after it.
   */
  private guestPageTable(given: GuestPageTableOptions, write: (gpa: bigint, bytes: Uint8Array) => void): GuestPageTable {
    const domain = this.requireIommu();
    const options = checkGuestTableOptions(given);
    const stage1 = stage1Domain({ format: options.format, addressWidth: options.addressWidth });
    const zero = (gpa: bigint) => write(gpa, new Uint8Array(Number(PAGE_SIZE)));
    const fresh = options.root === undefined;
    const root = options.root === undefined ? takeGuestPage(options) : toU64(options.root, "root");
    let ctx: GuestTableContext | undefined;
    try {
      // A new root must be guest RAM before anything is made for it.
      if (fresh) this.guestPieces(root, Number(PAGE_SIZE));
      ctx = this.host.createDomain({ ...stage1, stage2: domain, root } as unknown as PageTableOptions) as unknown as GuestTableContext;
      if (fresh) zero(root);
    } catch (e) {
      ctx?.destroy();
      if (fresh) options.freeTable?.(root);
      throw e;
    }
    const made = ctx;
    this.guestTables.add(made);
    return new GuestPageTable(this.host.plane, made, options, () => this.guestTables.delete(made));
  }

  // ------------------------------------------------------------------ nesting: stage-1 bindings

  /** @internal VFIO's bind of a guest page table, for one device and PASID. */
  bindStage1(device: Stage1Device, given: BindPgtblOptions): void {
    const domain = this.requireIommu();
    const request = options(given, "bindPgtbl options", ["pasid", "root", "format", "addressWidth", "flags"] as const) as BindPgtblOptions;
    if (this.iommu !== "nesting") fail("EINVAL", "binding a stage-1 table needs a nesting container (setIommu('nesting'))");
    // The table's description first, as iommufd allocates the nested HWPT before attaching it.
    const stage1 = stage1Domain(request);
    const pasid = request.pasid;
    if (!Number.isInteger(pasid) || pasid < 1 || pasid > 0xfffff) fail("EINVAL", `pasid must be 1..0xfffff, got ${show(pasid)}`);
    if (!this.pasid.holds(pasid)) fail("EINVAL", `PASID ${pasid} is not allocated by this container`);
    if (device.pasidTable?.lookup(pasid) !== undefined) fail("EBUSY", `${device.bdf}: PASID ${pasid} is already bound`);
    const nested = this.host.createDomain({ ...stage1, stage2: domain, root: toU64(request.root, "root") } as unknown as PageTableOptions);
    const fresh = device.pasidTable === undefined;
    try {
      device.pasidTable ??= this.host.pasids.createTable();
      device.pasidTable.attach(pasid, nested.id);
    } catch (e) {
      nested.destroy();
      if (fresh) this.dropPasidTable(device);
      throw e;
    }
    this.bindings.push({ device, pasid, domain: nested });
  }

  /** @internal */
  unbindStage1(device: Stage1Device, pasid: number): void {
    this.live();
    const i = this.bindings.findIndex((b) => b.device === device && b.pasid === pasid);
    if (i < 0) fail("EINVAL", `${device.bdf}: PASID ${show(pasid)} is not bound`);
    this.dropBinding(i);
  }

  private dropBinding(i: number): void {
    const b = this.bindings[i];
    b.device.pasidTable?.detach(b.pasid);
    // Destroying the nested domain invalidates every IOTLB entry it tagged.
    b.domain.destroy();
    this.bindings.splice(i, 1);
    // A device's PASID table holds only this container's bindings: with none left it goes, and the next owner starts empty.
    if (!this.bindings.some((other) => other.device === b.device)) this.dropPasidTable(b.device);
  }

  private dropBindings(which: (b: { device: Stage1Device; pasid: number }) => boolean): void {
    for (let i = this.bindings.length - 1; i >= 0; i--) if (which(this.bindings[i])) this.dropBinding(i);
  }

  private dropPasidTable(device: Stage1Device): void {
    device.pasidTable?.destroy();
    device.pasidTable = undefined;
  }

  /**
   * The guest's cache invalidation (iommufd's HWPT invalidate): entries in
   * order; a bad one stops the call with an IommuError whose `processed`
   * counts the entries handled before it (those stay applied).
   */
  invalidate(entries: readonly InvalidateEntry[]): number {
    this.requireIommu();
    const ALL = (1n << 64n) - 1n;
    const list = checkList(entries, "invalidate entries");
    list.forEach((given, k) => {
      const bad = (code: "EINVAL" | "EOPNOTSUPP", why: string): never => { throw new IommuError(code, `invalidate entry ${k}: ${why}`, { processed: k }); };
      let entry: InvalidateEntry;
      try {
        entry = options(given, `invalidate entry ${k}`, ["pasid", "addr", "npages", "leaf", "flags"] as const) as InvalidateEntry;
        bool(entry.leaf, "leaf", false);
        if (entry.flags !== undefined) integer(entry.flags, "flags", 0, 0xffffffff);
      } catch (e) {
        return bad("EINVAL", e instanceof Error ? e.message.replace(/^EINVAL: /, "") : "unreadable");
      }
      if ((entry.flags ?? 0) & ~1) bad("EOPNOTSUPP", `unknown flags ${hex(entry.flags ?? 0)}`);
      let addr: bigint, npages: bigint;
      try { addr = toU64(entry.addr, "addr"); npages = toU64(entry.npages, "npages"); } catch { return bad("EINVAL", "addr and npages must be u64"); }
      if (entry.pasid !== undefined && (!Number.isInteger(entry.pasid) || entry.pasid < 1 || entry.pasid > 0xfffff)) bad("EINVAL", `pasid ${show(entry.pasid)}`);
      if (addr % PAGE_SIZE !== 0n) bad("EINVAL", `addr ${hex(addr)} is not 4 KiB aligned`);
      if (npages === 0n) bad("EINVAL", "npages is zero");
      const everything = addr === 0n && npages === ALL;
      if (!everything && addr + npages * PAGE_SIZE - 1n > U64_MAX) bad("EINVAL", "the range wraps past 2^64");
      for (const b of this.bindings) {
        if (entry.pasid !== undefined && b.pasid !== entry.pasid) continue;
        if (everything) b.domain.invalidate();
        else b.domain.invalidate({ iova: addr, npages });
      }
    });
    return list.length;
  }

  /** Unmaps and unpins everything and frees the domain; SET_IOMMU is needed again. */
  private release(): void {
    this.dropBindings(() => true);
    // Guest tables run over the stage 2 that goes now: they go first (a stage 2 with nested users cannot be destroyed).
    for (const ctx of this.guestTables) ctx.destroy();
    this.guestTables.clear();
    const domain = this.domainRef;
    if (domain) {
      for (const m of [...this.maps.all()]) this.removeMapping(domain, m);
      domain.destroy();
    }
    this.domainRef = undefined;
    this.iommu = undefined;
    this.iovas = [];
    this.doorbell = undefined;
    this.dirtyTracking = false;
  }

  // ------------------------------------------------------------------ MAP / UNMAP

  /** VFIO_IOMMU_MAP_DMA. Returns the IOVA (the one asked for, or the one picked). All or nothing. */
  mapDma(given: MapDmaRequest): bigint {
    const domain = this.requireIommu();
    const request = options(given, "mapDma request", ["vaddr", "iova", "size", "read", "write", "process"] as const) as MapDmaRequest;
    const size = toU64(request.size, "size");
    const vaddr = toU64(request.vaddr, "vaddr");
    const fixed = request.iova === undefined ? undefined : toU64(request.iova, "iova");
    if (size === 0n) fail("EINVAL", "map: size is zero");
    if (vaddr + size - 1n > U64_MAX) fail("EOVERFLOW", `map: vaddr ${hex(vaddr)} + ${hex(size)} wraps past 2^64`);
    if (fixed !== undefined && fixed + size - 1n > U64_MAX) fail("EOVERFLOW", `map: iova ${hex(fixed)} + ${hex(size)} wraps past 2^64`);
    const read = bool(request.read, "map read", false), write = bool(request.write, "map write", false);
    if (!read && !write) fail("EINVAL", "map: neither read nor write");
    const min = this.minPageSize();
    if (size % min !== 0n || vaddr % min !== 0n || (fixed !== undefined && fixed % min !== 0n)) {
      fail("EINVAL", `map: iova, vaddr and size must be multiples of ${hex(min)}`);
    }
    const iova = fixed ?? this.pickIova(size);
    const last = iova + size - 1n;
    if (this.maps.overlaps(iova, last)) fail("EEXIST", `map: [${hex(iova)}, ${hex(last)}] overlaps an existing mapping`);
    if (this.maps.size >= this.host.dmaEntryLimit) fail("ENOSPC", `map: all ${this.host.dmaEntryLimit} DMA entries are in use`);
    if (!this.iovas.some((r) => iova >= r.start && last <= r.end)) fail("EINVAL", `map: [${hex(iova)}, ${hex(last)}] is not inside one valid IOVA range`);
    const process = request.process ?? this.process;
    if (!process) fail("EINVAL", "map: no process to pin from (open the container with one, or pass process)");
    if (!isInstance(process, Process)) fail("EINVAL", `map: process must be a Process (host.createProcess()), got ${show(process)}`);
    if (process.exited) fail("EFAULT", "map: the process has exited; its memory cannot be pinned");
    if (process.lockedBytes + size > process.memlockLimit) {
      fail("ENOMEM", `map: pinning ${hex(size)} bytes would exceed the locked-memory limit (${hex(process.memlockLimit)})`);
    }
    const access = abi.ACCESS_READ | (write ? abi.ACCESS_WRITE : 0);
    const prot = (read ? abi.PERM_R : 0) | (write ? abi.PERM_W : 0) | abi.PERM_U;
    const st = this.host.plane.pinMap(process.pageTable.contextId, domain.id, vaddr, vaddr + size - 1n, iova, access, prot);
    if (st === abi.ERR_EFAULT) fail("EFAULT", `map: [${hex(vaddr)}, +${hex(size)}) is not mapped ${write ? "writable " : ""}in the process`);
    if (st === abi.ERR_ENOMEM) fail("ENOMEM", "map: not enough free frames for the IOMMU page tables");
    if (st !== abi.ST_OK) fail("EINVAL", `map: the IOMMU page table refused the mapping (status ${st})`);
    process.lockedBytes += size;
    this.maps.insert({ iova, last, vaddr, process, read, write });
    return iova;
  }

  /**
   * VFIO_IOMMU_UNMAP_DMA (v2). Returns the bytes unmapped; with dirtyBitmap
   * (GET_DIRTY_BITMAP), also the pages of the range written since the last
   * report, read (and cleared) before anything is unmapped, so none is lost.
   */
  unmapDma(request: UnmapDirtyRequest): UnmapDirtyResult;
  unmapDma(request: UnmapDmaRequest): bigint;
  unmapDma(given: UnmapDmaRequest | UnmapDirtyRequest): bigint | UnmapDirtyResult {
    const domain = this.requireIommu();
    if (given === undefined) fail("EINVAL", "unmap: give { iova, size } or { all: true }");
    const request = options(given, "unmapDma request", ["iova", "size", "all", "dirtyBitmap"] as const) as { iova?: Address; size?: Address; all?: unknown; dirtyBitmap?: unknown };
    const wantDirty = request.dirtyBitmap !== undefined;
    // The ioctl refuses the flag with ALL before anything else (vfio_iommu_type1_unmap_dma).
    if (wantDirty && request.all !== undefined) fail("EINVAL", "unmap: dirtyBitmap cannot be asked with all");
    let first: bigint, last: bigint;
    if (request.all !== undefined) {
      if (request.all !== true) fail("EINVAL", `unmap: all must be true, got ${show(request.all)}`);
      const r = request;
      if ((r.iova !== undefined && toU64(r.iova, "iova") !== 0n) || (r.size !== undefined && toU64(r.size, "size") !== 0n)) {
        fail("EINVAL", "unmap: with all, iova and size must be 0");
      }
      first = 0n; last = U64_MAX;
    } else {
      const iova = toU64(request.iova as Address, "iova"), size = toU64(request.size as Address, "size");
      // verify_bitmap_size, before the range checks: some pages, and a bitmap of at most 256 MiB.
      const pgsize = wantDirty ? toU64(options(request.dirtyBitmap, "dirtyBitmap", ["pgsize"] as const).pgsize as Address, "unmap dirtyBitmap.pgsize") : 0n;
      if (wantDirty) {
        const pages = pgsize === 0n ? 0n : size / pgsize;
        if (pages === 0n || (pages + 7n) / 8n > MAX_DIRTY_BITMAP_BYTES) fail("EINVAL", `unmap: a dirty bitmap of ${hex(size)} bytes in ${hex(pgsize)} pages is empty or over 256 MiB`);
      }
      const min = this.minPageSize();
      if (iova % min !== 0n) fail("EINVAL", `unmap: iova ${hex(iova)} is not a multiple of ${hex(min)}`);
      if (size === 0n || size % min !== 0n) fail("EINVAL", `unmap: size ${hex(size)} is zero or not a multiple of ${hex(min)}`);
      if (iova + size - 1n > U64_MAX) fail("EOVERFLOW", `unmap: ${hex(iova)} + ${hex(size)} wraps past 2^64`);
      first = iova; last = iova + size - 1n;
      // vfio_dma_do_unmap: after the range checks, before the bisect checks.
      if (wantDirty) this.checkDirtyPgsize(pgsize, "unmap");
      this.checkNoBisect(first, last, "unmap");
    }
    // Read before any mapping goes: a page written up to this call is in the bitmap.
    const bitmap = wantDirty ? this.mappedDirty(domain, first, last) : undefined;
    let bytes = 0n;
    for (const m of this.maps.inside(first, last)) bytes += this.removeMapping(domain, m);
    return bitmap ? { size: bytes, bitmap } : bytes;
  }

  /** The range may not cut a mapping: the one holding its first byte starts there, the one holding its last byte ends there. */
  private checkNoBisect(first: bigint, last: bigint, what: string): void {
    const head = this.maps.containing(first);
    if (head && head.iova !== first) fail("EINVAL", `${what}: [${hex(first)}, ${hex(last)}] would split the mapping at ${hex(head.iova)}`);
    const tail = this.maps.containing(last);
    if (tail && tail.last !== last) fail("EINVAL", `${what}: [${hex(first)}, ${hex(last)}] would split the mapping at ${hex(tail.iova)}`);
  }

  private removeMapping(domain: ContainerDomain, m: DmaMapping): bigint {
    const size = m.last - m.iova + 1n;
    this.host.plane.unpinUnmap(domain.id, m.iova, m.last);
    // No device may use the range afterwards.
    domain.invalidate({ iova: m.iova, npages: size / PAGE_SIZE });
    m.process.lockedBytes -= size;
    this.maps.remove(m);
    return size;
  }

  /** The mappings, lowest IOVA first. */
  mappings(): readonly Readonly<DmaMapping>[] { return this.maps.all(); }

  private minPageSize(): bigint {
    const pgsizes = this.host.topology.preset.pgsizes;
    return pgsizes & -pgsizes;
  }

  /**
   * iommufd's IOVA allocation: aligned to the smallest power of two holding
   * the size, never 0, inside the allowed ranges when set, else the valid
   * list, clear of every mapping; ENOSPC when nothing fits.
   */
  private pickIova(size: bigint): bigint {
    let align = PAGE_SIZE;
    while (align < size && align < 1n << 62n) align <<= 1n;
    const taken = this.maps.all().map((m) => ({ start: m.iova, end: m.last }));
    const space = this.allowed ? this.withoutDoorbell(subtractRanges(this.allowed, this.allReservedHoles())) : this.iovas;
    for (const hole of subtractRanges(space, taken)) {
      let at = (hole.start + align - 1n) & ~(align - 1n);
      if (at === 0n) at = align;
      if (at >= hole.start && at + size - 1n <= hole.end) return at;
    }
    fail("ENOSPC", `map: no free ${hex(size)}-byte IOVA range`);
  }

  private allReservedHoles(): IovaRange[] {
    return this.allReserved().filter((r) => !isRelaxable(r.type)).map((r) => ({ start: r.start, end: r.end }));
  }

  /**
   * iommufd's IOAS_ALLOW_IOVAS: restricts where IOVAs are picked. Ranges need
   * start < end and may not overlap each other (EINVAL) or a reserved region
   * of an attached group (EADDRINUSE); the old list stays on error.
   */
  allowIovas(ranges: readonly { start: Address; end: Address }[]): void {
    this.live();
    const list = checkList(ranges, "allowed IOVA ranges").map((given, i) => {
      const r = options(given, `range ${i}`, ["start", "end"] as const) as { start: Address; end: Address };
      const start = toU64(r.start, `range ${i} start`), end = toU64(r.end, `range ${i} end`);
      if (start >= end) fail("EINVAL", `range ${i}: start ${hex(start)} is not below end ${hex(end)}`);
      return { start, end };
    }).sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    for (let i = 1; i < list.length; i++) {
      if (list[i].start <= list[i - 1].end) fail("EINVAL", `allowed ranges overlap at ${hex(list[i].start)}`);
    }
    for (const hole of this.allReservedHoles()) {
      if (list.some((a) => overlaps(a, hole))) fail("EADDRINUSE", `an allowed range overlaps reserved [${hex(hole.start)}, ${hex(hole.end)}]`);
    }
    this.allowed = list.length > 0 ? list : undefined;
  }

  // ------------------------------------------------------------------ GET_INFO

  /** VFIO_IOMMU_GET_INFO. */
  getInfo(): ContainerInfo {
    this.requireIommu();
    return {
      pgsizes: this.host.topology.preset.pgsizes,
      iovaRanges: this.iovas.map((r) => ({ ...r })),
      dmaAvail: this.host.dmaEntryLimit - this.maps.size,
      migration: { pgsize: this.minPageSize(), maxDirtyBitmapSize: MAX_DIRTY_BITMAP_BYTES },
    };
  }

  // ------------------------------------------------------------------ dirty tracking

  /**
   * Dirty tracking is precise here (the choice; the kernel's type1
   * reports every IOMMU-mapped page dirty): device writes set the stage-2
   * dirty bit, read and cleared by bitmap().
   */
  private dirtyStart(): void {
    const domain = this.requireIommu();
    if (this.dirtyTracking) return;
    const plane = this.host.plane;
    // Start clean: clear every dirty bit, then flush so writes walk and set them anew.
    for (const m of this.maps.all()) plane.readDirty(domain.id, m.iova, m.last);
    plane.setDomainFlags(domain.id, this.domainFlags(true));
    plane.flushDomain(domain.id);
    this.dirtyTracking = true;
  }

  private dirtyStop(): void {
    const domain = this.requireIommu();
    if (!this.dirtyTracking) return;
    this.host.plane.setDomainFlags(domain.id, this.domainFlags(false));
    this.host.plane.flushDomain(domain.id);
    this.dirtyTracking = false;
  }

  private domainFlags(dirty: boolean): number {
    return abi.CTX_SRE | abi.CTX_WPE | abi.CTX_NX | (dirty ? abi.CTX_AD : 0);
  }

  /** Bit i ↔ page iova + i·pgsize; the bits read are cleared. */
  private dirtyBitmap(given: DirtyBitmapRequest): Uint8Array {
    const domain = this.requireIommu();
    if (given === undefined) fail("EINVAL", "dirty bitmap: give { iova, size, pgsize }");
    const request = options(given, "dirty bitmap request", ["iova", "size", "pgsize"] as const) as DirtyBitmapRequest;
    const iova = toU64(request.iova, "iova"), size = toU64(request.size, "size"), pgsize = toU64(request.pgsize, "pgsize");
    if (size === 0n) fail("EINVAL", "dirty bitmap: size is zero");
    if (iova + size - 1n > U64_MAX) fail("EOVERFLOW", `dirty bitmap: ${hex(iova)} + ${hex(size)} wraps past 2^64`);
    const min = this.minPageSize();
    if (pgsize !== min) fail("EINVAL", `dirty bitmap: pgsize must be ${hex(min)}`);
    if (iova % min !== 0n || size % min !== 0n) fail("EINVAL", "dirty bitmap: iova and size must be page aligned");
    const pages = size / min;
    if ((pages + 7n) / 8n > MAX_DIRTY_BITMAP_BYTES) fail("EINVAL", "dirty bitmap: the range needs more than 256 MiB of bitmap");
    if (!this.dirtyTracking) fail("EINVAL", "dirty bitmap: tracking is not started");
    this.checkNoBisect(iova, iova + size - 1n, "dirty bitmap");
    return this.mappedDirty(domain, iova, iova + size - 1n);
  }

  /** GET_DIRTY_BITMAP's conditions: tracking started, and pgsize the smallest IOMMU page. */
  private checkDirtyPgsize(given: Address, what: string): void {
    const pgsize = toU64(given, `${what} dirtyBitmap.pgsize`);
    if (!this.dirtyTracking || pgsize !== this.minPageSize()) {
      fail("EINVAL", `${what}: dirty pages need tracking started and pgsize ${hex(this.minPageSize())}`);
    }
  }

  /**
   * The dirty bits of [first, last], read and cleared, kept only where a
   * mapping is (vfio_iova_dirty_bitmap walks the vfio_dma entries): an
   * IOMMU entry no MAP_DMA made (the MSI doorbell) is never reported.
   */
  private mappedDirty(domain: ContainerDomain, first: bigint, last: bigint): Uint8Array {
    const read = this.host.plane.readDirty(domain.id, first, last);
    const out = new Uint8Array(read.length);
    for (const m of this.maps.inside(first, last)) copyBits(out, read, Number((m.iova - first) / PAGE_SIZE), Number((m.last - first) / PAGE_SIZE));
    return out;
  }

  // ------------------------------------------------------------------ close

  /** Detaches every group and releases every mapping. */
  close(): void {
    if (this.closed) return;
    for (const handle of this.handles.values()) handle.forget();
    this.handles.clear();
    this.groupIds.length = 0;
    this.release();
    // PASIDs still held go back to the host-wide space.
    this.pasid.release();
    this.closed = true;
  }
}

/** Bits [from, to] (inclusive, bit i at byte i >> 3, bit i & 7) of src into dst: whole bytes in the middle, bit by bit at the ends. */
function copyBits(dst: Uint8Array, src: Uint8Array, from: number, to: number): void {
  let i = from;
  for (; i <= to && (i & 7) !== 0; i++) dst[i >> 3] |= src[i >> 3] & (1 << (i & 7));
  for (; i + 7 <= to; i += 8) dst[i >> 3] = src[i >> 3];
  for (; i <= to; i++) dst[i >> 3] |= src[i >> 3] & (1 << (i & 7));
}
