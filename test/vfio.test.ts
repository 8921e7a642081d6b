// The VFIO control plane (issue 3): host topology wiring, containers and
// groups (SET_IOMMU / SET_CONTAINER in the kernel's check order), MAP_DMA and
// UNMAP_DMA errno by errno with all-or-nothing checked on every observable
// (frames, pins, accounting, DMA entries, PTEs, the RAM image), GET_INFO,
// MSI windows and sw-msi doorbells, dirty tracking, iommufd's allowed IOVAs
// and automatic IOVAs, and device DMA with requester ids. docs/vfio-type1.md
// is the reference (v6.18).
import { Buffer } from "node:buffer";
import { describe, expect, it } from "vitest";
import {
  createHost, PAGE_1G, PAGE_2M, PAGE_4K,
  type Arch, type Container, type DeviceSpec, type Domain, type Host, type HostOptions, type Interrupt,
  type Process, type VfioDevice, type VfioGroup,
} from "../src/index.js";
import { errno } from "./support/outcome.js";

const RAM = 16 * 1024 * 1024;
const U64_MAX = (1n << 64n) - 1n;
const APERTURE_END = (1n << 48n) - 1n;
const BDF0 = "0000:01:00.0";
const BDF1 = "0000:02:00.0";
const VTD_MSI = { start: 0xfee0_0000n, end: 0xfeef_ffffn };
const SW_MSI = { start: 0x800_0000n, end: 0x80f_ffffn };
const PGSIZES = PAGE_4K | PAGE_2M | PAGE_1G;
const ARCHES: Arch[] = ["vtd", "smmuv3"];


/** The valid IOVA list of a lone group of each arch (aperture minus its hardware MSI window). */
const soleGroupList = (arch: Arch) => arch === "vtd"
  ? [{ start: 0n, end: VTD_MSI.start - 1n }, { start: VTD_MSI.end + 1n, end: APERTURE_END }]
  : [{ start: 0n, end: SW_MSI.start - 1n }, { start: SW_MSI.end + 1n, end: APERTURE_END }];

interface Rig { h: Host; p: Process; c: Container; g: VfioGroup; d: VfioDevice; v: bigint }

/** One device in group 0, a process with `mem` bytes mmapped, a container with the group and type1v2 set. */
async function rig(arch: Arch = "vtd", opts: { mem?: number; host?: HostOptions; device?: Partial<DeviceSpec> } = {}): Promise<Rig> {
  const h = await createHost({ ramSize: RAM, arch, ...opts.host });
  h.addDevice({ bdf: BDF0, ...opts.device });
  const p = h.createProcess();
  const v = p.mmap(opts.mem ?? 0x100000);
  const c = h.openContainer({ process: p });
  const g = h.openGroup(0);
  g.setContainer(c);
  c.setIommu("type1v2");
  return { h, p, c, g, d: g.device(BDF0), v };
}

const dom = (c: Container) => c.domain as Domain;

/**
 * mmaps 4 MiB of process memory that is physically contiguous from HPA 2 MiB
 * (so the IOMMU can use 2 MiB leaves) and returns its vaddr. The tables of the
 * first 2 MiB (level 3, level 2, last level) go to low holes, then the second
 * 2 MiB's last-level table to a hole freed just before it.
 */
function contiguousFrom2M(h: Host, p: Process): bigint {
  const tables = h.ram.allocFrames(3);
  const spare = h.ram.allocFrames(1);
  const padFrames = Number((PAGE_2M - spare) / 0x1000n) - 1;
  const pad = h.ram.allocFrames(padFrames);
  expect(pad + BigInt(padFrames) * 0x1000n).toBe(PAGE_2M);
  h.ram.freeFrames(tables, 3);
  const v = p.mmap(PAGE_2M);
  h.ram.freeFrames(spare, 1);
  expect(p.mmap(PAGE_2M)).toBe(v + PAGE_2M);
  for (let off = 0n; off < 2n * PAGE_2M; off += 0x1000n) if (p.pageTable.walk(v + off, "read").hpa !== 0x20_0000n + off) throw new Error("precondition: contiguous");
  expect(v % PAGE_2M).toBe(0n);
  return v;
}
const ramImage = (h: Host) => Buffer.from(h.ram.view(0n, Number(h.ram.size)));
const state = (r: Rig) => ({
  free: r.h.ram.framesFree,
  locked: r.p.lockedBytes,
  avail: r.c.getInfo().dmaAvail,
  maps: r.c.mappings().map((m) => [m.iova, m.last]),
  ranges: r.c.getInfo().iovaRanges,
});
const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
/** Indices of the set bits (bit i of the bitmap is byte i >> 3, bit i & 7). */
function setBits(bitmap: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < bitmap.length * 8; i++) if ((bitmap[i >> 3] >> (i & 7)) & 1) out.push(i);
  return out;
}

// ---------------------------------------------------------------- topology

describe("host topology wiring", () => {
  it("devices join explicit groups or get one group each, lowest free id first", async () => {
    const h = await createHost({ ramSize: RAM });
    h.addDevice({ bdf: "0000:00:02.0" });
    h.addDevice({ bdf: "0000:05:00.1", group: 7 });
    h.addDevice({ bdf: "0000:05:00.0", group: 7 });
    h.addDevice({ bdf: "0000:06:00.0" });
    expect(h.iommuGroups()).toEqual([0, 1, 7]);
    expect(h.devicesOf(7).map((d) => d.bdf)).toEqual(["0000:05:00.0", "0000:05:00.1"]);
    expect(h.devicesOf(1).map((d) => d.bdf)).toEqual(["0000:06:00.0"]);
    expect(h.device("0000:05:00.1").group).toBe(7);
    expect(errno(() => h.devicesOf(2))).toBe("ENOENT");
  });

  it.each(ARCHES)("%s preset: aperture, page sizes, hardware reserved regions, isolated MSIs", async (arch) => {
    const h = await createHost({ ramSize: RAM, arch });
    h.addDevice({ bdf: BDF0 });
    expect(h.arch).toBe(arch);
    expect(h.aperture).toEqual({ start: 0n, end: APERTURE_END });
    const hw = arch === "vtd" ? { ...VTD_MSI, type: "msi" } : { ...SW_MSI, type: "sw-msi" };
    expect(h.reservedRegions(0)).toEqual([hw]);
    // sysfs prints sw-msi as "msi" too.
    const line = arch === "vtd" ? "0x00000000fee00000 0x00000000feefffff msi\n" : "0x0000000008000000 0x00000000080fffff msi\n";
    expect(h.reservedRegionsText(0)).toBe(line);
    expect(h.usableRanges(0)).toEqual(soleGroupList(arch));
    // Interrupts are isolated by default: no allowUnsafeInterrupts needed.
    const p = h.createProcess();
    const c = h.openContainer({ process: p });
    h.openGroup(0).setContainer(c);
    c.setIommu("type1v2");
    expect(c.getInfo().pgsizes).toBe(PGSIZES);
    expect(c.getInfo().iovaRanges).toEqual(soleGroupList(arch));
  });

  it("addressWidth sets the aperture the valid IOVA list is cut from", async () => {
    const { c, v } = await rig("vtd", { host: { addressWidth: 39 } });
    const end = (1n << 39n) - 1n;
    expect(c.getInfo().iovaRanges).toEqual([{ start: 0n, end: VTD_MSI.start - 1n }, { start: VTD_MSI.end + 1n, end }]);
    expect(errno(() => c.mapDma({ vaddr: v, iova: 1n << 39n, size: 0x1000, read: true }))).toBe("EINVAL");
    expect(errno(() => c.mapDma({ vaddr: v, iova: end - 0xfffn, size: 0x2000, read: true }))).toBe("EINVAL");
    expect(c.mapDma({ vaddr: v, iova: end - 0xfffn, size: 0x1000, read: true })).toBe(end - 0xfffn);
  });

  it("per group: device and platform regions sorted and merged; text, usable ranges host-wide", async () => {
    const h = await createHost({ ramSize: RAM, platformReserved: [{ start: 0xf000_0000n, size: 0x10_0000n, type: "reserved" }] });
    h.addDevice({ bdf: BDF0 });
    h.addDevice({
      bdf: BDF1,
      reserved: [
        { start: 0xc_0000n, size: 0x1_0000n, type: "direct" },
        { start: 0xa_0000n, size: 0x2_0000n, type: "direct" }, // touches the one above: merged
        { start: 0x100_0000n, size: 0x100_0000n, type: "direct-relaxable" },
      ],
    });
    expect(h.reservedRegions(0)).toEqual([
      { start: 0xf000_0000n, end: 0xf00f_ffffn, type: "reserved" },
      { ...VTD_MSI, type: "msi" },
    ]);
    expect(h.reservedRegions(1)).toEqual([
      { start: 0xa_0000n, end: 0xc_ffffn, type: "direct" },
      { start: 0x100_0000n, end: 0x1ff_ffffn, type: "direct-relaxable" },
      { start: 0xf000_0000n, end: 0xf00f_ffffn, type: "reserved" },
      { ...VTD_MSI, type: "msi" },
    ]);
    expect(h.reservedRegionsText(1)).toBe(
      "0x00000000000a0000 0x00000000000cffff direct\n" +
      "0x0000000001000000 0x0000000001ffffff direct-relaxable\n" +
      "0x00000000f0000000 0x00000000f00fffff reserved\n" +
      "0x00000000fee00000 0x00000000feefffff msi\n");
    const g0 = [{ start: 0n, end: 0xefff_ffffn }, { start: 0xf010_0000n, end: 0xfedf_ffffn }, { start: 0xfef0_0000n, end: APERTURE_END }];
    expect(h.usableRanges(0)).toEqual(g0);
    // The relaxable region stays usable; the direct one is cut out.
    const all = [{ start: 0n, end: 0x9_ffffn }, { start: 0xd_0000n, end: 0xefff_ffffn }, ...g0.slice(1)];
    expect(h.usableRanges(1)).toEqual(all);
    expect(h.usableRanges()).toEqual(all);
    expect(errno(() => h.usableRanges(9))).toBe("ENOENT");
  });

  it("checkGuestMemoryMap reports every overlap: which range, which region, which group", async () => {
    const h = await createHost({ ramSize: RAM });
    h.addDevice({ bdf: BDF0 });
    h.addDevice({ bdf: BDF1, reserved: [{ start: 0xa_0000n, size: 0x2_0000n, type: "direct" }, { start: 0x200_0000n, size: 0x1000n, type: "direct-relaxable" }] });
    const low = { start: 0n, end: 0xffff_ffffn };
    const high = { start: 0xffff_0000_0000n, end: 0x1_0000_0fff_ffffn };
    const msi = { ...VTD_MSI, type: "msi" };
    expect(h.checkGuestMemoryMap([{ start: 0n, size: 1n << 32n }, { start: high.start, end: high.end }])).toEqual([
      { range: low, region: { start: 0xa_0000n, end: 0xb_ffffn, type: "direct" }, group: 1, overlap: { start: 0xa_0000n, end: 0xb_ffffn } },
      { range: low, region: msi, group: 0, overlap: VTD_MSI },
      { range: low, region: msi, group: 1, overlap: VTD_MSI },
      { range: high, region: { start: 1n << 48n, end: U64_MAX, type: "outside-aperture" }, group: null, overlap: { start: 1n << 48n, end: high.end } },
    ]);
    // Only the groups asked about; a map clear of them has no conflict.
    expect(h.checkGuestMemoryMap([{ start: 0n, size: 0x10_0000n }], { groups: [0] })).toEqual([]);
    expect(h.checkGuestMemoryMap([{ start: 0n, size: 0x10_0000n }], { groups: [1] }).map((x) => x.group)).toEqual([1]);
    expect(h.checkGuestMemoryMap([{ start: 0x1_0000_0000n, size: 0x1_0000_0000n }])).toEqual([]);
  });
});

