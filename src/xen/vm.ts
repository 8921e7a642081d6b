// A VM of the hypervisor: memory behind its p2m, its own view of it
// (read/write by GPA), grants, and — for a driver domain — its devices and the
// IOMMU table they DMA through.
import { fail } from "../errors.js";
import { bool, isInstance, options, show } from "../args.js";
import { toLength, toU64, type Address } from "../addr.js";
import { bytes as checkBytes } from "../args.js";
import type { BackendIommu } from "./backend.js";
import type { Grant } from "./grants.js";
import type { P2m } from "./p2m.js";
import type { ShadowGtt, ShadowLayout } from "../shadow/shadow.js";
import type { XenShadowOptions } from "./shadow.js";
import { WriteTracks } from "./track.js";

export interface GrantOptions {
  /** The grantee may map it read-only only. Default false. */
  readOnly?: boolean;
}

/** A device assigned to a driver domain. */
export class XenDevice<Port = unknown> {
  /** @internal */
  constructor(readonly bdf: string, readonly vm: Vm<Port>, private readonly port: Port) {}

  /** The device's DMA: bus addresses go through its VM's IOMMU table (every access faults once the VM is destroyed). */
  get dma(): Port { return this.port; }
}

/** What a VM asks of its hypervisor. */
export interface VmCore {
  destroy(vm: Vm): void;
  shadowGtt(backend: Vm, layout: ShadowLayout, opts: XenShadowOptions): ShadowGtt;
}

export class Vm<Port = unknown> {
  /** @internal */
  readonly grants = new Map<number, Grant>();
  private nextGref = 1;
  private alive = true;
  /** @internal */
  iommuTable: BackendIommu | undefined;
  /** @internal Its pages a backend write-tracks (a PPGTT shadow's guest tables): its stores there trap to the shadow. */
  readonly tracks: WriteTracks;
  /** @internal */
  deviceList: XenDevice<Port>[] = [];

  /** @internal */
  constructor(
    /** The domain id (1, 2, …; never reused). */
    readonly id: number,
    readonly name: string,
    /** @internal */
    readonly p2m: P2m,
    private readonly core: VmCore,
  ) {
    this.tracks = new WriteTracks(p2m);
  }

  /** Pages of RAM the VM has (GFNs 0..gfnCount-1). */
  get gfnCount(): number { return this.p2m.gfnCount; }

  /** Whether the VM is still there (destroy() ends it). */
  get live(): boolean { return this.alive; }

  /** Whether it has devices (a driver domain, with an IOMMU table). */
  get driverDomain(): boolean { return this.iommuTable !== undefined; }

  /** The driver domain's IOMMU table and its delegated-mapping calls (ENODEV for a VM with no devices). */
  get iommu(): BackendIommu {
    this.check();
    if (this.iommuTable === undefined) fail("ENODEV", `VM ${this.id} has no devices, so no IOMMU table`);
    return this.iommuTable;
  }

  /**
   * A shadow of a served VM's GPU page table, kept by this driver domain for
   * its GPU: guest entries GMA → GFN become GMA → BFN (BFNs it allocates,
   * mapped by delegated mapping through `mapper`, by default one restricted
   * to the VM), and the GPU's DMA by GMA (`shadow.dma`) goes GTT → BFN → MFN
   * in one walk. Layouts: { format: 'ggtt', entries }, written by index;
   * { format: 'x86-64', levels: 4 }, a PPGTT in the VM's memory (setRoot):
   * its table pages are write-tracked, so the VM's own stores to them
   * (vm.write) update the shadow, and the shadow's tables are fresh pages of
   * this backend at BFNs above its memory. ENODEV for a VM with no devices;
   * EPERM for a VM not served, or a mapper that may not map it; EINVAL for
   * bad arguments or another backend's mapper.
   */
  shadowGtt(layout: ShadowLayout, opts: XenShadowOptions): ShadowGtt {
    this.check();
    return this.core.shadowGtt(this, layout, opts);
  }

