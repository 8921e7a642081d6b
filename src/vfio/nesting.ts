// A nesting container's stage-1 side: guest page tables bound to (device,
// PASID) pairs, one nested domain each over the container's stage 2; the
// guest's cache invalidation; and guest tables built in guest memory
// (c.gpa.pageTable), released with the stage 2 they run over.
import { show, bool, integer, list as checkList, options } from "../args.js";
import { toU64, hex, PAGE_SIZE, U64_MAX, type Address } from "../addr.js";
import { fail, IommuError } from "../errors.js";
import type { PageTableOptions } from "../format.js";
import { stage1Domain, type Stage1Description } from "./bind.js";
import { GuestPageTable, checkGuestTableOptions, takeGuestPage, type GuestPageTableOptions, type GuestTableContext } from "./guest.js";
import { guestPieces } from "./gpa.js";
import { live, requireIommu, type ContainerCore, type ContainerDomain } from "./core.js";
import type { ContainerPasids, PasidTable } from "./pasid.js";

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

/** A device as a binding sees it. */
export interface Stage1Device { readonly bdf: string; readonly group: { readonly id: number }; pasidTable: PasidTable | undefined }

interface Binding { device: Stage1Device; pasid: number; domain: ContainerDomain }

export class Nesting {
  /** Bound stage-1 tables: one nested domain per (device, PASID). */
  private readonly bindings: Binding[] = [];
  /** The nested contexts of guest page tables built with c.gpa.pageTable. */
  private readonly guestTables = new Set<GuestTableContext>();

  constructor(private readonly core: ContainerCore, private readonly pasid: ContainerPasids) {}

  /** VFIO's bind of a guest page table, for one device and PASID. */
  bind(device: Stage1Device, given: BindPgtblOptions): void {
    const core = this.core;
    const domain = requireIommu(core);
    const request = options(given, "bindPgtbl options", ["pasid", "root", "format", "addressWidth", "flags"] as const) as BindPgtblOptions;
    if (core.iommu !== "nesting") fail("EINVAL", "binding a stage-1 table needs a nesting container (setIommu('nesting'))");
    // The table's description first, as iommufd allocates the nested HWPT before attaching it.
    const stage1 = stage1Domain(request);
    const pasid = request.pasid;
    if (!Number.isInteger(pasid) || pasid < 1 || pasid > 0xfffff) fail("EINVAL", `pasid must be 1..0xfffff, got ${show(pasid)}`);
    if (!this.pasid.holds(pasid)) fail("EINVAL", `PASID ${pasid} is not allocated by this container`);
    if (device.pasidTable?.lookup(pasid) !== undefined) fail("EBUSY", `${device.bdf}: PASID ${pasid} is already bound`);
    const nested = core.host.createDomain({ ...stage1, stage2: domain, root: toU64(request.root, "root") } as unknown as PageTableOptions);
    const fresh = device.pasidTable === undefined;
    try {
      device.pasidTable ??= core.host.pasids.createTable();
      device.pasidTable.attach(pasid, nested.id);
    } catch (e) {
      nested.destroy();
      if (fresh) dropPasidTable(device);
      throw e;
    }
    this.bindings.push({ device, pasid, domain: nested });
  }

  unbind(device: Stage1Device, pasid: number): void {
    live(this.core);
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
    if (!this.bindings.some((other) => other.device === b.device)) dropPasidTable(b.device);
  }

  /** Drops the bindings `which` picks (a departing group's, a freed PASID's, or all). */
  dropBindings(which: (b: { device: Stage1Device; pasid: number }) => boolean): void {
    for (let i = this.bindings.length - 1; i >= 0; i--) if (which(this.bindings[i])) this.dropBinding(i);
  }

  /**
   * The guest's cache invalidation (iommufd's HWPT invalidate): entries in
   * order; a bad one stops the call with an IommuError whose `processed`
   * counts the entries handled before it (those stay applied).
   */
  invalidate(entries: readonly InvalidateEntry[]): number {
    requireIommu(this.core);
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

  /**
   * c.gpa.pageTable: everything is checked before the guest's memory is
   * touched: the options, the table's description, the root. A root from
   * allocTable goes back to freeTable when the call fails after it.
   */
  guestPageTable(given: GuestPageTableOptions, write: (gpa: bigint, bytes: Uint8Array) => void): GuestPageTable {
    const core = this.core;
    const domain = requireIommu(core);
    const options = checkGuestTableOptions(given);
    const stage1 = stage1Domain({ format: options.format, addressWidth: options.addressWidth });
    const zero = (gpa: bigint) => write(gpa, new Uint8Array(Number(PAGE_SIZE)));
    const fresh = options.root === undefined;
    const root = options.root === undefined ? takeGuestPage(options) : toU64(options.root, "root");
    let ctx: GuestTableContext | undefined;
    try {
      // A new root must be guest RAM before anything is made for it.
      if (fresh) guestPieces(core, root, Number(PAGE_SIZE));
      ctx = core.host.createDomain({ ...stage1, stage2: domain, root } as unknown as PageTableOptions) as unknown as GuestTableContext;
      if (fresh) zero(root);
    } catch (e) {
      ctx?.destroy();
      if (fresh) options.freeTable?.(root);
      throw e;
    }
    const made = ctx;
    this.guestTables.add(made);
    return new GuestPageTable(core.host.plane, made, options, () => this.guestTables.delete(made));
  }

  /** The stage 2 goes: every binding, then every guest table (a stage 2 with nested users cannot be destroyed). */
  releaseAll(): void {
    this.dropBindings(() => true);
    for (const ctx of this.guestTables) ctx.destroy();
    this.guestTables.clear();
  }
}

function dropPasidTable(device: Stage1Device): void {
  device.pasidTable?.destroy();
  device.pasidTable = undefined;
}