// ---------------------------------------------------------------- groups

describe("containers and groups", () => {
  it("SET_IOMMU: empty container EINVAL, unknown type ENODEV, twice EINVAL", async () => {
    const h = await createHost({ ramSize: RAM });
    h.addDevice({ bdf: BDF0 });
    const c = h.openContainer({ process: h.createProcess() });
    expect(errno(() => c.setIommu("type1v2"))).toBe("EINVAL");
    expect(c.iommuType).toBeUndefined();
    h.openGroup(0).setContainer(c);
    expect(errno(() => c.setIommu("type1" as "type1v2"))).toBe("ENODEV");
    expect(errno(() => c.setIommu("bogus" as "type1v2"))).toBe("ENODEV");
    expect(c.iommuType).toBeUndefined();
    c.setIommu("type1v2");
    expect(c.iommuType).toBe("type1v2");
    expect(errno(() => c.setIommu("type1v2"))).toBe("EINVAL");
    expect(c.checkExtension("type1v2")).toBe(true);
  });

  it("MAP, UNMAP, GET_INFO and dirty tracking before SET_IOMMU are EINVAL", async () => {
    const h = await createHost({ ramSize: RAM });
    h.addDevice({ bdf: BDF0 });
    const p = h.createProcess();
    const v = p.mmap(0x1000);
    const c = h.openContainer({ process: p });
    h.openGroup(0).setContainer(c);
    const free = h.ram.framesFree;
    expect(errno(() => c.mapDma({ vaddr: v, iova: 0x1000n, size: 0x1000, read: true }))).toBe("EINVAL");
    expect(errno(() => c.unmapDma({ all: true }))).toBe("EINVAL");
    expect(errno(() => c.unmapDma({ iova: 0x1000n, size: 0x1000 }))).toBe("EINVAL");
    expect(errno(() => c.getInfo())).toBe("EINVAL");
    expect(errno(() => c.dirty.start())).toBe("EINVAL");
    expect(p.lockedBytes).toBe(0n);
    expect(h.ram.framesFree).toBe(free);
  });

  it("openGroup: ENOENT for no such group, EBUSY while open, free again after close", async () => {
    const h = await createHost({ ramSize: RAM });
    h.addDevice({ bdf: BDF0 });
    expect(errno(() => h.openGroup(1))).toBe("ENOENT");
    const g = h.openGroup(0);
    expect(errno(() => h.openGroup(0))).toBe("EBUSY");
    g.close();
    const again = h.openGroup(0);
    expect(again.id).toBe(0);
    expect(errno(() => g.setContainer(h.openContainer()))).toBe("ENODEV");
  });

  it("a group already in a container is EINVAL, in this container or another", async () => {
    const { h, c, g } = await rig();
    expect(errno(() => g.setContainer(c))).toBe("EINVAL");
    const other = h.openContainer();
    expect(errno(() => g.setContainer(other))).toBe("EINVAL");
    expect(other.groups).toEqual([]);
    expect(c.groups).toEqual([0]);
    expect(g.container).toBe(c);
    // The group stays viable while it is in a container: VFIO owns its DMA, so a host driver cannot take a device.
    expect(errno(() => h.device(BDF0).bindDriver("host"))).toBe("EBUSY");
    expect(g.viable).toBe(true);
  });

  it("a non-viable group (a device bound to a host driver) is EPERM; viable again once unbound", async () => {
    const h = await createHost({ ramSize: RAM });
    h.addDevice({ bdf: BDF0, group: 3 });
    h.addDevice({ bdf: BDF1, group: 3 });
    const c = h.openContainer({ process: h.createProcess() });
    const g = h.openGroup(3);
    h.device(BDF1).bindDriver("host");
    expect(g.viable).toBe(false);
    expect(errno(() => g.setContainer(c))).toBe("EPERM");
    expect(g.container).toBeUndefined();
    expect(c.groups).toEqual([]);
    h.device(BDF1).bindDriver(null);
    expect(g.viable).toBe(true);
    g.setContainer(c);
    c.setIommu("type1v2");
    expect(c.groups).toEqual([3]);
  });

  it.each(ARCHES)("%s: no MSI isolation is EPERM at SET_IOMMU and at a later SET_CONTAINER, nothing changed", async (arch) => {
    const h = await createHost({ ramSize: RAM, arch });
    h.addDevice({ bdf: BDF0, msiIsolated: false });
    h.addDevice({ bdf: BDF1 });
    const p = h.createProcess();
    const v = p.mmap(0x10000);
    // First group: refused when the IOMMU driver is set.
    const c1 = h.openContainer({ process: p });
    const g0 = h.openGroup(0);
    g0.setContainer(c1);
    expect(errno(() => c1.setIommu("type1v2"))).toBe("EPERM");
    expect(c1.iommuType).toBeUndefined();
    expect(c1.domain).toBeUndefined();
    expect(errno(() => c1.getInfo())).toBe("EINVAL");
    g0.unsetContainer();
    // Later group: refused at SET_CONTAINER; the container keeps its list and mappings.
    const c2 = h.openContainer({ process: p });
    const g1 = h.openGroup(1);
    g1.setContainer(c2);
    c2.setIommu("type1v2");
    c2.mapDma({ vaddr: v, iova: 0x10_0000n, size: 0x10000, read: true, write: true });
    const before = { info: c2.getInfo(), free: h.ram.framesFree, locked: p.lockedBytes };
    expect(errno(() => g0.setContainer(c2))).toBe("EPERM");
    expect(g0.container).toBeUndefined();
    expect(c2.groups).toEqual([1]);
    expect(c2.getInfo()).toEqual(before.info);
    expect(h.ram.framesFree).toBe(before.free);
    expect(p.lockedBytes).toBe(before.locked);
    // Its device still cannot DMA into the container's mappings.
    expect(g0.device(BDF0).dma.read(0x10_0000n, 4).fault).toBeDefined();
  });

  it("SET_IOMMU with several groups: one without MSI isolation fails it whole", async () => {
    const h = await createHost({ ramSize: RAM });
    h.addDevice({ bdf: BDF0 });
    h.addDevice({ bdf: BDF1, msiIsolated: false });
    const c = h.openContainer({ process: h.createProcess() });
    const g0 = h.openGroup(0), g1 = h.openGroup(1);
    g0.setContainer(c);
    g1.setContainer(c);
    const free = h.ram.framesFree;
    expect(errno(() => c.setIommu("type1v2"))).toBe("EPERM");
    expect(c.iommuType).toBeUndefined();
    expect(c.domain).toBeUndefined();
    expect(h.ram.framesFree).toBe(free);
    expect(g0.device(BDF0).dma.read(0x1000n, 4).fault?.reason).toBe("no-context");
    g1.unsetContainer();
    c.setIommu("type1v2");
    expect(c.groups).toEqual([0]);
  });

  it("attach order: a reserved-region clash (EINVAL) is found before missing MSI isolation (EPERM)", async () => {
    const h = await createHost({ ramSize: RAM });
    h.addDevice({ bdf: BDF0 });
    h.addDevice({ bdf: BDF1, msiIsolated: false, reserved: [{ start: 0x10_0000n, size: 0x1000n, type: "direct" }] });
    const p = h.createProcess();
    const v = p.mmap(0x1000);
    const c = h.openContainer({ process: p });
    h.openGroup(0).setContainer(c);
    c.setIommu("type1v2");
    const g1 = h.openGroup(1);
    expect(errno(() => g1.setContainer(c))).toBe("EPERM");
    c.mapDma({ vaddr: v, iova: 0x10_0000n, size: 0x1000, read: true });
    expect(errno(() => g1.setContainer(c))).toBe("EINVAL");
    expect(c.groups).toEqual([0]);
  });

  it.each(ARCHES)("%s: allowUnsafeInterrupts accepts groups without MSI isolation", async (arch) => {
    const { c, g, d, p, v } = await rig(arch, { host: { allowUnsafeInterrupts: true }, device: { msiIsolated: false } });
    expect(c.groups).toEqual([0]);
    expect(g.container).toBe(c);
    p.write(v, bytes("unsafe ok"));
    c.mapDma({ vaddr: v, iova: 0x20_0000n, size: 0x1000, read: true });
    expect(text(d.dma.read(0x20_0000n, 9).data)).toBe("unsafe ok");
  });

  it.each(ARCHES)("%s: a group whose reserved region overlaps a mapping is EINVAL, nothing changed", async (arch) => {
    const h = await createHost({ ramSize: RAM, arch });
    h.addDevice({ bdf: BDF0 });
    h.addDevice({ bdf: BDF1, reserved: [{ start: 0x20_3000n, size: 0x1000n, type: arch === "vtd" ? "direct" : "reserved" }] });
    h.addDevice({ bdf: "0000:03:00.0", reserved: [{ start: 0x20_3000n, size: 0x1000n, type: "direct-relaxable" }] });
    const p = h.createProcess();
    const v = p.mmap(0x10000);
    p.write(v + 0x3000n, bytes("still mapped"));
    const c = h.openContainer({ process: p });
    const g0 = h.openGroup(0);
    g0.setContainer(c);
    c.setIommu("type1v2");
    c.mapDma({ vaddr: v, iova: 0x20_0000n, size: 0x10000, read: true, write: true });
    const info = c.getInfo();
    const free = h.ram.framesFree;
    const g1 = h.openGroup(1);
    expect(errno(() => g1.setContainer(c))).toBe("EINVAL");
    expect(g1.container).toBeUndefined();
    expect(c.groups).toEqual([0]);
    expect(c.getInfo()).toEqual(info);
    expect(h.ram.framesFree).toBe(free);
    expect(text(g0.device(BDF0).dma.read(0x20_3000n, 12).data)).toBe("still mapped");
    expect(g1.device(BDF1).dma.read(0x20_3000n, 4).fault).toBeDefined();
    // The group is untouched: another container takes it.
    const c2 = h.openContainer({ process: p });
    g1.setContainer(c2);
    c2.setIommu("type1v2");
    expect(c2.getInfo().iovaRanges.some((r) => r.start <= 0x20_3000n && r.end >= 0x20_3000n)).toBe(false);
    // A direct-relaxable region may overlap a mapping and stays in the list.
    const g2 = h.openGroup(2);
    g2.setContainer(c);
    expect(c.groups).toEqual([0, 2]);
    expect(c.getInfo().iovaRanges).toEqual(info.iovaRanges);
    expect(text(g2.device("0000:03:00.0").dma.read(0x20_3000n, 12).data)).toBe("still mapped");
  });

  it.each(ARCHES)("%s: GET_INFO's IOVA list is recomputed on attach and detach; DMA entries available", async (arch) => {
    const h = await createHost({ ramSize: RAM, arch, platformReserved: [] });
    h.addDevice({ bdf: BDF0 });
    h.addDevice({ bdf: BDF1, reserved: [{ start: 0x1000_0000n, size: 0x20_0000n, type: "reserved" }, { start: 0x2000_0000n, size: 0x1000n, type: "direct" }] });
    const p = h.createProcess();
    const c = h.openContainer({ process: p });
    const g0 = h.openGroup(0);
    g0.setContainer(c);
    c.setIommu("type1v2");
    const alone = soleGroupList(arch);
    const info = c.getInfo();
    expect(info.iovaRanges).toEqual(alone);
    expect(info.pgsizes).toBe(PGSIZES);
    expect(info.dmaAvail).toBe(65535);
    expect(info.migration).toEqual({ pgsize: PAGE_4K, maxDirtyBitmapSize: 1n << 28n });
    const g1 = h.openGroup(1);
    g1.setContainer(c);
    const holes = [{ start: 0x1000_0000n, end: 0x101f_ffffn }, { start: 0x2000_0000n, end: 0x2000_0fffn }, arch === "vtd" ? VTD_MSI : SW_MSI];
    const both = [...holes].sort((a, b) => (a.start < b.start ? -1 : 1));
    const expected: { start: bigint; end: bigint }[] = [];
    let at = 0n;
    for (const hole of both) { expected.push({ start: at, end: hole.start - 1n }); at = hole.end + 1n; }
    expected.push({ start: at, end: APERTURE_END });
    expect(c.getInfo().iovaRanges).toEqual(expected);
    expect(h.usableRanges()).toEqual(expected);
    g1.unsetContainer();
    expect(c.getInfo().iovaRanges).toEqual(alone);
    // Detaching the first-attached group works as well.
    g1.setContainer(c);
    g0.unsetContainer();
    expect(c.getInfo().iovaRanges).toEqual(h.usableRanges(1));
    expect(c.groups).toEqual([1]);
  });

  it.each(ARCHES)("%s: the last group out releases every mapping: pins, accounting, frames, domain", async (arch) => {
    const h = await createHost({ ramSize: RAM, arch });
    h.addDevice({ bdf: BDF0 });
    h.addDevice({ bdf: BDF1 });
    const p = h.createProcess();
    const v = p.mmap(0x40000);
    const freeBefore = h.ram.framesFree;
    const c = h.openContainer({ process: p });
    const g0 = h.openGroup(0), g1 = h.openGroup(1);
    g0.setContainer(c);
    g1.setContainer(c);
    c.setIommu("type1v2");
    c.mapDma({ vaddr: v, iova: 0x4000_0000n, size: 0x20000, read: true, write: true });
    c.mapDma({ vaddr: v + 0x20000n, iova: 0x1_0000_0000n, size: 0x20000, read: true });
    expect(p.lockedBytes).toBe(0x40000n);
    const d0 = g0.device(BDF0), d1 = g1.device(BDF1);
    expect(d0.dma.read(0x4000_0000n, 4).fault).toBeUndefined();
    g0.unsetContainer();
    // One group left: the mappings stay; the detached group's device is cut off.
    expect(c.mappings().length).toBe(2);
    expect(d1.dma.read(0x4000_0000n, 4).fault).toBeUndefined();
    expect(d0.dma.read(0x4000_0000n, 4).fault?.reason).toBe("no-context");
    g1.unsetContainer();
    expect(c.mappings()).toEqual([]);
    expect(p.lockedBytes).toBe(0n);
    expect(h.ram.framesFree).toBe(freeBefore);
    expect(c.domain).toBeUndefined();
    expect(c.iommuType).toBeUndefined();
    expect(errno(() => c.getInfo())).toBe("EINVAL");
    expect(d1.dma.read(0x4000_0000n, 4).fault).toBeDefined();
    // The pins are gone: unmapping the process memory frees every frame.
    p.munmap(v, 0x40000);
    expect(h.ram.framesFree).toBe(freeBefore + 0x40);
    // SET_IOMMU again after a group rejoins; the container starts empty.
    g1.setContainer(c);
    c.setIommu("type1v2");
    expect(c.getInfo().dmaAvail).toBe(65535);
    expect(c.getInfo().iovaRanges).toEqual(soleGroupList(arch));
  });

  it("closing the last group's fd releases the mappings too", async () => {
    const { h, p, c, g, v } = await rig();
    const free = h.ram.framesFree;
    c.mapDma({ vaddr: v, iova: 0x10_0000n, size: 0x10000, read: true });
    g.close();
    expect(c.mappings()).toEqual([]);
    expect(p.lockedBytes).toBe(0n);
    expect(h.ram.framesFree).toBe(free + 1); // and the domain's root table
  });
});

