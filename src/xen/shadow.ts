// A shadow GTT kept by a Xen driver domain for a VM it serves (XenGT done
// the way issue 10 asks: no MFN ever leaves the hypervisor). The guest's
// GGTT entries (GMA → GFN) are shadowed as GMA → BFN, the BFNs allocated
// here and mapped by delegated mapping through a RestrictedMapper; the GPU's
// context is a ggtt domain over the backend's own IOMMU context as stage 2,
// so one walk goes GTT → BFN → MFN. When the hypervisor revokes the VM's
// pages (unserve, VM destroy) it is told after the fact, and by default
// leaves the shadow entries where they are: the GPU faults at the IOMMU and
// the BFNs are quarantined (docs/xen-model.md, "Shadow GTT through
// delegated mapping").
import { integer, isInstance, oneOf, options, show } from "../args.js";
import { fail } from "../errors.js";
import type { DeviceFrame, GuestTables } from "../shadow/mapper.js";
import { ShadowGtt, type GpuDomain, type ShadowLayout, type ShadowUnmapMode } from "../shadow/shadow.js";
import { RestrictedMapper, type BackendIommu, type XenCore } from "./backend.js";
import { BfnAllocator } from "./bfns.js";
import type { XenContext } from "./env.js";
import { XenMapper } from "./mapper.js";
import type { Vm } from "./vm.js";

export interface XenShadowOptions {
  /** The served VM whose GTT this is (or its id). */
  vm: Vm | number;
  /** Where the shadow maps the VM's frames: a mapper of this backend that may map vm. Default: backend.iommu.restrict({ vms: [vm] }). */
  mapper?: RestrictedMapper;
  /**
   * What the shadow does once the hypervisor revoked the VM's pages.
   * 'cache-only' (default): its entries stay on the revoked BFNs, which are
   * never reused, so the GPU faults at the IOMMU. 'invalidate-shadow': the
   * entries go too, and the GPU faults at its own MMU.
   */
  onUnmap?: ShadowUnmapMode;
  /** The backend's own page the scratch entries aim at (its BFN = GFN). Default its last page. */
  scratchGfn?: number;
}

/** @internal What the factory needs of the hypervisor. */
export interface XenShadowHost {
  core: XenCore;
  /** A ggtt domain of `entries` over the backend's IOMMU context, as the GPU's context. */
  gpuContext(stage2: XenContext, entries: number): GpuDomain;
  /** The backend's own BFNs: its memory 1:1, or all of RAM (exposeMfn). */
  ownBfns(backend: Vm): number;
  /** The bus address of the backend's own page gfn. */
  ownBus(backend: Vm, gfn: number): bigint;
  /** Input bits of the IOMMU context. */
  inputBits: number;
}

interface Registered { shadow: ShadowGtt; vm: Vm; mapper: XenMapper; mode: ShadowUnmapMode }

const shadowsOf = new WeakMap<BackendIommu, Set<Registered>>();
/** The GGTT entry's address field: bits 12..38. */
const GGTT_BFN_LIMIT = 2 ** 27;

