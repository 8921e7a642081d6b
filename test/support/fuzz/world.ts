// The fuzz world: live objects of every public class, on a VT-d host and an
// SMMUv3 host, each wired the way a VMM would wire it, with something mapped
// so a valid call has something to act on.
//
// Per host (4 MiB of RAM: small, because every refused call compares all of it):
//   devices    group 0: 03:00.0 → type1v2 container c1 (dirty tracking on)
//              group 1: 04:00.0 → nesting container c2 (a guest table bound to a PASID)
//              group 2: 05:00.0, 05:00.1 → open, in no container (their DMA is blocked)
//              group 3: 06:00.0 on a host driver, never opened (openGroup's fresh group)
//              group 4: an mdev on 06:00.0 → type1v2 container c4 (no IOMMU domain, a page pinned),
//                       and a shadow GGTT of its guest over 06:00.0's DMA API
//   tables     x86-64 4 and 5 levels, vtd-sl, arm64 stage 1 and stage 2, each mapping one scratch page
//   domains    a plain x86-64 domain; a stage 2 (the arch's format); a nested domain over it
//   processes  vmm (c1's guest RAM and a spare area), vmm2 (c2's guest RAM)
//   PASIDs     a device PASID table (PASID 5 → the plain domain); c2 holds the bound PASID
//   Xen        a hypervisor: a driver domain on 0a:00.0 serving a guest (2 of its pages mapped at BFN 0x100,
//              one granted page mapped at 0x200), a restricted mapper for the guest, a shadow GGTT of
//              the guest over delegated mappings, and an unserved VM;
//              a multiplexed driver domain on 0b:00.0 serving the same guest
import { createHost, type Arch, type Container, type Domain, type Host, type Hypervisor, type Process, type ShadowGtt } from "../../../src/index.js";

export const PAGE = 0x1000n;
const KiB = 1024n;
export const RAM_BYTES = 4n << 20n;
/** Guest RAM of each container, at GPA/IOVA 0. */
export const GUEST_BYTES = 256n * KiB;
/** Guest pages [16, 32) are the guest's pool for c.gpa.pageTable tables; data lives from page 48 up. */
const GUEST_POOL_FIRST = 16n * PAGE;
const GUEST_POOL_END = 32n * PAGE;
export const GUEST_DATA = 48n * PAGE;
/** The GVA the nesting guest maps onto GUEST_DATA. */
export const GVA = 0x7f0000000000n;
/** Where the mdev's container maps vmm's spare area. */
const MDEV_IOVA = 0x2000000n;

/** Where valid arguments for an object point: an address it maps and how many pages from it are fair game. */
export interface Hint {
  base?: bigint;
  pages?: number;
  /** A map's output: an HPA (host tables) or GPA (guest tables). */
  out?: bigint;
  /** DMA options a valid transfer carries (a PASID for the nesting device). */
  dma?: { pasid?: number };
  pasid?: number;
  bdf?: string;
}

export interface Target {
  /** The public class a caller sees, or "GuestMemory" / "Dirty" / "module" for the plain API objects. */
  cls: string;
  label: string;
  obj: object;
  /** The host world it lives on; undefined for the module's own functions. */
  home: HostWorld | undefined;
  hint: Hint;
}

/** What the valid-argument generators need besides a target's own hint. */
export interface HostWorld {
  arch: Arch;
  host: Host;
  /** 16 frames nothing else uses: host tables map to them, ram.read and ram.write aim at them. */
  scratch: bigint;
  /** The arch's stage-1 format for guests, and bind flags that go with it. */
  stage1: "x86-64" | "arm64";
  processes: Process[];
  containers: Container[];
  /** The container with no group, which setContainer may join. */
  spareContainer: Container;
  stage2: Domain;
  plainDomain: Domain;
  /** A 16-page area of vmm's memory, mapped by nothing: mapDma's valid vaddr, munmap's valid range. */
  spareVaddr: bigint;
  bdfs: string[];
  /** The nesting guest's table allocator (pages from its pool; an unmapped GPA once the pool is dry). */
  allocTable: () => bigint;
  freeTable: (gpa: bigint) => void;
  /** The root GPA of the nesting guest's table. */
  guestRoot: bigint;
  /** Shadow GPU page tables, each with guest entries to read back (their stats and those entries are part of the state a refusal must not change). */
  shadows: { gtt: ShadowGtt; entries: (number | { gpa: bigint })[] }[];
  /** The host's hypervisor (its VMs, served lists, backend tables and grants are state a refusal must not change). */
  hypervisor: Hypervisor<unknown>;
  /** Counts addDevice's fresh BDFs. */
  nextBus: number;
  targets: Target[];
}