// ---------------------------------------------------------------- MAP_DMA

describe("MAP_DMA", () => {
  it.each(ARCHES)("%s: every refusal has the kernel's errno and leaves nothing behind", async (arch) => {
    const r = await rig(arch, { mem: 0x10_0000 });
    const { h, c, v } = r;
    const msi = arch === "vtd" ? VTD_MSI : SW_MSI;
    c.mapDma({ vaddr: v, iova: 0x10_0000n, size: 0x10000, read: true, write: true });
    const M = 0x10_0000n; // the existing mapping: [M, M + 0xffff]
    const ro = r.p.mmap(0x2000, { write: false });
    const hole = 0x4000_0000_0000n; // nothing is mapped there
    const cases: [string, Parameters<Container["mapDma"]>[0], string][] = [
      ["size 0", { vaddr: v, iova: 0x20_0000n, size: 0, read: true }, "EINVAL"],
      ["size 0 and no flags", { vaddr: v, iova: 0x20_0000n, size: 0 }, "EINVAL"],
      ["size not a page multiple", { vaddr: v, iova: 0x20_0000n, size: 0x1800, read: true }, "EINVAL"],
      ["iova not aligned", { vaddr: v, iova: 0x20_0800n, size: 0x1000, read: true }, "EINVAL"],
      ["vaddr not aligned", { vaddr: v + 0x800n, iova: 0x20_0000n, size: 0x1000, read: true }, "EINVAL"],
      ["iova + size wraps", { vaddr: v, iova: U64_MAX - 0xfffn, size: 0x2000, read: true }, "EOVERFLOW"],
      ["vaddr + size wraps", { vaddr: U64_MAX - 0xfffn, iova: 0x20_0000n, size: 0x2000, read: true }, "EOVERFLOW"],
      ["wrap beats missing flags (6.18 order)", { vaddr: v, iova: U64_MAX - 0xfffn, size: 0x2000 }, "EOVERFLOW"],
      ["wrap beats misalignment (6.18 order)", { vaddr: v, iova: U64_MAX - 0x7ffn, size: 0x1000, read: true }, "EOVERFLOW"],
      ["ending at 2^64 - 1 is no wrap (outside the list instead)", { vaddr: v, iova: U64_MAX - 0xfffn, size: 0x1000, read: true }, "EINVAL"],
      ["neither read nor write", { vaddr: v, iova: 0x20_0000n, size: 0x1000 }, "EINVAL"],
      ["read and write false", { vaddr: v, iova: 0x20_0000n, size: 0x1000, read: false, write: false }, "EINVAL"],
      ["overlap inside", { vaddr: v, iova: M + 0x4000n, size: 0x1000, read: true }, "EEXIST"],
      ["overlap at the start", { vaddr: v, iova: M - 0x1000n, size: 0x2000, read: true }, "EEXIST"],
      ["overlap at the end", { vaddr: v, iova: M + 0xf000n, size: 0x2000, read: true }, "EEXIST"],
      ["overlap enclosing", { vaddr: v, iova: M - 0x10000n, size: 0x30000, read: true }, "EEXIST"],
      ["overlap beats an unmapped vaddr", { vaddr: hole, iova: M, size: 0x1000, read: true }, "EEXIST"],
      ["above the aperture", { vaddr: v, iova: 1n << 48n, size: 0x1000, read: true }, "EINVAL"],
      ["across the aperture's end", { vaddr: v, iova: APERTURE_END - 0xfffn, size: 0x2000, read: true }, "EINVAL"],
      ["in the MSI window", { vaddr: v, iova: msi.start, size: 0x1000, read: true }, "EINVAL"],
      ["into the MSI window", { vaddr: v, iova: msi.start - 0x1000n, size: 0x2000, read: true }, "EINVAL"],
      ["out of the MSI window", { vaddr: v, iova: msi.end - 0xfffn, size: 0x2000, read: true }, "EINVAL"],
      ["outside the list beats an unmapped vaddr", { vaddr: hole, iova: msi.start, size: 0x1000, read: true }, "EINVAL"],
      ["vaddr not mapped", { vaddr: hole, iova: 0x20_0000n, size: 0x1000, read: true }, "EFAULT"],
      ["vaddr partly mapped", { vaddr: ro + 0x1000n, iova: 0x20_0000n, size: 0x2000, read: true }, "EFAULT"],
      ["device write into memory the process cannot write", { vaddr: ro, iova: 0x20_0000n, size: 0x2000, read: true, write: true }, "EFAULT"],
    ];
    const before = state(r);
    const image = ramImage(h);
    for (const [what, req, code] of cases) {
      expect([what, errno(() => c.mapDma(req))]).toEqual([what, code]);
      expect([what, state(r)]).toEqual([what, before]);
      const iova = BigInt(req.iova as bigint);
      const mapped = (iova >= M && iova <= M + 0xffffn) || (iova >= msi.start && iova <= msi.end); // SMMUv3's doorbell
      if (iova <= APERTURE_END && iova % 0x1000n === 0n && !mapped) {
        expect([what, dom(c).pageTable.walk(iova).fault?.reason]).toEqual([what, "not-present"]);
      }
    }
    expect(ramImage(h).equals(image)).toBe(true);
    // The read-only memory maps fine for device reads only.
    expect(c.mapDma({ vaddr: ro, iova: 0x20_0000n, size: 0x2000, read: true })).toBe(0x20_0000n);
  });

  it("SMMUv3 lets 0xfee00000 be mapped; VT-d lets the sw-msi base be mapped", async () => {
    const s = await rig("smmuv3");
    expect(s.c.mapDma({ vaddr: s.v, iova: VTD_MSI.start, size: 0x1000, read: true })).toBe(VTD_MSI.start);
    const x = await rig("vtd");
    expect(x.c.mapDma({ vaddr: x.v, iova: SW_MSI.start, size: 0x1000, read: true })).toBe(SW_MSI.start);
  });

  it("the entry limit (dmaEntryLimit) is ENOSPC, after EEXIST and before the IOVA-list check", async () => {
    const r = await rig("vtd", { host: { dmaEntryLimit: 3 } });
    const { c, v } = r;
    expect(c.getInfo().dmaAvail).toBe(3);
    for (let i = 0n; i < 3n; i++) c.mapDma({ vaddr: v + i * 0x1000n, iova: 0x10_0000n + i * 0x10000n, size: 0x1000, read: true });
    expect(c.getInfo().dmaAvail).toBe(0);
    const before = state(r);
    expect(errno(() => c.mapDma({ vaddr: v, iova: 0x40_0000n, size: 0x1000, read: true }))).toBe("ENOSPC");
    expect(errno(() => c.mapDma({ vaddr: v, iova: 0x10_0000n, size: 0x1000, read: true }))).toBe("EEXIST");
    expect(errno(() => c.mapDma({ vaddr: v, iova: VTD_MSI.start, size: 0x1000, read: true }))).toBe("ENOSPC");
    expect(errno(() => c.mapDma({ vaddr: v, size: 0x1000, read: true }))).toBe("ENOSPC");
    expect(state(r)).toEqual(before);
    expect(c.unmapDma({ iova: 0x11_0000n, size: 0x1000 })).toBe(0x1000n);
    expect(c.getInfo().dmaAvail).toBe(1);
    expect(c.mapDma({ vaddr: v, iova: 0x40_0000n, size: 0x1000, read: true })).toBe(0x40_0000n);
    const none = await rig("vtd", { host: { dmaEntryLimit: 0 } });
    expect(errno(() => none.c.mapDma({ vaddr: none.v, iova: 0x1000n, size: 0x1000, read: true }))).toBe("ENOSPC");
  });

  it.each(ARCHES)("%s: running out of frames mid-map rolls everything back (RAM image, pins, accounting)", async (arch) => {
    const r = await rig(arch, { mem: 0x40_0000 });
    const { h, p, c, v } = r;
    const free = h.ram.framesFree;
    // iova - hpa is not 2 MiB aligned: 4 KiB leaves, so the domain needs a
    // level-2 and a level-1 table plus three last-level tables. Leave three frames.
    const pad = h.ram.allocFrames(free - 3);
    const before = state(r);
    const image = ramImage(h);
    expect(errno(() => c.mapDma({ vaddr: v, iova: 0x4000_1000n, size: 0x40_0000, read: true, write: true }))).toBe("ENOMEM");
    expect(state(r)).toEqual(before);
    expect(ramImage(h).equals(image)).toBe(true);
    expect(dom(c).pageTable.walk(0x4000_1000n).fault?.reason).toBe("not-present");
    expect(r.d.dma.read(0x4000_1000n, 4).fault).toBeDefined();
    h.ram.freeFrames(pad, free - 3);
    // No pin survived: the process lets go of every frame it had.
    const f = h.ram.framesFree;
    p.munmap(v, 0x40_0000);
    expect(h.ram.framesFree - f).toBe(0x400 + 2); // data frames and the two last-level tables
    // And with frames to spare the same map works.
    const w = p.mmap(0x40_0000);
    expect(c.mapDma({ vaddr: w, iova: 0x4000_1000n, size: 0x40_0000, read: true, write: true })).toBe(0x4000_1000n);
    expect(p.lockedBytes).toBe(0x40_0000n);
  });

  it.each(ARCHES)("%s: the domain's table uses the largest pages that fit", async (arch) => {
    const h = await createHost({ ramSize: RAM, arch });
    h.addDevice({ bdf: BDF0 });
    const p = h.createProcess();
    const size = 0x40_0000n;
    const v = contiguousFrom2M(h, p);
    const c = h.openContainer({ process: p });
    const g = h.openGroup(0);
    g.setContainer(c);
    c.setIommu("type1v2");
    const t = dom(c).pageTable;
    // Aligned: two 2 MiB leaves.
    c.mapDma({ vaddr: v, iova: 0x4000_0000n, size, read: true, write: true });
    for (const off of [0n, 0x1234n, PAGE_2M + 0x5000n]) {
      const w = t.walk(0x4000_0000n + off);
      expect(w.pageSize).toBe(PAGE_2M);
      expect(w.hpa).toBe(0x20_0000n + off);
    }
    // iova - hpa not 2 MiB aligned: 4 KiB leaves only.
    c.mapDma({ vaddr: v, iova: 0x8010_0000n, size, read: true });
    for (const off of [0n, PAGE_2M - 0x1000n, PAGE_2M, size - 0x1000n]) {
      const w = t.walk(0x8010_0000n + off);
      expect(w.pageSize).toBe(PAGE_4K);
      expect(w.hpa).toBe(0x20_0000n + off);
    }
    // Starting a page into the block: 4 KiB leaves up to the 2 MiB boundary, then a 2 MiB leaf.
    c.mapDma({ vaddr: v + 0x1000n, iova: 0xc000_1000n, size: size - 0x1000n, read: true });
    expect(t.walk(0xc000_1000n).pageSize).toBe(PAGE_4K);
    expect(t.walk(0xc01f_f000n).pageSize).toBe(PAGE_4K);
    expect(t.walk(0xc020_0000n).pageSize).toBe(PAGE_2M);
    expect(t.walk(0xc020_0000n).hpa).toBe(0x40_0000n);
    // The bytes a device sees are the process's.
    p.write(v + PAGE_2M + 0x10n, bytes("big page"));
    const d = g.device(BDF0);
    for (const iova of [0x4000_0000n + PAGE_2M, 0x8010_0000n + PAGE_2M, 0xc000_0000n + PAGE_2M]) {
      expect(text(d.dma.read(iova + 0x10n, 8).data)).toBe("big page");
    }
  });

  it.each(ARCHES)("%s: device DMA goes through the mapping; read-only refuses device writes", async (arch) => {
    const { c, p, v, d } = await rig(arch);
    p.write(v + 0x1ffcn, bytes("across pages"));
    c.mapDma({ vaddr: v, iova: 0x10_0000n, size: 0x4000, read: true, write: true });
    c.mapDma({ vaddr: v + 0x4000n, iova: 0x20_0000n, size: 0x1000, read: true });
    c.mapDma({ vaddr: v + 0x5000n, iova: 0x30_0000n, size: 0x1000, write: true });
    expect(text(d.dma.read(0x10_1ffcn, 12).data)).toBe("across pages");
    expect(dom(c).pageTable.walk(0x20_0000n).perms).toMatchObject({ read: true, write: false });
    expect(d.dma.write(0x10_3000n, bytes("from device")).fault).toBeUndefined();
    expect(text(p.read(v + 0x3000n, 11))).toBe("from device");
    // Read-only: a device write faults and leaves memory alone.
    const ro = d.dma.write(0x20_0000n, bytes("no"));
    expect(ro.fault?.reason).toBe("permission");
    expect(ro.bytes).toBe(0);
    expect(Array.from(p.read(v + 0x4000n, 2))).toEqual([0, 0]);
    // Write-only: a write lands.
    expect(d.dma.write(0x30_0000n, bytes("wo")).fault).toBeUndefined();
    expect(text(p.read(v + 0x5000n, 2))).toBe("wo");
  });

  it.each(ARCHES)("%s: a write-only mapping (write without read) refuses device reads", async (arch) => {
    // MAP_DMA's READ flag is the device's read permission (IOMMU_READ). Both
    // stage-2 formats can express write-only (VT-d SL R=0 W=1, Arm S2AP=10),
    // and the table says read: false; a device read must then fault.
    const { c, p, v, d } = await rig(arch);
    p.write(v, bytes("secret"));
    c.mapDma({ vaddr: v, iova: 0x30_0000n, size: 0x1000, write: true });
    expect(dom(c).pageTable.walk(0x30_0000n, "write").perms).toMatchObject({ read: false, write: true });
    const rd = d.dma.read(0x30_0000n, 6);
    expect(rd.fault?.reason).toBe("permission");
    expect(rd.bytes).toBe(0);
    expect(text(rd.data)).not.toBe("secret");
  });
});

