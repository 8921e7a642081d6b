// A shadow GTT kept by a Xen driver domain for a VM it serves (XenGT done
// the way issue 10 asks: no MFN ever leaves the hypervisor). The guest's
// entries (GMA → GFN) are shadowed as GMA → BFN, the BFNs allocated here and
// mapped by delegated mapping through a RestrictedMapper; the GPU's context
// is a GGTT, or a PPGTT whose shadow tables are the backend's own pages at
// BFNs of the same range, over the backend's IOMMU context as stage 2, so
// one walk goes GTT → BFN → MFN. A PPGTT's guest tables are read through the
// backend's foreign access to the VM and write-tracked (guest.ts, track.ts). When the hypervisor revokes the VM's
// pages (unserve, VM destroy) it is told after the fact, and by default
// leaves the shadow entries where they are: the GPU faults at the IOMMU and
// the BFNs are quarantined (docs/xen-model.md, "Shadow GTT through
// delegated mapping").
import { bool, integer, isInstance, oneOf, options, show } from "../args.js";
import { fail, IommuError } from "../errors.js";
import type { DeviceFrame } from "../shadow/mapper.js";
import { ShadowGtt, shadowLayout, type GpuDomain, type ShadowLayout, type ShadowUnmapMode } from "../shadow/shadow.js";
import { RestrictedMapper, type BackendIommu, type XenCore } from "./backend.js";
import { BfnAllocator } from "./bfns.js";
import type { XenContext } from "./env.js";
import type { GpuTable } from "../shadow/context.js";
import { XenMapper } from "./mapper.js";
import { XenGuestTables } from "./guest.js";
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
  /** PPGTT: the GPU takes 2 MiB leaves, so a guest 2 MiB leaf is shadowed as one (512 BFNs, 2 MiB-aligned). Default true. */
  pages2M?: boolean;
}

/** @internal What the factory needs of the hypervisor. */
export interface XenShadowHost {
  core: XenCore;
  /** The GPU's context: `table` over the backend's IOMMU context, walked as one. */
  gpuContext(stage2: XenContext, table: GpuTable): GpuDomain;
  /** The backend's own BFNs: its memory 1:1, or all of RAM (exposeMfn). */
  ownBfns(backend: Vm): number;
  /** The bus address of the backend's own page gfn. */
  ownBus(backend: Vm, gfn: number): bigint;
  /** Input bits of the IOMMU context. */
  inputBits: number;
}

interface Registered { shadow: ShadowGtt; vm: Vm; mapper: XenMapper; mode: ShadowUnmapMode }

/** A backend's shadows, and the bus frames they share (one range per table: two shadows never pick the same BFN). */
interface PerTable { shadows: Set<Registered>; bfns: BfnAllocator }
const perTable = new WeakMap<BackendIommu, PerTable>();
/** The GGTT entry's address field: bits 12..38 (a PPGTT's BFNs stay below it too, so both kinds share one range). */
const GGTT_BFN_LIMIT = 2 ** 27;

/** @internal backend.shadowGtt(layout, opts), the backend a live driver domain. */
export function xenShadowGtt(host: XenShadowHost, backend: Vm, layout: ShadowLayout, given: XenShadowOptions): ShadowGtt {
  const table = backend.iommu;
  const checked = shadowLayout(layout);
  if (given === undefined) fail("EINVAL", "shadowGtt: give { vm } (the served VM whose GTT it is)");
  const o = options(given, "shadow options", ["vm", "mapper", "onUnmap", "scratchGfn", "pages2M"] as const);
  const vm = host.core.resolve(o.vm, "shadowGtt: vm");
  const mode = o.onUnmap === undefined ? "cache-only" : oneOf(o.onUnmap, "shadow onUnmap", ["invalidate-shadow", "cache-only"] as const);
  const scratchGfn = integer(o.scratchGfn ?? backend.gfnCount - 1, "shadowGtt: scratchGfn", 0, backend.gfnCount - 1);
  if (checked.format === "ggtt" && o.pages2M !== undefined) fail("EINVAL", "shadowGtt: pages2M is a PPGTT option (a GGTT has 4 KiB entries only)");
  const pages2M = bool(o.pages2M, "shadow pages2M", true);
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
  let shared = perTable.get(table);
  if (shared === undefined) {
    const first = Math.ceil(host.ownBfns(backend) / 512) * 512;
    shared = { shadows: new Set(), bfns: new BfnAllocator(first, Math.min(GGTT_BFN_LIMIT, 2 ** (host.inputBits - 12))) };
    perTable.set(table, shared);
  }
  const { shadows: set, bfns } = shared;
  const xenMapper = new XenMapper(mapper, vm, bfns);
  // The PPGTT's shadow tables: fresh pages of the backend at BFNs of the shadow's range.
  // A BFN the backend mapped itself (EEXIST) is not the shadow's to offer again: it is dropped, and the next one tried.
  const frame = (): DeviceFrame => {
    for (;;) {
      const bfn = bfns.alloc(1) ?? fail("ENOMEM", `shadowGtt: no bus frame left for a shadow table of backend ${backend.id}`);
      try {
        return table.ownFrame(bfn, () => bfns.free(bfn, 1));
      } catch (e) {
        if (e instanceof IommuError && e.code === "EEXIST") continue;
        bfns.free(bfn, 1);
        throw e;
      }
    }
  };
  const guest = new XenGuestTables(host.core, backend, vm);
  const scratchBus = host.ownBus(backend, scratchGfn);
  const scratch: DeviceFrame = {
    bus: scratchBus,
    write: (offset, bytes) => backend.write(BigInt(scratchGfn) * 4096n + BigInt(offset), bytes),
    // The backend's own page: it stays the backend's.
    release: () => {},
  };
  const root = checked.format === "ggtt" ? undefined : frame();
  let gpu: GpuDomain;
  try {
    gpu = host.gpuContext(table.context, root === undefined ? (checked as { format: "ggtt"; entries: number }) : { format: "x86-64", root: root.bus });
  } catch (e) {
    root?.release();
    throw e;
  }
  const shadow: ShadowGtt = new ShadowGtt({
    layout: checked, gpu, mapper: xenMapper, guest, frame, scratch, root,
    mode, pages2M,
    onDestroy: () => { set.delete(entry); },
  });
  guest.sink = (gpa, value) => shadow.trapWrite(gpa, value);
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
  for (const r of [...(perTable.get(table)?.shadows ?? [])]) {
    if (r.vm !== vm) continue;
    r.mapper.retire(r.mode === "cache-only" ? "quarantine" : "free", () => r.shadow.revoke(0n, BigInt(vm.gfnCount) * 4096n));
  }
}

/** @internal The backend is being destroyed: its shadows go first, while its table is still there. */
export function destroyShadows(table: BackendIommu): void {
  for (const r of [...(perTable.get(table)?.shadows ?? [])]) r.shadow.destroy();
}

/** The backend table a restricted mapper maps into (its private field: a mapper is checked, never trusted by shape). */
function mapperTable(m: RestrictedMapper): BackendIommu {
  return (m as unknown as { iommu: BackendIommu }).iommu;
}