export interface World {
  hosts: HostWorld[];
  targets: Target[];
  byClass: Map<string, Target[]>;
}

/** A guest's page allocator over [first, end): freed pages first, then fresh ones, then a GPA stage 2 does not map. */
function guestAllocator(first: bigint, end: bigint): { allocTable: () => bigint; freeTable: (gpa: bigint) => void } {
  let next = first;
  const freed: bigint[] = [];
  return {
    allocTable: () => freed.pop() ?? (next < end ? (next += PAGE) - PAGE : 0x40000000n),
    freeTable: (gpa) => { freed.push(gpa); },
  };
}

function tableSpecs(): { label: string; options: Record<string, unknown>; base: bigint }[] {
  return [
    { label: "x86-64 4-level", options: { format: "x86-64", levels: 4 }, base: 0x40000000n },
    { label: "x86-64 5-level", options: { format: "x86-64", levels: 5 }, base: 0xff00000000000000n },
    { label: "vtd-sl", options: { format: "vtd-sl", levels: 4 }, base: 0x80000000n },
    { label: "arm64 stage 1", options: { format: "arm64", inputBits: 39 }, base: 0x10000000n },
    { label: "arm64 stage 2", options: { format: "arm64", stage: 2, inputBits: 40 }, base: 0x20000000n },
  ];
}

