// Plausible valid arguments per method, so that with one argument hostile the
// others get the call past its first check and the hostile one is what it
// trips on. A method missing here is still fuzzed, with every argument
// hostile; keys are "Class.method" as the surface names them.
//
// Generators may call the API to make an argument (a frame to free, a PASID
// to bind): the runner takes the state fingerprint after they run.
import type { Rng } from "./rng.js";
import { GUEST_BYTES, PAGE, type HostWorld, type Target } from "./world.js";

type Generator = (t: Target, rng: Rng, w: HostWorld) => unknown[];

/** A page inside the target's hinted window. */
function page(t: Target, rng: Rng): bigint {
  return (t.hint.base ?? 0n) + BigInt(rng.below(t.hint.pages ?? 1)) * PAGE;
}

/** An entry of a shadow GTT: a GGTT index, or { gpa } in a PPGTT's guest tables. */
function entryOf(t: Target, rng: Rng): number | { gpa: bigint } {
  const gtt = t.obj as { layout: { format: string } };
  return gtt.layout.format === "ggtt" ? rng.below(512) : { gpa: page(t, rng) + 8n * BigInt(rng.below(512)) };
}

const rw = () => ({ read: true, write: true });
const bytes = (n: number) => new Uint8Array(n).fill(0xa5);

