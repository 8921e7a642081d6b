// The hypervisor: VMs whose memory it owns through per-VM p2ms, driver
// domains (VMs given host devices) whose devices DMA through their own IOMMU
// table, and the toolstack's policy of which backend serves which VM.
//
// The model's rule is revocation: unserve() and vm.destroy() take every
// mapping of the VM's memory out of the backends' tables and invalidate the
// IOTLB before they return, and a frame goes back to the allocator only
// after that, so no mapping ever holds a freed frame. (Xen instead keeps a
// page reference for each foreign mapping and frees the page when the last
// one goes; see docs/xen-model.md.)
import { fail } from "../errors.js";
import { bool, integer, isInstance, list, options, show } from "../args.js";
import { toU64, type Address } from "../addr.js";
import * as abi from "../engine/abi.js";
import { BackendIommu, type XenCore } from "./backend.js";
import type { XenEnv } from "./env.js";
import { P2m, RW } from "./p2m.js";
import { Vm, XenDevice } from "./vm.js";
import { gfnBitsOf, multiplexOptions, MultiplexedIommu, type MultiplexOptions } from "./multiplex.js";
import { destroyShadows, revokeShadows, xenShadowGtt, type XenShadowHost } from "./shadow.js";

export interface HypervisorOptions {
  /**
   * The insecure baseline: gfnToMfn works, and a driver domain's IOMMU table
   * is the old dom0 default, all of RAM 1:1 (BFN = MFN). Default false.
   */
  exposeMfn?: boolean;
}

export interface VmSpec {
  /** Default `vm<id>`. */
  name?: string;
  /** Bytes of RAM: a positive multiple of 4 KiB. */
  memory: Address;
  /** Host devices (bdf) it drives: it becomes a driver domain. Each must be unbound (driver null) with its whole IOMMU group listed. */
  devices?: readonly string[];
  /**
   * With devices: one multiplexed IOMMU table instead of per-mapping
   * delegation — each VM it serves is mapped whole at BFN = (slot << k) | GFN
   * (k = ceil(log2(host RAM pages))); map/mapGrant/restrict are EOPNOTSUPP.
   * EINVAL without devices or when vmidBits + k passes the IOMMU's width.
   */
  multiplexed?: MultiplexOptions;
}

/** @internal The options, checked (EINVAL). */
export function hypervisorOptions(given: unknown): Required<HypervisorOptions> {
  const o = options(given, "hypervisor options", ["exposeMfn"] as const);
  return { exposeMfn: bool(o.exposeMfn, "hypervisor: exposeMfn", false) };
}

export class Hypervisor<Port = unknown> {
  /** Whether gfnToMfn and the 1:1 dom0 tables of the insecure baseline are on. */
  readonly exposeMfn: boolean;
  private readonly vmList = new Map<number, Vm<Port>>();
  private readonly servedBy = new Map<Vm<Port>, Set<Vm<Port>>>();
  private nextId = 1;
  private readonly core: XenCore;
  private readonly shadowHost: XenShadowHost;

  /** @internal */
  constructor(private readonly env: XenEnv<Port>, given?: HypervisorOptions) {
    this.exposeMfn = hypervisorOptions(given).exposeMfn;
    this.core = {
      resolve: (vm, what) => this.resolve(vm, what),
      isServed: (backend, vm) => this.servedBy.get(backend as Vm<Port>)?.has(vm as Vm<Port>) ?? false,
    };
    this.shadowHost = {
      core: this.core,
      gpuContext: (stage2, table) => env.gpuContext(stage2, table),
      ownBfns: (b) => (this.exposeMfn ? Number(env.ram.size / 4096n) : b.gfnCount),
      ownBus: (b, gfn) => (this.exposeMfn ? b.p2m.mfnAddress(gfn) : BigInt(gfn) * 4096n),
      inputBits: env.inputBits,
    };
  }

