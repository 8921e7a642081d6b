// What "nothing changed" means for a refused call: RAM byte for byte, the
// IOTLB and fault counters, free frames, the PASID node pool, and the facade's
// own state (devices and drivers, containers' drivers, groups, mappings,
// PASIDs and dirty tracking, processes' pins and areas, group membership).
//
// RAM is compared against a shadow copy rather than hashed: Buffer.compare is
// a memcmp, about ten times faster than any hash written in JS, so every call
// can afford it, and a difference comes with the first HPA that changed.
import type { HostWorld } from "./world.js";

export class RamShadow {
  private readonly copy: Uint8Array;

  constructor(private readonly live: Uint8Array) {
    this.copy = live.slice();
  }

  same(): boolean {
    return Buffer.compare(this.live, this.copy) === 0;
  }

  /** The first HPA whose byte differs from the shadow, or -1. */
  firstDifference(): number {
    const a = this.live, b = this.copy;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
    return -1;
  }

  /** Takes RAM as it is now (after a call that was allowed to change it). */
  resync(): void {
    if (!this.same()) this.copy.set(this.live);
  }
}

/** The shadow of a host's whole RAM. */
export function shadowRam(w: HostWorld): RamShadow {
  return new RamShadow(w.host.ram.view(0n, Number(w.host.ram.size)));
}

export type FacadeState = Record<string, string>;

function text(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? `${v.toString(16)}n` : v)) ?? "undefined";
}

/**
 * The facade state of one host world, one entry per observable. A read that
 * throws (a closed container's PASIDs, say) is recorded as what it threw, so
 * "was readable, now throws" is a change too.
 */
export function facadeState(w: HostWorld): FacadeState {
  const state: FacadeState = {};
  const put = (key: string, read: () => unknown): void => {
    try {
      state[key] = text(read());
    } catch (e) {
      state[key] = `threw ${(e as { code?: string })?.code ?? (e as Error)?.name ?? typeof e}`;
    }
  };
  const { host } = w;
  // One entry per IOTLB counter, so a finding says which one moved.
  let counters: object = {};
  put("IOTLB", () => { counters = host.iotlb.stats(); return "read"; });
  for (const [name, value] of Object.entries(counters)) state[`IOTLB ${name}`] = String(value);
  put("faults pending", () => host.faults.pending);
  put("faults overflow", () => host.faults.overflow);
  put("frames free", () => host.ram.framesFree);
  // nodeVisits is a debug counter of searches, which a refused ENOSPC alloc legitimately makes.
  put("PASID nodes free", () => host.pasids.stats().nodesFree);
  put("devices", () => host.iommuGroups().map((g) => [g, host.devicesOf(g).map((d) => `${d.bdf} ${d.driver}`)]));
  w.containers.forEach((c, i) => {
    put(`container ${i} driver`, () => c.iommuType);
    put(`container ${i} groups`, () => c.groups);
    put(`container ${i} mappings`, () => c.mappings().map((m) => [m.iova, m.last, m.vaddr, m.read, m.write, m.process.id]));
    put(`container ${i} PASIDs`, () => c.pasid.held());
    put(`container ${i} dirty tracking`, () => c.dirty.tracking);
    put(`container ${i} doorbell`, () => c.msiDoorbellIova);
    put(`container ${i} vendor pins`, () => c.mappings().flatMap((m) => {
      const pins: string[] = [];
      for (let a = m.iova; a <= m.last && a - m.iova < 64n * 0x1000n; a += 0x1000n) {
        const r = c.external.pinned(a);
        if (r) pins.push(`${a}:${r.hpa}x${r.refs}`);
      }
      return pins;
    }));
  });
  w.shadows.forEach(({ gtt, entries }, i) => {
    put(`shadow ${i} stats`, () => gtt.stats());
    put(`shadow ${i} entries`, () => entries.map((e) => gtt.guestRead(e)));
  });
  for (const vm of w.hypervisor.vms()) {
    put(`VM ${vm.id} grants`, () => vm.grantRefs());
    if (vm.driverDomain) {
      put(`VM ${vm.id} served`, () => w.hypervisor.served(vm).map((v) => v.id));
      put(`VM ${vm.id} IOMMU mappings`, () => vm.iommu.mappings());
    }
  }
  put("VMs", () => w.hypervisor.vms().map((v) => [v.id, v.name, v.gfnCount]));
  w.processes.forEach((p, i) => {
    put(`process ${i} locked`, () => p.lockedBytes);
    put(`process ${i} areas`, () => p.mappings);
    put(`process ${i} exited`, () => p.exited);
  });
  for (const t of w.targets) {
    if (t.cls === "VfioGroup") put(`${t.label} container`, () => w.containers.indexOf((t.obj as { container: never }).container));
    if (t.cls === "PasidTable") put(`${t.label} entries`, () => (t.obj as { entries(): unknown }).entries());
  }
  return state;
}

/** Keys whose values differ between two facade states. */
export function changedKeys(before: FacadeState, after: FacadeState): string[] {
  const keys = new Set([...Object.keys(before), ...Object.keys(after)]);
  return [...keys].filter((k) => before[k] !== after[k]);
}