// ---------------------------------------------------------------- UNMAP_DMA

describe("UNMAP_DMA (v2)", () => {
  it("bisecting is EINVAL and removes nothing; holes are fine; the bytes of whole mappings come back", async () => {
    const r = await rig();
    const { c, v, p } = r;
    // Mappings A [1M, 1M+64K), B [2M, 2M+16K), C [2M+16K, 2M+32K).
    c.mapDma({ vaddr: v, iova: 0x10_0000n, size: 0x10000, read: true });
    c.mapDma({ vaddr: v, iova: 0x20_0000n, size: 0x4000, read: true });
    c.mapDma({ vaddr: v, iova: 0x20_4000n, size: 0x4000, read: true });
    const before = state(r);
    for (const [iova, size] of [[0x10_1000n, 0x1_0000n], [0xf_0000n, 0x1_1000n], [0x10_0000n, 0xf000n], [0x20_0000n, 0x6000n], [0x20_2000n, 0x2000n]]) {
      expect([iova, errno(() => c.unmapDma({ iova, size }))]).toEqual([iova, "EINVAL"]);
    }
    expect(state(r)).toEqual(before);
    expect(errno(() => c.unmapDma({ iova: 0x10_0800n, size: 0x1000 }))).toBe("EINVAL");
    expect(errno(() => c.unmapDma({ iova: 0x10_0000n, size: 0 }))).toBe("EINVAL");
    expect(errno(() => c.unmapDma({ iova: 0x10_0000n, size: 0x800 }))).toBe("EINVAL");
    expect(errno(() => c.unmapDma({ iova: U64_MAX - 0xfffn, size: 0x2000 }))).toBe("EOVERFLOW");
    expect(state(r)).toEqual(before);
    // Nothing there: success, 0 bytes.
    expect(c.unmapDma({ iova: 0x30_0000n, size: 0x10_0000n })).toBe(0n);
    expect(c.unmapDma({ iova: 0x10_0000n - 0x1000n, size: 0x1000 })).toBe(0n);
    // A range holding B and C whole, with holes around them.
    expect(c.unmapDma({ iova: 0x1f_0000n, size: 0x2_0000n })).toBe(0x8000n);
    expect(c.mappings().map((m) => m.iova)).toEqual([0x10_0000n]);
    expect(p.lockedBytes).toBe(0x10000n);
    expect(c.getInfo().dmaAvail).toBe(65534);
    expect(dom(c).pageTable.walk(0x20_4000n).fault?.reason).toBe("not-present");
    expect(dom(c).pageTable.walk(0x10_0000n).fault).toBeUndefined();
  });

  it("all: needs iova = size = 0; removes every mapping", async () => {
    const r = await rig();
    const { c, v, p } = r;
    c.mapDma({ vaddr: v, iova: 0x10_0000n, size: 0x10000, read: true });
    c.mapDma({ vaddr: v, iova: 0x1_0000_0000n, size: 0x3000, write: true });
    const before = state(r);
    expect(errno(() => c.unmapDma({ all: true, iova: 0x10_0000n, size: 0 } as never))).toBe("EINVAL");
    expect(errno(() => c.unmapDma({ all: true, iova: 0, size: 0x1000 } as never))).toBe("EINVAL");
    expect(state(r)).toEqual(before);
    expect(c.unmapDma({ all: true, iova: 0, size: 0 } as never)).toBe(0x13000n);
    expect(c.mappings()).toEqual([]);
    expect(p.lockedBytes).toBe(0n);
    expect(c.getInfo().dmaAvail).toBe(65535);
    expect(c.unmapDma({ all: true })).toBe(0n);
  });

  it.each(ARCHES)("%s: unmap invalidates the IOTLB: no device can use the range afterwards", async (arch) => {
    const h = await createHost({ ramSize: RAM, arch });
    h.addDevice({ bdf: BDF0 });
    h.addDevice({ bdf: BDF1 });
    const p = h.createProcess();
    const v = p.mmap(0x10000);
    p.write(v + 0x2000n, bytes("warm"));
    const c = h.openContainer({ process: p });
    const g0 = h.openGroup(0), g1 = h.openGroup(1);
    g0.setContainer(c);
    g1.setContainer(c);
    c.setIommu("type1v2");
    c.mapDma({ vaddr: v, iova: 0x4000_0000n, size: 0x10000, read: true, write: true });
    const d0 = g0.device(BDF0), d1 = g1.device(BDF1);
    expect(text(d0.dma.read(0x4000_2000n, 4).data)).toBe("warm");
    expect(text(d1.dma.read(0x4000_2000n, 4).data)).toBe("warm");
    expect(d1.dma.write(0x4000_3000n, bytes("x")).fault).toBeUndefined();
    const hits = h.iotlb.stats().hits;
    expect(text(d0.dma.read(0x4000_2000n, 4).data)).toBe("warm");
    expect(h.iotlb.stats().hits).toBeGreaterThan(hits); // the IOTLB holds the translation
    expect(c.unmapDma({ iova: 0x4000_0000n, size: 0x10000 })).toBe(0x10000n);
    for (const d of [d0, d1]) {
      const rd = d.dma.read(0x4000_2000n, 4);
      expect(rd.fault?.reason).toBe("not-present");
      expect(rd.data.length).toBe(0); // nothing was read
      expect(d.dma.write(0x4000_3000n, bytes("y")).fault?.reason).toBe("not-present");
    }
    expect(text(p.read(v + 0x3000n, 1))).toBe("x");
  });
});