  /**
   * A new VM with `memory` bytes of fresh zeroed frames (not contiguous).
   * With devices it is a driver domain: they DMA through its own IOMMU table,
   * which maps its own memory 1:1 (BFN = GFN) and nothing else. ENODEV for no
   * such device; EINVAL for a device with no IOMMU or part of a group; EBUSY
   * for a device with a driver or a group VFIO or another VM holds; ENOMEM
   * when frames run out. Nothing is made on a refusal.
   */
  createVm(spec: VmSpec): Vm<Port> {
    if (spec === undefined) fail("EINVAL", "createVm needs { memory }");
    const o = options(spec, "createVm spec", ["name", "memory", "devices", "multiplexed"] as const);
    if (o.memory === undefined) fail("EINVAL", "createVm: memory is required");
    const memory = toU64(o.memory as Address, "createVm: memory");
    if (memory === 0n || memory % 4096n !== 0n) fail("EINVAL", `createVm: memory ${memory} is not a positive multiple of 4 KiB`);
    if (memory > this.env.ram.size) fail("ENOMEM", `createVm: ${memory} bytes is more than the host's RAM`);
    if (o.name !== undefined && typeof o.name !== "string") fail("EINVAL", `createVm: name must be a string, got ${show(o.name)}`);
    const bdfs = o.devices === undefined ? [] : list(o.devices, "createVm: devices");
    const groups = this.checkDevices(bdfs);
    const gfnBits = gfnBitsOf(this.env.ram.size);
    const mux = o.multiplexed === undefined ? undefined : multiplexOptions(o.multiplexed, gfnBits, this.env.inputBits);
    if (mux !== undefined && bdfs.length === 0) fail("EINVAL", "createVm: multiplexed is for a driver domain (give it devices)");
    const gfnCount = Number(memory / 4096n);
    const p2m = P2m.create(this.env, gfnCount);
    const id = this.nextId;
    const vm = new Vm<Port>(id, (o.name as string | undefined) ?? `vm${id}`, p2m, {
      destroy: (v) => this.destroy(v as Vm<Port>),
      shadowGtt: (b, layout, opts) => xenShadowGtt(this.shadowHost, b, layout, opts),
    });
    if (groups.devices.length > 0) {
      try {
        vm.iommuTable = this.makeTable(vm, mux === undefined ? undefined : { vmidBits: mux.vmidBits, gfnBits });
      } catch (e) {
        p2m.destroy();
        throw e;
      }
      for (const g of groups.ids) this.env.topology.hold(g, true);
      const table = vm.iommuTable;
      vm.deviceList = groups.devices.map((bdf) => new XenDevice<Port>(bdf, vm, this.env.makePort(() => table.contextId, bdf)));
      this.servedBy.set(vm, new Set());
    }
    this.nextId++;
    this.vmList.set(id, vm);
    return vm;
  }

  /** The live VMs, by id. */
  vms(): Vm<Port>[] { return [...this.vmList.values()]; }

  /**
   * The toolstack lets `backend` (a driver domain) map `vm`'s memory. EEXIST
   * when it already does. A multiplexed backend gets vm's whole memory in its
   * table now, in a free slot (ENOSPC: none; ENOMEM: no table frame; nothing
   * changed on either).
   */
  serve(backend: Vm<Port>, vm: Vm<Port>): void {
    const b = this.backendOf(backend, "serve");
    const v = this.resolve(vm, "serve: vm");
    if (v === b) fail("EINVAL", `serve: VM ${b.id} cannot serve itself`);
    const set = this.servedBy.get(b)!;
    if (set.has(v)) fail("EEXIST", `serve: backend ${b.id} already serves VM ${v.id}`);
    if (b.iommuTable instanceof MultiplexedIommu) b.iommuTable.attach(v);
    set.add(v);
  }

  /**
   * Ends it: every page of vm's memory in backend's table (delegated or
   * granted) is unmapped and the IOTLB invalidated before this returns; the
   * pages revoked. ENOENT when backend does not serve vm.
   */
  unserve(backend: Vm<Port>, vm: Vm<Port>): number {
    const b = this.backendOf(backend, "unserve");
    const v = this.resolve(vm, "unserve: vm");
    const set = this.servedBy.get(b)!;
    if (!set.has(v)) fail("ENOENT", `unserve: backend ${b.id} does not serve VM ${v.id}`);
    set.delete(v);
    const pages = b.iommuTable!.revoke(v);
    revokeShadows(b.iommuTable!, v);
    return pages;
  }

  /** The VMs backend serves, by id. */
  served(backend: Vm<Port>): Vm<Port>[] {
    const b = this.backendOf(backend, "served");
    return [...this.servedBy.get(b)!].sort((x, y) => x.id - y.id);
  }

  /** The hypercall that was removed: EPERM, unless the exposeMfn baseline is on (then the MFN of vm's gfn). */
  gfnToMfn(vm: Vm<Port>, gfn: Address): bigint {
    const v = this.resolve(vm, "gfnToMfn: vm");
    const g = toU64(gfn, "gfnToMfn: gfn");
    if (!this.exposeMfn) fail("EPERM", "gfnToMfn: MFNs are not exposed (host.hypervisor({ exposeMfn: true }) for the insecure baseline)");
    if (g >= BigInt(v.gfnCount)) fail("EINVAL", `gfnToMfn: GFN ${g} is beyond VM ${v.id}'s memory`);
    return v.p2m.mfnAddress(Number(g)) / 4096n;
  }

