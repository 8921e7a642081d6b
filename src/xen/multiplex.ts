// The multiplexed alternative to delegated mapping (the 2014 xen-devel
// sketch): one IOMMU table per driver domain in which every VM it serves has
// all of its memory mapped, at BFN = (slot << k) | GFN. Serving a VM maps it
// whole; there is no per-mapping call, so the backend names a guest page by
// arithmetic alone — and a wrong slot in that arithmetic (a backend bug)
// reaches another served VM's page instead of faulting. Isolation between
// the VMs it serves then rests on the backend's own audit of every BFN.
//
//   BFN:  | slot (vmidBits) | GFN (k bits) |
//   slot 0 is the backend's own memory (BFN = GFN); served VMs take 1.. .
//
// k is fixed per host: the bits of the largest GFN space a VM can have
// (ceil(log2(host RAM pages))), so every VM's GFNs fit under one slot.
import { fail } from "../errors.js";
import { integer, isInstance, options, show } from "../args.js";
import { BackendIommu, type ForeignMapRequest, type GrantMapRequest, type RestrictOptions, type RestrictedMapper, type XenCore } from "./backend.js";
import type { XenContext, XenEnv } from "./env.js";
import { Vm } from "./vm.js";

export interface MultiplexOptions {
  /** Slot bits: at most 2^vmidBits − 1 served VMs at once (ENOSPC on serve beyond). */
  vmidBits: number;
}

/** @internal The GFN bits k of a host with ramSize bytes: the largest GFN space a VM can have. */
export function gfnBitsOf(ramSize: bigint): number {
  let k = 0;
  while (1n << BigInt(k) < ramSize / 4096n) k++;
  return k;
}

/** @internal The options, checked (EINVAL): vmidBits + k must fit the IOMMU's input width. */
export function multiplexOptions(given: unknown, gfnBits: number, inputBits: number): MultiplexOptions {
  const o = options(given, "createVm: multiplexed", ["vmidBits"] as const);
  const room = inputBits - 12 - gfnBits;
  if (o.vmidBits === undefined) fail("EINVAL", "createVm: multiplexed.vmidBits is required");
  return { vmidBits: integer(o.vmidBits, `createVm: multiplexed.vmidBits (${gfnBits} GFN bits in a ${inputBits}-bit IOMMU)`, 1, Math.min(room, 30)) };
}

/**
 * A driver domain's multiplexed table (createVm({ multiplexed })): each
 * served VM's whole memory at BFN = (slot << gfnBits) | GFN. map, mapGrant
 * and restrict are EOPNOTSUPP: serve() is the only way memory gets in, and
 * unserve()/destroy revoke the whole slot (IOTLB invalidated) before they
 * return. query() and mappings() tell each page as usual.
 */
export class MultiplexedIommu extends BackendIommu {
  private readonly slots = new Map<Vm, number>();

  /** @internal */
  constructor(env: XenEnv<unknown>, core: XenCore, owner: Vm, context: XenContext, ownBfns: number,
    /** Slot bits: at most 2^vmidBits − 1 served VMs. */
    readonly vmidBits: number,
    /** k: GFN bits under each slot. */
    readonly gfnBits: number) {
    super(env, core, owner, context, ownBfns);
  }

  /** The slot of a served VM (1..2^vmidBits − 1), or undefined. */
  slotOf(vm: Vm): number | undefined { return this.slots.get(vm); }

  /** Where a served VM's gfn is: (slot << gfnBits) | gfn (ENOENT when not served, EINVAL beyond its memory). */
  busFrame(vm: Vm, gfn: number): bigint {
    if (!isInstance(vm, Vm)) fail("EINVAL", `busFrame: vm must be a Vm, got ${show(vm)}`);
    const slot = this.slots.get(vm);
    if (slot === undefined) fail("ENOENT", `busFrame: VM ${vm.id} is not served by backend ${this.owner.id}`);
    integer(gfn, "busFrame: gfn", 0, vm.gfnCount - 1);
    return (BigInt(slot) << BigInt(this.gfnBits)) | BigInt(gfn);
  }

  override map(_request: ForeignMapRequest): bigint {
    return fail("EOPNOTSUPP", `map: backend ${this.owner.id}'s table is multiplexed: serve() maps a VM whole`);
  }

  override mapGrant(_request: GrantMapRequest): bigint {
    return fail("EOPNOTSUPP", `mapGrant: backend ${this.owner.id}'s table is multiplexed: serve() maps a VM whole`);
  }

  override restrict(_given: RestrictOptions): RestrictedMapper {
    return fail("EOPNOTSUPP", `restrict: backend ${this.owner.id}'s table is multiplexed: there is no per-mapping call to restrict`);
  }

  /** @internal serve(): maps vm whole in the lowest free slot (ENOSPC: none; ENOMEM: nothing kept). */
  attach(vm: Vm): void {
    this.live();
    const used = new Set(this.slots.values());
    let slot = 1;
    while (used.has(slot)) slot++;
    if (slot >= 2 ** this.vmidBits) fail("ENOSPC", `serve: backend ${this.owner.id}'s multiplexed table has no free slot (${this.vmidBits} VMID bits: ${2 ** this.vmidBits - 1} VMs)`);
    this.place(slot * 2 ** this.gfnBits, vm, 0, vm.gfnCount, true, undefined, undefined);
    this.slots.set(vm, slot);
  }

  /** @internal unserve()/destroy: the slot's pages go (invalidated) and the slot is free again. */
  override revoke(vm: Vm): number {
    const pages = super.revoke(vm);
    this.slots.delete(vm);
    return pages;
  }
}