// ---------------------------------------------------------------- devices

describe("device DMA through the container", () => {
  it("faults carry the device's requester id (bus << 8 | dev << 3 | fn)", async () => {
    const h = await createHost({ ramSize: RAM });
    h.addDevice({ bdf: "0000:03:1f.5", group: 0 });
    h.addDevice({ bdf: "0001:0a:02.3", group: 0 });
    const p = h.createProcess();
    const c = h.openContainer({ process: p });
    const g = h.openGroup(0);
    g.setContainer(c);
    c.setIommu("type1v2");
    h.faults.drain();
    const a = g.device("0000:03:1f.5"), b = g.device("0001:0a:02.3");
    expect(a.requesterId).toBe((0x03 << 8) | (0x1f << 3) | 5);
    expect(a.dma.read(0x5000_0000n, 4).fault?.reason).toBe("not-present");
    expect(b.dma.write(0x6000_0000n, bytes("z")).fault?.reason).toBe("not-present");
    const f = h.faults.drain();
    expect(f.map((x) => [x.source, x.address, x.access.write, x.domain])).toEqual([
      [0x3fd, 0x5000_0000n, false, dom(c).id],
      [0x0a13, 0x6000_0000n, true, dom(c).id],
    ]);
    expect(errno(() => g.device(BDF0))).toBe("ENODEV");
  });

  it("a device whose group is in no container (or one without an IOMMU set) cannot DMA", async () => {
    const { h, c, p, v } = await rig();
    h.addDevice({ bdf: "0000:04:00.0" });
    p.write(v, bytes("private"));
    c.mapDma({ vaddr: v, iova: 0x10_0000n, size: 0x1000, read: true, write: true });
    const g1 = h.openGroup(1);
    const d = g1.device("0000:04:00.0");
    h.faults.drain();
    const rd = d.dma.read(0x10_0000n, 7);
    expect(rd.fault).toBeDefined();
    expect(rd.bytes).toBe(0);
    expect(rd.data.length).toBe(0); // nothing was read
    expect(d.dma.write(0x10_0000n, bytes("XX")).fault).toBeDefined();
    expect(text(p.read(v, 7))).toBe("private");
    const f = h.faults.drain();
    expect(f.map((x) => x.source)).toEqual([0x400, 0x400]);
    expect(d.msiAddress).toBeUndefined();
    // In a container that has no IOMMU yet: still blocked.
    const c2 = h.openContainer({ process: p });
    g1.setContainer(c2);
    expect(d.dma.read(0x10_0000n, 7).fault).toBeDefined();
    // Moved into the first container: it sees the shared mappings.
    g1.unsetContainer();
    g1.setContainer(c);
    expect(text(d.dma.read(0x10_0000n, 7).data)).toBe("private");
  });
});