  private destroy(vm: Vm<Port>): void {
    for (const [backend, set] of this.servedBy) {
      if (backend === vm) continue;
      set.delete(vm);
      backend.iommuTable!.revoke(vm);
      revokeShadows(backend.iommuTable!, vm);
    }
    vm.grants.clear();
    vm.tracks.clear();
    const table = vm.iommuTable;
    if (table !== undefined) {
      destroyShadows(table);
      table.destroy();
      this.servedBy.delete(vm);
      const groups = new Set(vm.deviceList.map((d) => this.env.topology.device(d.bdf).group!));
      for (const g of groups) this.env.topology.hold(g, false);
    }
    vm.p2m.destroy();
    this.vmList.delete(vm.id);
  }

  private makeTable(vm: Vm<Port>, mux: { vmidBits: number; gfnBits: number } | undefined): BackendIommu {
    const env = this.env;
    const context = env.createContext();
    const own = this.exposeMfn ? Number(env.ram.size / 4096n) : vm.gfnCount;
    let ok = true;
    if (this.exposeMfn) {
      ok = env.plane.mapRange(context.id, 0n, env.ram.size - 1n, 0n, RW) === abi.ST_OK;
    } else {
      for (let gfn = 0; gfn < vm.gfnCount && ok; gfn++) {
        const at = BigInt(gfn) * 4096n;
        ok = env.plane.mapRange(context.id, at, at + 4095n, vm.p2m.mfnAddress(gfn), RW) === abi.ST_OK;
        if (!ok && gfn > 0) env.plane.unmapRange(context.id, 0n, at - 1n);
      }
    }
    if (!ok) {
      context.destroy();
      fail("ENOMEM", `no frame left for VM ${vm.id}'s IOMMU table`);
    }
    if (mux !== undefined) return new MultiplexedIommu(env as XenEnv<unknown>, this.core, vm as Vm, context, own, mux.vmidBits, mux.gfnBits);
    return new BackendIommu(env as XenEnv<unknown>, this.core, vm as Vm, context, own);
  }

  /** Devices for a driver domain: each unbound, behind an IOMMU, whole groups. */
  private checkDevices(bdfs: unknown[]): { devices: string[]; ids: number[] } {
    const topology = this.env.topology;
    const devices: string[] = [];
    const ids = new Set<number>();
    for (const [i, given] of bdfs.entries()) {
      if (typeof given !== "string") fail("EINVAL", `createVm: devices[${i}] must be a bdf string, got ${show(given)}`);
      const d = topology.device(given);
      if (devices.includes(d.bdf)) fail("EINVAL", `createVm: ${d.bdf} is listed twice`);
      if (d.group === null) fail("EINVAL", `createVm: ${d.bdf} has no IOMMU in front of it: a driver domain's device must be isolated by one`);
      if (topology.isHeld(d.group)) fail("EBUSY", `createVm: ${d.bdf}'s group ${d.group} is assigned to another VM`);
      if (topology.isClaimed(d.group)) fail("EBUSY", `createVm: ${d.bdf}'s group ${d.group} is in a VFIO container`);
      if (d.driver !== null) fail("EBUSY", `createVm: ${d.bdf} is bound to ${d.driver}; unbind it (driver null) to assign it`);
      devices.push(d.bdf);
      ids.add(d.group);
    }
    for (const g of ids) {
      const missing = topology.devicesOf(g).find((d) => !devices.includes(d.bdf));
      if (missing !== undefined) fail("EINVAL", `createVm: group ${g} also has ${missing.bdf}: a group is assigned whole`);
    }
    return { devices: devices.sort(), ids: [...ids] };
  }

  /** A driver domain of this hypervisor (EINVAL for anything else; ENODEV for a VM with no devices or one destroyed). */
  private backendOf(backend: unknown, what: string): Vm<Port> {
    const b = this.resolve(backend, `${what}: backend`);
    if (b.iommuTable === undefined) fail("ENODEV", `${what}: VM ${b.id} has no devices: it is not a driver domain`);
    return b;
  }

  /** A live VM of this hypervisor, by object or id (EINVAL for neither; EPERM for none live: nothing can be served). */
  private resolve(vm: unknown, what: string): Vm<Port> {
    if (typeof vm === "number") {
      integer(vm, what, 0, Number.MAX_SAFE_INTEGER);
      const v = this.vmList.get(vm);
      if (v === undefined) fail("EPERM", `${what}: no live VM ${vm}`);
      return v;
    }
    if (!isInstance(vm, Vm)) fail("EINVAL", `${what} must be a Vm or its id, got ${show(vm)}`);
    if (this.vmList.get(vm.id) !== vm) fail("EPERM", `${what}: VM ${vm.id} is not a live VM of this hypervisor`);
    return vm as Vm<Port>;
  }
}