  /** The devices assigned to it, in bdf order. */
  devices(): XenDevice<Port>[] { return [...this.deviceList]; }

  /** One assigned device (ENODEV for a device it does not have). */
  device(bdf: string): XenDevice<Port> {
    if (typeof bdf !== "string") fail("EINVAL", `device: bdf must be a string, got ${show(bdf)}`);
    const key = bdf.toLowerCase();
    const d = this.deviceList.find((x) => x.bdf === key);
    if (d === undefined) fail("ENODEV", `VM ${this.id} has no device ${key}`);
    return d;
  }

  /** The VM's own view of its RAM: len bytes at gpa (EINVAL beyond its memory). */
  read(gpa: Address, len: number): Uint8Array {
    this.check();
    const start = toU64(gpa, "read: gpa");
    const n = toLength(len, "read: len");
    this.span(start, n, "read");
    return this.p2m.read(start, n);
  }

  /**
   * Writes bytes at gpa in the VM's RAM (EINVAL beyond its memory). Stores
   * to a page a backend write-tracks (a guest GPU page table its PPGTT
   * shadow follows) trap to that shadow, entry by entry, as Xen hands them
   * to an ioreq server; they land all the same.
   */
  write(gpa: Address, bytes: Uint8Array): void {
    this.check();
    const start = toU64(gpa, "write: gpa");
    const b = checkBytes(bytes, "write: bytes");
    this.span(start, b.length, "write");
    this.tracks.write(start, b);
  }

  /** Lets `to` map guest frame gfn (read-only when asked): the grant reference. */
  grant(to: Vm, gfn: Address, given?: GrantOptions): number {
    this.check();
    if (!isInstance(to, Vm)) fail("EINVAL", "grant: to must be a Vm");
    const o = options(given, "grant options", ["readOnly"] as const);
    const readOnly = bool(o.readOnly, "grant: readOnly", false);
    const g = toU64(gfn, "grant: gfn");
    if (g >= BigInt(this.gfnCount)) fail("EINVAL", `grant: GFN ${g} is beyond VM ${this.id}'s ${this.gfnCount} pages`);
    if (to === this) fail("EINVAL", `grant: VM ${this.id} cannot grant to itself`);
    if (!to.live) fail("EINVAL", `grant: VM ${to.id} is destroyed`);
    const ref = this.nextGref++;
    this.grants.set(ref, { ref, to, gfn: Number(g), readOnly, maps: 0 });
    return ref;
  }

  /** Ends a grant: ENOENT for none, EBUSY while a backend maps it. */
  revokeGrant(gref: number): void {
    this.check();
    const g = typeof gref === "number" ? this.grants.get(gref) : undefined;
    if (g === undefined) fail(typeof gref === "number" ? "ENOENT" : "EINVAL", `revokeGrant: VM ${this.id} has no grant ${show(gref)}`);
    if (g.maps > 0) fail("EBUSY", `revokeGrant: grant ${gref} is mapped by VM ${g.to.id}`);
    this.grants.delete(gref);
  }

  /** The grant references it holds, ascending. */
  grantRefs(): number[] { return [...this.grants.keys()].sort((a, b) => a - b); }

  /**
   * Destroys the VM: every mapping of its memory is revoked from every
   * backend's table (IOTLB invalidated) before its frames go back to the
   * allocator; as a backend, its own table and devices go too.
   */
  destroy(): void {
    if (!this.alive) return;
    this.core.destroy(this);
    this.alive = false;
  }

  private span(start: bigint, len: number, what: string): void {
    if (start + BigInt(len) > BigInt(this.gfnCount) * 4096n) fail("EINVAL", `${what}: [${start}, +${len}) is beyond VM ${this.id}'s memory`);
  }

  private check(): void {
    if (!this.alive) fail("ENODEV", `VM ${this.id} is destroyed`);
  }
}