// ---------------------------------------------------------------- MSI

describe("MSI", () => {
  it("VT-d: a write into the interrupt window raises onInterrupt, not a memory write", async () => {
    const { h, c, d, p, v } = await rig("vtd");
    expect(d.msiAddress).toBe(VTD_MSI.start);
    expect(c.msiDoorbellIova).toBeUndefined();
    const seen: Interrupt[] = [];
    const stop = h.onInterrupt((i) => seen.push(i));
    const image = ramImage(h);
    const r1 = d.dma.write(VTD_MSI.start, new Uint8Array([0x41, 0x00, 0x02, 0x00]));
    expect(r1.interrupt).toEqual({ address: VTD_MSI.start, data: 0x20041 });
    expect(r1.fault).toBeUndefined();
    const r2 = d.dma.write(VTD_MSI.start + 0x3_0008n, new Uint8Array([0x99, 0, 0, 0]));
    expect(r2.interrupt).toEqual({ address: VTD_MSI.start + 0x3_0008n, data: 0x99 });
    expect(seen).toEqual([
      { device: BDF0, address: VTD_MSI.start, data: 0x20041 },
      { device: BDF0, address: VTD_MSI.start + 0x3_0008n, data: 0x99 },
    ]);
    expect(ramImage(h).equals(image)).toBe(true);
    // A transfer running from memory into the window: memory up to it, then the interrupt.
    c.mapDma({ vaddr: v, iova: VTD_MSI.start - 0x1000n, size: 0x1000, read: true, write: true });
    const r3 = d.dma.write(VTD_MSI.start - 4n, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
    expect(r3.bytes).toBe(8);
    expect(r3.interrupt).toEqual({ address: VTD_MSI.start, data: 0x08070605 });
    expect(Array.from(p.read(v + 0xffcn, 4))).toEqual([1, 2, 3, 4]);
    expect(seen.length).toBe(3);
    // Reads of the window do not reach memory; unsubscribed callbacks hear nothing.
    expect(d.dma.read(VTD_MSI.start, 4).fault).toBeDefined();
    stop();
    expect(d.dma.write(VTD_MSI.start, new Uint8Array([1, 0, 0, 0])).interrupt).toBeDefined();
    expect(seen.length).toBe(3);
  });

  it("VT-d: the sw-msi base is ordinary memory there", async () => {
    const { h, c, d, p, v } = await rig("vtd");
    const seen: Interrupt[] = [];
    h.onInterrupt((i) => seen.push(i));
    c.mapDma({ vaddr: v, iova: SW_MSI.start, size: 0x1000, read: true, write: true });
    const r = d.dma.write(SW_MSI.start, new Uint8Array([7, 0, 0, 0]));
    expect(r.interrupt).toBeUndefined();
    expect(Array.from(p.read(v, 4))).toEqual([7, 0, 0, 0]);
    expect(seen).toEqual([]);
  });

  it("SMMUv3: the doorbell is mapped write-only at the sw-msi base; writes to it are interrupts", async () => {
    const { h, c, d, g } = await rig("smmuv3");
    expect(c.msiDoorbellIova).toBe(SW_MSI.start);
    expect(d.msiAddress).toBe(SW_MSI.start);
    const w = dom(c).pageTable.walk(SW_MSI.start, "write");
    expect(w.fault).toBeUndefined();
    expect(w.perms?.read).toBe(false);
    expect(w.perms?.write).toBe(true);
    expect(w.hpa! >= h.ram.size).toBe(true); // the doorbell is not RAM
    // Users cannot map over it: the window is not in the valid list.
    expect(c.getInfo().iovaRanges.some((r) => r.start <= SW_MSI.start && r.end >= SW_MSI.start)).toBe(false);
    const seen: Interrupt[] = [];
    h.onInterrupt((i) => seen.push(i));
    const image = ramImage(h);
    const r = d.dma.write(d.msiAddress!, new Uint8Array([0x2a, 0, 0, 0]));
    expect(r.interrupt).toEqual({ address: SW_MSI.start, data: 0x2a });
    expect(seen).toEqual([{ device: BDF0, address: SW_MSI.start, data: 0x2a }]);
    expect(ramImage(h).equals(image)).toBe(true);
    const rd = d.dma.read(SW_MSI.start, 4);
    expect(rd.fault).toBeDefined();
    expect(rd.bytes).toBe(0);
    // The rest of the window maps nothing.
    expect(d.dma.write(SW_MSI.start + 0x1000n, new Uint8Array([1, 0, 0, 0])).fault).toBeDefined();
    expect(seen.length).toBe(1);
    // A second group shares the container's doorbell.
    h.addDevice({ bdf: BDF1 });
    const g1 = h.openGroup(1);
    g1.setContainer(c);
    const d1 = g1.device(BDF1);
    expect(d1.msiAddress).toBe(SW_MSI.start);
    d1.dma.write(d1.msiAddress!, new Uint8Array([5, 0, 0, 0]));
    expect(seen[1]).toEqual({ device: BDF1, address: SW_MSI.start, data: 5 });
    // Released with the domain; placed again at the base after SET_IOMMU.
    g1.unsetContainer();
    g.unsetContainer();
    expect(c.msiDoorbellIova).toBeUndefined();
    expect(d.msiAddress).toBeUndefined();
    g.setContainer(c);
    c.setIommu("type1v2");
    expect(c.msiDoorbellIova).toBe(SW_MSI.start);
  });

  it("SMMUv3: 0xfee00000 is ordinary memory there", async () => {
    const { h, c, d, p, v } = await rig("smmuv3");
    const seen: Interrupt[] = [];
    h.onInterrupt((i) => seen.push(i));
    c.mapDma({ vaddr: v, iova: VTD_MSI.start, size: 0x1000, read: true, write: true });
    const r = d.dma.write(VTD_MSI.start, new Uint8Array([9, 0, 0, 0]));
    expect(r.interrupt).toBeUndefined();
    expect(r.fault).toBeUndefined();
    expect(Array.from(p.read(v, 4))).toEqual([9, 0, 0, 0]);
    expect(seen).toEqual([]);
  });

  it("SMMUv3: a group with a hardware msi region gets no doorbell cookie", async () => {
    const { c, d } = await rig("smmuv3", { device: { reserved: [{ start: 0x3000_0000n, size: 0x10_0000n, type: "msi" }] } });
    expect(c.msiDoorbellIova).toBeUndefined();
    expect(dom(c).pageTable.walk(SW_MSI.start, "write").fault).toBeDefined();
    expect(d.dma.write(SW_MSI.start, new Uint8Array([1, 0, 0, 0])).interrupt).toBeUndefined();
  });

  it("SMMUv3: a doorbell displaced from the window base is never handed out as DMA space", async () => {
    // A reserved page at the window base: the doorbell goes to the lowest free
    // page below 4 GiB (DESIGN §8). That IOVA must not then be offered to, or
    // break, MAP_DMA.
    const { c, d, v, h } = await rig("smmuv3", { device: { reserved: [{ start: SW_MSI.start, size: 0x1000n, type: "reserved" }] } });
    const bell = c.msiDoorbellIova!;
    expect(bell).toBe(0x1000n);
    expect(d.msiAddress).toBe(bell);
    const seen: Interrupt[] = [];
    h.onInterrupt((i) => seen.push(i));
    expect(d.dma.write(bell, new Uint8Array([3, 0, 0, 0])).interrupt).toEqual({ address: bell, data: 3 });
    // An automatic IOVA must avoid the doorbell page and succeed.
    const iova = c.mapDma({ vaddr: v, size: 0x1000, read: true, write: true });
    expect(iova === bell).toBe(false);
    expect(d.dma.write(bell, new Uint8Array([4, 0, 0, 0])).interrupt).toEqual({ address: bell, data: 4 });
    expect(seen.length).toBe(2);
  });
});

// ---------------------------------------------------------------- dirty tracking

describe("dirty tracking", () => {
  it.each(ARCHES)("%s: device writes mark pages; reads do not; reading clears", async (arch) => {
    const { c, d, p, v } = await rig(arch);
    const A = 0x4000_0000n, B = 0x4002_0000n;
    c.mapDma({ vaddr: v, iova: A, size: 0x10000, read: true, write: true });
    c.mapDma({ vaddr: v + 0x10000n, iova: B, size: 0x8000, read: true, write: true });
    // Writes before tracking starts do not count.
    d.dma.write(A + 0x1000n, bytes("early"));
    expect(c.dirty.tracking).toBe(false);
    c.dirty.start();
    expect(c.dirty.tracking).toBe(true);
    const full = { iova: A, size: 0x28000n, pgsize: 0x1000n }; // A, the hole, B
    expect(setBits(c.dirty.bitmap(full))).toEqual([]);
    d.dma.write(A + 0x3ff0n, new Uint8Array(0x20)); // pages 3 and 4
    d.dma.write(A + 0xf000n, bytes("p15"));
    d.dma.write(B + 0x7ffen, bytes("!!")); // last page of B: bit 0x27
    d.dma.read(A + 0x8000n, 0x2000); // read only: pages 8, 9 stay clean
    p.write(v + 0xa000n, bytes("cpu")); // the CPU is not a device: not tracked
    const first = c.dirty.bitmap(full);
    expect(first.length).toBe(Math.ceil(0x28 / 8));
    expect(setBits(first)).toEqual([3, 4, 15, 0x27]);
    // Cleared by the read.
    expect(setBits(c.dirty.bitmap(full))).toEqual([]);
    // And set again by the next write (no stale IOTLB state hides it).
    d.dma.write(A + 0x3000n, bytes("again"));
    expect(setBits(c.dirty.bitmap({ iova: A, size: 0x10000n, pgsize: 0x1000n }))).toEqual([3]);
    // A range of just B: bit 0 is B's first page.
    d.dma.write(B, bytes("b0"));
    d.dma.write(B + 0x5000n, bytes("b5"));
    expect(setBits(c.dirty.bitmap({ iova: B, size: 0x8000n, pgsize: 0x1000n }))).toEqual([0, 5]);
    // A range over the hole alone: nothing dirty, no error.
    expect(setBits(c.dirty.bitmap({ iova: A + 0x10000n, size: 0x10000n, pgsize: 0x1000n }))).toEqual([]);
    // Reading one range leaves the other's bits.
    d.dma.write(A, bytes("a0"));
    d.dma.write(B + 0x1000n, bytes("b1"));
    expect(setBits(c.dirty.bitmap({ iova: B, size: 0x8000n, pgsize: 0x1000n }))).toEqual([1]);
    expect(setBits(c.dirty.bitmap({ iova: A, size: 0x10000n, pgsize: 0x1000n }))).toEqual([0]);
  });

  it.each(ARCHES)("%s: a mapping made while tracking starts clean; stop ends tracking", async (arch) => {
    const { c, d, v } = await rig(arch);
    c.dirty.start();
    c.dirty.start(); // idempotent
    c.mapDma({ vaddr: v, iova: 0x10_0000n, size: 0x4000, read: true, write: true });
    const req = { iova: 0x10_0000n, size: 0x4000n, pgsize: 0x1000n };
    expect(setBits(c.dirty.bitmap(req))).toEqual([]);
    d.dma.write(0x10_2000n, bytes("x"));
    expect(setBits(c.dirty.bitmap(req))).toEqual([2]);
    c.dirty.stop();
    expect(c.dirty.tracking).toBe(false);
    expect(errno(() => c.dirty.bitmap(req))).toBe("EINVAL");
    d.dma.write(0x10_1000n, bytes("untracked"));
    c.dirty.start();
    expect(setBits(c.dirty.bitmap(req))).toEqual([]);
    d.dma.write(0x10_3000n, bytes("tracked"));
    expect(setBits(c.dirty.bitmap(req))).toEqual([3]);
  });

  it("bad requests: misaligned, wrong pgsize, not started, bisecting are EINVAL; wrap is EOVERFLOW", async () => {
    const { c, d, v } = await rig();
    c.mapDma({ vaddr: v, iova: 0x10_0000n, size: 0x4000, read: true, write: true });
    const ok = { iova: 0x10_0000n, size: 0x4000n, pgsize: 0x1000n };
    expect(errno(() => c.dirty.bitmap(ok))).toBe("EINVAL"); // not started
    c.dirty.start();
    d.dma.write(0x10_0000n, bytes("d"));
    expect(errno(() => c.dirty.bitmap({ ...ok, iova: 0x10_0800n }))).toBe("EINVAL");
    expect(errno(() => c.dirty.bitmap({ ...ok, size: 0x3800n }))).toBe("EINVAL");
    expect(errno(() => c.dirty.bitmap({ ...ok, size: 0n }))).toBe("EINVAL");
    expect(errno(() => c.dirty.bitmap({ ...ok, pgsize: 0x2000n }))).toBe("EINVAL");
    expect(errno(() => c.dirty.bitmap({ ...ok, pgsize: PAGE_2M }))).toBe("EINVAL");
    expect(errno(() => c.dirty.bitmap({ ...ok, size: 0x2000n }))).toBe("EINVAL"); // ends inside the mapping
    expect(errno(() => c.dirty.bitmap({ ...ok, iova: 0x10_1000n, size: 0x3000n }))).toBe("EINVAL"); // starts inside
    expect(errno(() => c.dirty.bitmap({ iova: U64_MAX - 0xfffn, size: 0x2000n, pgsize: 0x1000n }))).toBe("EOVERFLOW");
    // The failed reads cleared nothing.
    expect(setBits(c.dirty.bitmap(ok))).toEqual([0]);
  });
});

// ---------------------------------------------------------------- iommufd extensions

describe("iommufd extensions: allowed IOVAs and automatic IOVAs", () => {
  it("mapDma without iova picks one aligned to the size's power of two, never 0, and returns it", async () => {
    const { c, d, p, v } = await rig("vtd", { mem: 0x40_0000 });
    p.write(v, bytes("auto"));
    const a = c.mapDma({ vaddr: v, size: 0x1000, read: true, write: true });
    expect(a).toBe(0x1000n);
    expect(text(d.dma.read(a, 4).data)).toBe("auto");
    const b = c.mapDma({ vaddr: v, size: 0x3000, read: true });
    expect(b).toBe(0x4000n);
    const e = c.mapDma({ vaddr: v, size: 0x1000, read: true });
    expect(e).toBe(0x2000n);
    const big = c.mapDma({ vaddr: v, size: 0x20_0000, read: true });
    expect(big).toBe(0x20_0000n);
    expect(c.mappings().map((m) => m.iova)).toEqual([0x1000n, 0x2000n, 0x4000n, 0x20_0000n]);
    expect(p.lockedBytes).toBe(0x1000n * 5n + 0x20_0000n);
  });

  it.each(ARCHES)("%s: picked IOVAs avoid reserved regions", async (arch) => {
    const { c, v } = await rig(arch, { device: { reserved: [{ start: 0n, size: 0x10_0000n, type: "reserved" }, { start: 0x10_0000n, size: 0x1000n, type: "direct-relaxable" }] } });
    expect(c.mapDma({ vaddr: v, size: 0x1000, read: true })).toBe(0x10_0000n); // relaxable is usable
    expect(c.mapDma({ vaddr: v, size: 0x8000, read: true })).toBe(0x10_8000n);
  });

  it("allowIovas: start >= end or overlapping ranges are EINVAL; the old list stays", async () => {
    const { c, v } = await rig();
    c.allowIovas([{ start: 0x1_0000_0000n, end: 0x1_0000_ffffn }]);
    expect(errno(() => c.allowIovas([{ start: 0x2000_0000n, end: 0x2000_0000n }]))).toBe("EINVAL");
    expect(errno(() => c.allowIovas([{ start: 0x2000_1000n, end: 0x2000_0000n }]))).toBe("EINVAL");
    expect(errno(() => c.allowIovas([{ start: 0x2000_0000n, end: 0x2000_ffffn }, { start: 0x2000_f000n, end: 0x2001_ffffn }]))).toBe("EINVAL");
    expect(errno(() => c.allowIovas([{ start: 0x3000_0000n, end: 0x3000_ffffn }, { start: 0x2000_0000n, end: 0x3000_0000n }]))).toBe("EINVAL");
    expect(c.mapDma({ vaddr: v, size: 0x1000, read: true })).toBe(0x1_0000_0000n);
    // Touching ranges are fine.
    c.allowIovas([{ start: 0x3000_0000n, end: 0x3000_0fffn }, { start: 0x3000_1000n, end: 0x3000_1fffn }]);
    expect(c.mapDma({ vaddr: v, size: 0x1000, read: true })).toBe(0x3000_0000n);
    expect(c.mapDma({ vaddr: v, size: 0x1000, read: true })).toBe(0x3000_1000n);
    // An empty list lifts the restriction.
    c.allowIovas([]);
    expect(c.mapDma({ vaddr: v, size: 0x1000, read: true })).toBe(0x1000n);
  });

  it.each(ARCHES)("%s: allowIovas over a reserved region of an attached group is EADDRINUSE, old list kept", async (arch) => {
    const { c, v } = await rig(arch);
    const msi = arch === "vtd" ? VTD_MSI : SW_MSI;
    c.allowIovas([{ start: 0x5000_0000n, end: 0x5000_ffffn }]);
    expect(errno(() => c.allowIovas([{ start: msi.start - 0x1000n, end: msi.start }]))).toBe("EADDRINUSE");
    expect(errno(() => c.allowIovas([{ start: 0x7000_0000n, end: 0x7000_ffffn }, { start: msi.end, end: msi.end + 0x1000n }]))).toBe("EADDRINUSE");
    expect(c.mapDma({ vaddr: v, size: 0x1000, read: true })).toBe(0x5000_0000n);
    // Right up to the region is fine.
    c.allowIovas([{ start: msi.start - 0x1000n, end: msi.start - 1n }]);
    expect(c.mapDma({ vaddr: v, size: 0x1000, read: true })).toBe(msi.start - 0x1000n);
  });

  it("picks stay inside the allowed ranges; none free is ENOSPC with nothing changed", async () => {
    const r = await rig();
    const { c, v } = r;
    c.allowIovas([{ start: 0x6000_0000n, end: 0x6000_3fffn }, { start: 0x7000_0000n, end: 0x7000_0fffn }]);
    expect(c.mapDma({ vaddr: v, size: 0x2000, read: true })).toBe(0x6000_0000n);
    expect(c.mapDma({ vaddr: v, size: 0x1000, read: true })).toBe(0x6000_2000n);
    expect(c.mapDma({ vaddr: v, size: 0x1000, read: true })).toBe(0x6000_3000n);
    expect(c.mapDma({ vaddr: v, size: 0x1000, read: true })).toBe(0x7000_0000n);
    const before = state(r);
    expect(errno(() => c.mapDma({ vaddr: v, size: 0x1000, read: true }))).toBe("ENOSPC");
    expect(state(r)).toEqual(before);
    // A size that fits nowhere as one piece is ENOSPC too.
    c.unmapDma({ iova: 0x6000_2000n, size: 0x2000 });
    expect(errno(() => c.mapDma({ vaddr: v, size: 0x4000, read: true }))).toBe("ENOSPC");
    // Fixed IOVAs are not restricted by the allowed list.
    expect(c.mapDma({ vaddr: v, iova: 0x10_0000n, size: 0x1000, read: true })).toBe(0x10_0000n);
  });

  it("a group whose reserved region lies in an allowed range is refused with EADDRINUSE", async () => {
    const h = await createHost({ ramSize: RAM });
    h.addDevice({ bdf: BDF0 });
    h.addDevice({ bdf: BDF1, reserved: [{ start: 0x8000_0000n, size: 0x1000n, type: "direct" }] });
    const p = h.createProcess();
    const c = h.openContainer({ process: p });
    const g0 = h.openGroup(0);
    g0.setContainer(c);
    c.setIommu("type1v2");
    c.allowIovas([{ start: 0x7000_0000n, end: 0x8fff_ffffn }]);
    const info = c.getInfo();
    const g1 = h.openGroup(1);
    expect(errno(() => g1.setContainer(c))).toBe("EADDRINUSE");
    expect(g1.container).toBeUndefined();
    expect(c.groups).toEqual([0]);
    expect(c.getInfo()).toEqual(info);
  });
});

describe("dirty bitmaps over large ranges", () => {
  // The engine's plane reads a bitmap 32 GiB of IOVA at a time. A 2 MiB leaf
  // that straddles a chunk boundary must read dirty on both sides of it: the
  // dirty bit may be cleaned only once every chunk has been read.
  it("a large leaf straddling a 32 GiB chunk boundary reads dirty in both chunks", async () => {
    const h = await createHost({ ramSize: RAM });
    h.addDevice({ bdf: BDF0 });
    const p = h.createProcess();
    const vaddr = contiguousFrom2M(h, p);
    const c = h.openContainer({ process: p });
    const g = h.openGroup(0);
    g.setContainer(c);
    c.setIommu("type1v2");
    const d = g.device(BDF0);
    // Mapped at IOVA 32 GiB: one 2 MiB leaf.
    const iova = 32n << 30n;
    c.mapDma({ vaddr, iova, size: PAGE_2M, read: true, write: true });
    expect(dom(c).pageTable.walk(iova).pageSize).toBe(PAGE_2M);
    c.dirty.start();
    expect(d.dma.write(iova + 0x1234n, bytes("x")).bytes).toBe(1);
    // From 4 KiB: the chunk boundary (4 KiB + 32 GiB) falls one page into the leaf.
    const start = 0x1000n;
    const size = iova + PAGE_2M - start;
    const bitmap = c.dirty.bitmap({ iova: start, size, pgsize: PAGE_4K });
    const first = Number((iova - start) >> 12n);
    let set = 0;
    for (let i = 0; i < bitmap.length * 8; i++) if ((bitmap[i >> 3] >> (i & 7)) & 1) set++;
    expect(set).toBe(512);
    for (const page of [first, first + 1, first + 511]) expect((bitmap[page >> 3] >> (page & 7)) & 1).toBe(1);
    // Read and cleaned: a second read is empty.
    expect(c.dirty.bitmap({ iova: start, size, pgsize: PAGE_4K }).some((b) => b !== 0)).toBe(false);
  });
});