/** @internal backend.shadowGtt(layout, opts), the backend a live driver domain. */
export function xenShadowGtt(host: XenShadowHost, backend: Vm, layout: ShadowLayout, given: XenShadowOptions): ShadowGtt {
  const table = backend.iommu;
  const l = options(layout, "shadow layout", ["format", "entries", "levels"] as const);
  if (l.format === "x86-64") fail("EOPNOTSUPP", "shadowGtt: a Xen backend shadows a GGTT only (a PPGTT shadow is not built)");
  if (l.format !== "ggtt") fail("EINVAL", `shadowGtt: the layout's format is 'ggtt', got ${show(l.format)}`);
  if (l.levels !== undefined) fail("EINVAL", "shadowGtt: a GGTT layout has entries, not levels");
  const entries = integer(l.entries, "shadow entries", 512, 2 ** 20);
  if ((entries & (entries - 1)) !== 0) fail("EINVAL", `shadowGtt: entries must be a power of two, got ${entries}`);
  if (given === undefined) fail("EINVAL", "shadowGtt: give { vm } (the served VM whose GTT it is)");
  const o = options(given, "shadow options", ["vm", "mapper", "onUnmap", "scratchGfn"] as const);
  const vm = host.core.resolve(o.vm, "shadowGtt: vm");
  const mode = o.onUnmap === undefined ? "cache-only" : oneOf(o.onUnmap, "shadow onUnmap", ["invalidate-shadow", "cache-only"] as const);
  const scratchGfn = integer(o.scratchGfn ?? backend.gfnCount - 1, "shadowGtt: scratchGfn", 0, backend.gfnCount - 1);
  if (o.mapper !== undefined && !isInstance(o.mapper, RestrictedMapper)) fail("EINVAL", `shadowGtt: mapper must be a RestrictedMapper (backend.iommu.restrict()), got ${show(o.mapper)}`);
  if (vm === backend || !host.core.isServed(backend, vm)) fail("EPERM", `shadowGtt: VM ${vm.id} is not served by backend ${backend.id}`);
  let mapper: RestrictedMapper;
  if (o.mapper !== undefined) {
    if (mapperTable(o.mapper) !== table) fail("EINVAL", `shadowGtt: the mapper is not backend ${backend.id}'s`);
    if (!o.mapper.vmIds.includes(vm.id)) fail("EPERM", `shadowGtt: the mapper may not map VM ${vm.id}'s memory`);
    mapper = o.mapper;
  } else {
    mapper = table.restrict({ vms: [vm] });
  }
  const first = Math.ceil(host.ownBfns(backend) / 512) * 512;
  const bfns = new BfnAllocator(first, Math.min(GGTT_BFN_LIMIT, 2 ** (host.inputBits - 12)));
  const xenMapper = new XenMapper(mapper, vm, bfns);
  const gpu = host.gpuContext(table.context, entries);
  const scratchBus = host.ownBus(backend, scratchGfn);
  const scratch: DeviceFrame = {
    bus: scratchBus,
    write: (offset, bytes) => backend.write(BigInt(scratchGfn) * 4096n + BigInt(offset), bytes),
    // The backend's own page: it stays the backend's.
    release: () => {},
  };
  const set = shadowsOf.get(table) ?? new Set<Registered>();
  shadowsOf.set(table, set);
  const shadow: ShadowGtt = new ShadowGtt({
    layout: { format: "ggtt", entries }, gpu, mapper: xenMapper, guest: NO_GUEST_TABLES, frame: noFrame, scratch, root: undefined,
    mode, pages2M: false,
    onDestroy: () => { set.delete(entry); },
  });
  const entry: Registered = { shadow, vm, mapper: xenMapper, mode };
  set.add(entry);
  return shadow;
}

/**
 * @internal The hypervisor revoked every page of vm from the backend's table
 * (and invalidated): each shadow of that VM lets go of its frames without
 * unmapping them again.
 */
export function revokeShadows(table: BackendIommu, vm: Vm): void {
  for (const r of [...(shadowsOf.get(table) ?? [])]) {
    if (r.vm !== vm) continue;
    r.mapper.retire(r.mode === "cache-only" ? "quarantine" : "free", () => r.shadow.revoke(0n, BigInt(vm.gfnCount) * 4096n));
  }
}

/** @internal The backend is being destroyed: its shadows go first, while its table is still there. */
export function destroyShadows(table: BackendIommu): void {
  for (const r of [...(shadowsOf.get(table) ?? [])]) r.shadow.destroy();
}

/** The backend table a restricted mapper maps into (its private field: a mapper is checked, never trusted by shape). */
function mapperTable(m: RestrictedMapper): BackendIommu {
  return (m as unknown as { iommu: BackendIommu }).iommu;
}

// A GGTT has no guest tables in guest memory and no shadow table frames.
const noFrame = (): DeviceFrame => fail("EOPNOTSUPP", "a Xen shadow GGTT has no shadow table frames");
const NO_GUEST_TABLES: GuestTables = {
  read: () => fail("EOPNOTSUPP", "a Xen shadow GGTT reads no guest tables"),
  write: () => fail("EOPNOTSUPP", "a Xen shadow GGTT writes no guest tables"),
  protect: () => fail("EOPNOTSUPP", "a Xen shadow GGTT tracks no guest tables"),
  unprotect: () => {},
};