const GENERATORS: Record<string, Generator> = {
  // ---- the module
  "module.createHost": (_t, rng) => [{ arch: rng.pick(["vtd", "smmuv3"]), ramSize: 1 << 20, faultRingSize: 16, bufferArenaSize: 0, pasidNodes: 16 }],

  // ---- Host
  "Host.createPageTable": (_t, rng) => [rng.pick([
    { format: "x86-64", levels: 4 }, { format: "x86-64", levels: 5, nx: true }, { format: "vtd-sl", inputBits: 39 },
    { format: "arm64", inputBits: 39, stage: 1 }, { format: "arm64", stage: 2, inputBits: 40, physAddrWidth: 40 },
  ])],
  "Host.createDomain": (_t, rng, w) => [rng.pick([
    { format: "x86-64", levels: 4, accessedDirty: true, eafe: false },
    { format: "arm64", inputBits: 39, accessedDirty: true, hd: true },
    { stage2: w.stage2, format: w.stage1, root: PAGE },
  ])],
  "Host.allocBuffer": () => [64],
  "Host.freeBuffer": (_t, _r, w) => [w.host.allocBuffer(64)],
  "Host.createTranslationBatch": () => [4],
  "Host.freeTranslationBatch": (_t, _r, w) => [w.host.createTranslationBatch(2)],
  "Host.addDevice": (_t, rng, w) => [{
    bdf: `0000:${(w.nextBus++ & 0xff).toString(16).padStart(2, "0")}:00.0`, msiIsolated: true, driver: "vfio-pci",
    reserved: [{ start: 0x400000n + BigInt(rng.below(16)) * PAGE, size: PAGE, type: "reserved" }],
  }],
  "Host.device": (_t, rng, w) => [rng.pick(w.bdfs)],
  "Host.devicesOf": (_t, rng) => [rng.below(4)],
  "Host.reservedRegions": (_t, rng) => [rng.below(4)],
  "Host.reservedRegionsText": (_t, rng) => [rng.below(4)],
  "Host.usableRanges": (_t, rng) => [rng.below(4)],
  "Host.checkGuestMemoryMap": (_t, rng) => [[{ start: 0n, size: 1n << 30n }, { start: 0xfe000000n, end: 0xffffffffn }], { groups: [rng.below(4)] }],
  "Host.createProcess": () => [{ memlockLimit: 1n << 20n }],
  "Host.openContainer": (_t, _r, w) => [{ process: w.processes[0], pasidQuota: 4 }],
  "Host.openGroup": () => [3],
  "Host.onInterrupt": () => [() => undefined],

  // ---- host.ram
  "PhysicalMemory.read": (t, rng) => [page(t, rng) + 8n, 16],
  "PhysicalMemory.write": (t, rng) => [page(t, rng) + 8n, bytes(16)],
  "PhysicalMemory.readU64": (t, rng) => [page(t, rng) + 8n],
  "PhysicalMemory.writeU64": (t, rng) => [page(t, rng) + 8n, 0x1234n],
  "PhysicalMemory.view": (t, rng) => [page(t, rng), 64],
  "PhysicalMemory.allocFrames": () => [1],
  "PhysicalMemory.freeFrames": (_t, _r, w) => [w.host.ram.allocFrames(1), 1],

  // ---- page tables and domains
  "PageTable.map": (t, rng) => [page(t, rng), t.hint.out, PAGE, { ...rw(), exec: false, user: true }],
  "PageTable.unmap": (t, rng) => [page(t, rng), PAGE],
  "PageTable.iovaToPhys": (t, rng) => [page(t, rng) + 0x10n],
  "PageTable.walk": (t, rng) => [page(t, rng), rng.pick(["read", "write", { read: true, privileged: true }])],
  "Domain.translate": (t, rng) => [page(t, rng) + 0x10n, rng.pick(["read", "write", { write: true, privileged: false }]), { pasid: 0 }],
  "Domain.translateBatch": (t, rng) => [new BigUint64Array([page(t, rng), page(t, rng)]), "read", new BigUint64Array(2), new Uint8Array(2), { pasid: 0 }],
  "Domain.walk": (t, rng) => [page(t, rng), "write"],
  "Domain.invalidate": (t, rng) => [rng.pick([{ iova: page(t, rng), npages: 1n, leaf: true }, { pasid: 0 }, {}])],

  // ---- DMA ports
  "DmaPort.read": (t, rng) => [page(t, rng) + 8n, 16, { ...t.hint.dma, privileged: false }],
  "DmaPort.readInto": (t, rng) => [page(t, rng) + 8n, new Uint8Array(16), { ...t.hint.dma }],
  "DmaPort.write": (t, rng) => [page(t, rng) + 8n, bytes(16), { ...t.hint.dma }],
  "DmaPort.sg": (t, rng) => [
    [{ iova: page(t, rng), length: 8 }, { iova: page(t, rng) + 64n, length: 8 }], new Uint8Array(16),
    { direction: rng.pick(["read", "write"]), ...t.hint.dma },
  ],

  // ---- processes
  "Process.mmap": (_t, rng) => [PAGE * BigInt(1 + rng.below(4)), { write: rng.chance(0.5) }],
  "Process.munmap": (t, rng) => [page(t, rng), PAGE],
  "Process.read": (t, rng) => [page(t, rng) + 8n, 16],
  "Process.write": (t, rng) => [page(t, rng) + 8n, bytes(16)],
  "Process.view": (t, rng) => [page(t, rng), 64],

  // ---- containers
  "Container.checkExtension": (_t, rng) => [rng.pick(["type1v2", "nesting"])],
  "Container.setIommu": (_t, rng) => [rng.pick(["type1v2", "nesting"])],
  "Container.mapDma": (t, rng, w) => {
    const at = BigInt(rng.below(16)) * PAGE;
    return [{ vaddr: w.spareVaddr + at, iova: page(t, rng), size: PAGE, ...rw(), process: w.processes[0] }];
  },
  "Container.unmapDma": (t, rng) => [rng.chance(0.2) ? { all: true } : { iova: rng.chance(0.5) ? 0n : page(t, rng), size: rng.chance(0.5) ? GUEST_BYTES : PAGE }],
  "Container.allowIovas": () => [[{ start: 0x100000000n, end: 0x1ffffffffn }, { start: 0x300000000n, end: 0x3ffffffffn }]],
  "Container.invalidate": (t, rng) => [[{ pasid: t.hint.pasid, addr: BigInt(rng.below(16)) * PAGE, npages: 1n, leaf: true, flags: 1 }, { addr: 0n, npages: 2n }]],

  // ---- groups and devices
  "VfioGroup.setContainer": (_t, _r, w) => [w.spareContainer],
  "VfioGroup.device": (t, _r, w) => [t.hint.bdf ?? w.bdfs[2]],
  "VfioDevice.bindPgtbl": (t, _r, w) => [{ pasid: freshPasid(t, w), format: w.stage1, root: w.guestRoot, flags: w.stage1 === "arm64" ? { ha: true, t0sz: 16 } : { sre: true } }],
  "VfioDevice.unbindPgtbl": (t) => [t.hint.pasid ?? 1],
  "HostDevice.bindDriver": (_t, rng) => [rng.pick(["vfio-pci", null, "host"])],

  // ---- PASIDs
  "ContainerPasids.alloc": (_t, rng) => [{ min: 1 + rng.below(100), max: 0xfffff }],
  "ContainerPasids.free": (t, rng) => [rng.chance(0.5) ? { min: t.hint.pasid ?? 1, max: t.hint.pasid ?? 1 } : { min: 0, max: 0xffffffff }],
  "ContainerPasids.holds": (t) => [t.hint.pasid ?? 1],
  "PasidTable.attach": (_t, rng, w) => [6 + rng.below(1000), w.plainDomain.id],
  "PasidTable.replace": (t, _r, w) => [t.hint.pasid ?? 5, w.plainDomain.id],
  "PasidTable.detach": (t) => [t.hint.pasid ?? 5],
  "PasidTable.lookup": (t) => [t.hint.pasid ?? 5],
  "PasidTable.lookupBatch": () => [new Uint32Array([5, 6, 0x100000]), new Uint32Array(3)],

  // ---- the guest's view
  "GuestPageTable.map": (t, rng) => [page(t, rng), t.hint.out, PAGE, rw()],
  "GuestPageTable.unmap": (t, rng) => [page(t, rng), PAGE],
  "GuestMemory.read": (t, rng) => [page(t, rng) + 8n, 16],
  "GuestMemory.write": (t, rng) => [page(t, rng) + 8n, bytes(16)],
  "GuestMemory.readU64": (t, rng) => [page(t, rng) + 8n],
  "GuestMemory.writeU64": (t, rng) => [page(t, rng) + 8n, 7n],
  "GuestMemory.pageTable": (_t, _r, w) => [{ format: w.stage1, allocTable: w.allocTable, freeTable: w.freeTable }],
  // A shadow GTT: the GGTT by index, the PPGTT by the GPA of an entry of its hinted guest tables.
  "ShadowGtt.guestWrite": (t, rng) => [entryOf(t, rng), (t.hint.base ?? 0n) | 3n],
  "ShadowGtt.guestRead": (t, rng) => [entryOf(t, rng)],
  "ShadowGtt.trapWrite": (t, rng) => [page(t, rng) + 8n * BigInt(rng.below(512)), (t.hint.base ?? 0n) | 3n],
  "ShadowGtt.setRoot": (t, rng) => [page(t, rng)],
  // ---- Xen: the world's served guest is VM 2, the unserved one VM 3
  "Hypervisor.createVm": (_t, rng) => [{ memory: BigInt(1 + rng.below(4)) * PAGE }],
  "BackendIommu.map": (t, rng) => [{ bfn: page(t, rng) / PAGE, vm: 2, gfn: rng.below(8), write: rng.chance(0.5) }],
  "BackendIommu.unmap": (_t, rng) => [{ bfn: 0x100 + rng.below(2) }],
  "BackendIommu.query": (_t, rng) => [0x100 + rng.below(2)],
  "BackendIommu.restrict": () => [{ vms: [2], maxPages: 2 }],
  "RestrictedMapper.map": (t, rng) => [{ bfn: page(t, rng) / PAGE, vm: 2, gfn: rng.below(8) }],
  "RestrictedMapper.unmap": (t, rng) => [{ bfn: page(t, rng) / PAGE }],
  "Vm.read": (_t, rng) => [BigInt(rng.below(8)) * PAGE + 8n, 16],
  "Vm.write": (_t, rng) => [BigInt(rng.below(4)) * PAGE + 8n, bytes(16)],
  "Dirty.bitmap": (t, rng) => [{ iova: t.hint.base ?? 0n, size: BigInt(t.hint.pages ?? 1) * PAGE, pgsize: rng.chance(0.9) ? PAGE : 0x200000n }],
};

/** A PASID the target's container holds and the device has not bound, when one can be had; else the hinted one. */
function freshPasid(t: Target, w: HostWorld): number | undefined {
  const container = w.containers[1];
  try {
    return container.pasid.alloc({ min: 1, max: 0xfffff });
  } catch {
    return t.hint.pasid;
  }
}

/** Valid arguments for `key` on `t`, or undefined when the table has none (every argument is then hostile). */
export function validArguments(key: string, t: Target, rng: Rng): unknown[] | undefined {
  const generate = GENERATORS[key];
  if (!generate) return undefined;
  if (!t.home && t.cls !== "module") return undefined;
  return generate(t, rng, t.home as HostWorld);
}

/** Generators that change RAM to make their arguments (allocFrames zeroes a frame): the runner re-reads RAM after them. */
export const PREPARING = new Set(["PhysicalMemory.freeFrames"]);

/** Keys with a generator, to check the table names methods that exist. */
export const GENERATOR_KEYS: readonly string[] = Object.keys(GENERATORS);