export async function buildHostWorld(arch: Arch): Promise<HostWorld> {
  const host = await createHost({ arch, ramSize: RAM_BYTES, iotlb: { sets: 16, ways: 2 }, faultRingSize: 16, bufferArenaSize: 256 * 1024, pasidNodes: 256 });
  const targets: Target[] = [];
  const rw = { read: true, write: true };
  const bdfs = ["0000:03:00.0", "0000:04:00.0", "0000:05:00.0", "0000:05:00.1", "0000:06:00.0"];
  host.addDevice({ bdf: bdfs[0], msiIsolated: true });
  host.addDevice({ bdf: bdfs[1], msiIsolated: true });
  host.addDevice({ bdf: bdfs[2], group: 2 });
  host.addDevice({ bdf: bdfs[3], group: 2, driver: null });
  host.addDevice({ bdf: bdfs[4], group: 3, driver: "host", reserved: [{ start: 0x300000n, size: 0x10000n, type: "direct" }] });
  const scratch = host.ram.allocFrames(16);

  // Host page tables, one of each format.
  const tables = tableSpecs().map((spec) => {
    const table = host.createPageTable(spec.options);
    table.map(spec.base, scratch, PAGE, rw);
    return { spec, table };
  });

  // Domains: a plain one, and a nested one over a stage 2 whose GPA [0, 64 KiB) is 16 frames of its own.
  const plainDomain = host.createDomain({ format: "x86-64", levels: 4 });
  plainDomain.pageTable.map(0x40000000n, scratch, 16n * PAGE, rw);
  const stage2 = host.createDomain(arch === "vtd" ? { format: "vtd-sl", levels: 4 } : { format: "arm64", stage: 2, inputBits: 40 });
  stage2.pageTable.map(0n, host.ram.allocFrames(16), 16n * PAGE, rw);
  const stage1 = arch === "vtd" ? "x86-64" : "arm64";
  const nested = host.createDomain({ stage2, format: stage1, root: PAGE });

  // VFIO: a type1v2 container with dirty tracking, a nesting one with a bound guest table, one with no group.
  const vmm = host.createProcess({ memlockLimit: 16n << 20n });
  const guestRam = vmm.mmap(GUEST_BYTES);
  const spareVaddr = vmm.mmap(16n * PAGE);
  const c1 = host.openContainer({ process: vmm, pasidQuota: 16 });
  const g0 = host.openGroup(0);
  g0.setContainer(c1);
  c1.setIommu("type1v2");
  c1.mapDma({ vaddr: guestRam, iova: 0n, size: GUEST_BYTES, ...rw });
  c1.dirty.start();

  const vmm2 = host.createProcess();
  const guest2 = vmm2.mmap(GUEST_BYTES);
  const c2 = host.openContainer({ process: vmm2 });
  const g1 = host.openGroup(1);
  g1.setContainer(c2);
  c2.setIommu("nesting");
  c2.mapDma({ vaddr: guest2, iova: 0n, size: GUEST_BYTES, ...rw });
  c2.dirty.start();
  const { allocTable, freeTable } = guestAllocator(GUEST_POOL_FIRST, GUEST_POOL_END);
  const gpt = c2.gpa.pageTable({ format: stage1, allocTable, freeTable });
  gpt.map(GVA, GUEST_DATA, 4n * PAGE, rw);
  const pasid = c2.pasid.alloc({ min: 1, max: 0xfffff });
  const d1 = g1.device(bdfs[1]);
  d1.bindPgtbl({ pasid, format: stage1, root: gpt.root, ...(arch === "smmuv3" ? { flags: { ha: true } } : {}) });

  const c3 = host.openContainer({ process: vmm });
  const g2 = host.openGroup(2);
  const d0 = g0.device(bdfs[0]), d2 = g2.device(bdfs[2]);

  const pasidTable = host.pasids.createTable();
  pasidTable.attach(5, plainDomain.id);

  const world: HostWorld = {
    arch, host, scratch, stage1, processes: [vmm, vmm2], containers: [c1, c2, c3], spareContainer: c3, stage2, plainDomain,
    spareVaddr, bdfs, allocTable, freeTable, guestRoot: gpt.root, nextBus: 0x40, targets, shadows: [], hypervisor: host.hypervisor(),
  };
  const add = (cls: string, label: string, obj: object, hint: Hint = {}): void => {
    targets.push({ cls, label: `${arch} ${label}`, obj, home: world, hint });
  };

  add("Host", "host", host);
  add("PhysicalMemory", "host.ram", host.ram, { base: scratch, pages: 16 });
  add("Iotlb", "host.iotlb", host.iotlb);
  add("FaultLog", "host.faults", host.faults);
  add("PasidSpace", "host.pasids", host.pasids);
  for (const { spec, table } of tables) add("PageTable", spec.label, table, { base: spec.base, pages: 16, out: scratch });
  add("Domain", "plain domain", plainDomain, { base: 0x40000000n, pages: 16 });
  add("Domain", "stage-2 domain", stage2, { base: 0n, pages: 16 });
  add("Domain", "nested domain", nested, { base: 0n, pages: 16 });
  add("DmaPort", "plain domain.dma", plainDomain.dma, { base: 0x40000000n, pages: 16, dma: {} });
  add("DmaPort", "nested domain.dma", nested.dma, { base: 0n, pages: 16, dma: {} });
  add("DmaPort", "type1v2 device.dma", d0.dma, { base: GUEST_DATA, pages: 16, dma: {} });
  add("DmaPort", "nesting device.dma, PASID", d1.dma, { base: GVA, pages: 4, dma: { pasid } });
  add("DmaPort", "nesting device.dma, GPA", d1.dma, { base: GUEST_DATA, pages: 16, dma: {} });
  add("DmaPort", "blocked device.dma", d2.dma, { base: 0n, pages: 16, dma: {} });
  add("Process", "vmm", vmm, { base: spareVaddr, pages: 16 });
  add("Process", "vmm2", vmm2, { base: guest2 + GUEST_DATA, pages: 16 });
  add("Container", "type1v2 container", c1, { base: 0x1000000n, pages: 64, pasid });
  add("Container", "nesting container", c2, { base: 0x1000000n, pages: 64, pasid });
  add("Container", "container with no group", c3, { base: 0x1000000n, pages: 64 });
  add("VfioGroup", "group 0 (type1v2)", g0);
  add("VfioGroup", "group 1 (nesting)", g1);
  add("VfioGroup", "group 2 (no container)", g2, { bdf: bdfs[3] });
  add("VfioDevice", "type1v2 device", d0);
  add("VfioDevice", "nesting device", d1, { pasid });
  add("VfioDevice", "blocked device", d2);
  for (const bdf of bdfs) add("HostDevice", `host device ${bdf}`, host.device(bdf));
  // The host DMA API of the device its host driver owns (group 3), with one mapping live.
  const dmaApi = host.dmaApi(bdfs[4]);
  dmaApi.mapPage(scratch, PAGE, "bidirectional");
  add("DmaApi", "host DMA API", dmaApi, { base: scratch, pages: 16 });
  add("DmaPort", "host-driver device.dma", host.device(bdfs[4]).dma, { base: 0xfffff000n, pages: 1, dma: {} });
  // An mdev on that device, its emulated group in a container of its own (no IOMMU domain) over vmm's spare area, one page pinned.
  const mdev = host.createMdev({ parent: bdfs[4] });
  const c4 = host.openContainer({ process: vmm });
  host.openGroup(mdev.group).setContainer(c4);
  c4.setIommu("type1v2");
  c4.mapDma({ vaddr: spareVaddr, iova: MDEV_IOVA, size: 16n * PAGE, ...rw });
  mdev.onDmaUnmap((iova, size) => { mdev.unpinPages(iova, Number(size / PAGE)); });
  mdev.pinPages(MDEV_IOVA, 1);
  world.containers.push(c4);
  add("Mdev", "mdev", mdev, { base: MDEV_IOVA, pages: 16 });
  // A shadow GGTT of the mdev's guest over the parent's DMA API, entry 1 aimed at the container's first page.
  const gtt = mdev.shadowGtt({ format: "ggtt", entries: 512 }, { dma: dmaApi });
  gtt.guestWrite(1, MDEV_IOVA | 3n);
  world.shadows.push({ gtt, entries: [0, 1, 2, 3] });
  add("ShadowGtt", "shadow GGTT", gtt, { base: 0n, pages: 4 });
  add("GpuDmaPort", "GPU DMA through the shadow", gtt.dma, { base: PAGE, pages: 1 });
  // A shadow PPGTT of the same guest: PML4 → PDPT → PD → PT in the mapping's pages 2..5, GMA 0 on its first page.
  const ppgtt = mdev.shadowGtt({ format: "x86-64", levels: 4 }, { dma: dmaApi });
  const ptables = [2n, 3n, 4n, 5n].map((p) => MDEV_IOVA + p * PAGE);
  ptables.forEach((t, k) => vmm.write(spareVaddr + (t - MDEV_IOVA), new Uint8Array(new BigUint64Array([(ptables[k + 1] ?? MDEV_IOVA) | 3n]).buffer)));
  ppgtt.setRoot(ptables[0]);
  world.shadows.push({ gtt: ppgtt, entries: ptables.map((gpa) => ({ gpa })) });
  add("ShadowGtt", "shadow PPGTT", ppgtt, { base: ptables[0], pages: 4 });
  add("GpuDmaPort", "GPU DMA through the PPGTT", ppgtt.dma, { base: 0n, pages: 1 });
  add("Container", "container of an mdev", c4, { base: MDEV_IOVA, pages: 16 });
  // Xen: a driver domain serving a guest, with delegated and granted pages in its table.
  host.addDevice({ bdf: "0000:0a:00.0", driver: null });
  const hv = world.hypervisor;
  const backend = hv.createVm({ name: "netback", memory: 8n * PAGE, devices: ["0000:0a:00.0"] });
  const guest = hv.createVm({ name: "guest", memory: 8n * PAGE });
  const lone = hv.createVm({ name: "lone", memory: 4n * PAGE });
  hv.serve(backend, guest);
  backend.iommu.map({ bfn: 0x100, vm: guest, gfn: 0, count: 2, write: true });
  backend.iommu.mapGrant({ bfn: 0x200, vm: lone, gref: lone.grant(backend, 1) });
  const mapper = backend.iommu.restrict({ vms: [guest.id], maxPages: 4 });
  add("Hypervisor", "hypervisor", hv);
  add("Vm", "driver domain", backend, { base: 0n, pages: 8 });
  add("Vm", "served guest", guest, { base: 0n, pages: 8 });
  add("Vm", "unserved VM", lone, { base: 0n, pages: 4 });
  add("XenDevice", "driver-domain device", backend.device("0000:0a:00.0"));
  add("BackendIommu", "driver domain's IOMMU", backend.iommu, { base: 0x300n, pages: 8 });
  add("RestrictedMapper", "restricted mapper", mapper, { base: 0x400n, pages: 4 });
  // A shadow GGTT of the guest over the driver domain's delegated mappings (entry 1 → the guest's GFN 2).
  const xgtt = backend.shadowGtt({ format: "ggtt", entries: 512 }, { vm: guest });
  xgtt.guestWrite(1, (2n << 12n) | 3n);
  world.shadows.push({ gtt: xgtt, entries: [0, 1, 2, 3] });
  add("ShadowGtt", "shadow GGTT over a Xen backend", xgtt, { base: 0n, pages: 4 });
  add("GpuDmaPort", "GPU DMA through the Xen shadow", xgtt.dma, { base: PAGE, pages: 1 });
  // A shadow PPGTT of the guest over the same backend: PML4 → PDPT → PD → PT in the guest's GFNs 3..6, GMA 0 on its GFN 2.
  const xpp = backend.shadowGtt({ format: "x86-64", levels: 4 }, { vm: guest });
  const xtables = [3n, 4n, 5n, 6n].map((p) => p * PAGE);
  xtables.forEach((t, k) => guest.write(t, new Uint8Array(new BigUint64Array([(xtables[k + 1] ?? 2n * PAGE) | 3n]).buffer)));
  xpp.setRoot(xtables[0]);
  world.shadows.push({ gtt: xpp, entries: xtables.map((gpa) => ({ gpa })) });
  add("ShadowGtt", "shadow PPGTT over a Xen backend", xpp, { base: xtables[0], pages: 4 });
  add("GpuDmaPort", "GPU DMA through the Xen PPGTT", xpp.dma, { base: 0n, pages: 1 });
  // A multiplexed driver domain serving the same guest (its table holds the guest whole, in slot 1).
  host.addDevice({ bdf: "0000:0b:00.0", driver: null });
  const muxed = hv.createVm({ name: "muxback", memory: 4n * PAGE, devices: ["0000:0b:00.0"], multiplexed: { vmidBits: 2 } });
  hv.serve(muxed, guest);
  add("MultiplexedIommu", "multiplexed driver domain's IOMMU", muxed.iommu, { base: 0x300n, pages: 8 });
  add("DmaPort", "driver-domain device.dma", backend.device("0000:0a:00.0").dma as object, { base: 0x100000n, pages: 2, dma: {} });
  add("ContainerPasids", "type1v2 c.pasid", c1.pasid, { pasid });
  add("ContainerPasids", "nesting c.pasid", c2.pasid, { pasid });
  add("PasidTable", "device PASID table", pasidTable, { pasid: 5 });
  add("GuestPageTable", "nesting guest table", gpt, { base: GVA, pages: 16, out: GUEST_DATA });
  add("GuestMemory", "type1v2 c.gpa", c1.gpa, { base: GUEST_DATA, pages: 16 });
  add("GuestMemory", "nesting c.gpa", c2.gpa, { base: GUEST_DATA, pages: 16 });
  add("Dirty", "type1v2 c.dirty", c1.dirty, { base: 0n, pages: Number(GUEST_BYTES / PAGE) });
  add("Dirty", "nesting c.dirty", c2.dirty, { base: 0n, pages: Number(GUEST_BYTES / PAGE) });
  add("Dirty", "c.dirty with no IOMMU", c3.dirty, { base: 0n, pages: 1 });
  return world;
}

/** Both arches, plus the module's own functions (createHost) as the target "module". */
export async function buildWorld(moduleFunctions: object): Promise<World> {
  return assemble([await buildHostWorld("vtd"), await buildHostWorld("smmuv3")], moduleFunctions);
}

/** The same world with one host built afresh (after a call destroyed something on it). */
export async function renewHost(world: World, old: HostWorld, moduleFunctions: object): Promise<World> {
  const fresh = await buildHostWorld(old.arch);
  return assemble(world.hosts.map((h) => (h === old ? fresh : h)), moduleFunctions);
}

function assemble(hosts: HostWorld[], moduleFunctions: object): World {
  const targets: Target[] = [{ cls: "module", label: "iommu-wasm module", obj: moduleFunctions, home: undefined, hint: {} }];
  for (const h of hosts) targets.push(...h.targets);
  const byClass = new Map<string, Target[]>();
  for (const t of targets) {
    if (!byClass.has(t.cls)) byClass.set(t.cls, []);
    byClass.get(t.cls)!.push(t);
  }
  return { hosts, targets, byClass };
}
