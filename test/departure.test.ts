// What an owner leaves behind when it departs: a group that leaves a nesting
// container takes none of that container's PASID bindings with it, a refused
// guest-table call writes no guest memory, and every other way out (close,
// release, PASID free, destroy) leaves nothing a device can still reach.
import { describe, expect, it } from "vitest";
import { createHost, type Container, type Host, type Process, type VfioDevice, type VfioGroup } from "../src/index.js";
import { errno } from "./support/outcome.js";

const MiB = 1n << 20n;
const SECRET_GPA = 0x200000n;
const GVA = 0x40000000n;
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const bytes = (s: string) => new TextEncoder().encode(s);

type Arch = "vtd" | "smmuv3";
const ARCHES: [Arch, "x86-64" | "arm64"][] = [["vtd", "x86-64"], ["smmuv3", "arm64"]];

interface Tenants {
  h: Host;
  format: "x86-64" | "arm64";
  /** Process A's nesting container with groups 1 and 2; guest RAM at GPA 0, "secret of A" at SECRET_GPA. */
  ca: Container;
  a: Process;
  aram: bigint;
  /** Process B's container, empty. */
  cb: Container;
  g1: VfioGroup;
  g2: VfioGroup;
  /** In group 2. */
  dev: VfioDevice;
  /** GVA → SECRET_GPA in a table the guest built; bound to dev's PASID. */
  pasid: number;
  /** Guest pages for tables, from GPA 0x100000 up. */
  allocTable: () => bigint;
}

async function tenants(arch: Arch, format: "x86-64" | "arm64"): Promise<Tenants> {
  const h = await createHost({ ramSize: 64 * 1024 * 1024, arch });
  h.addDevice({ bdf: "0000:01:00.0" });
  h.addDevice({ bdf: "0000:02:00.0" });
  const a = h.createProcess(), b = h.createProcess();
  const aram = a.mmap(4n * MiB);
  a.write(aram + SECRET_GPA, bytes("secret of A"));
  const ca = h.openContainer({ process: a }), cb = h.openContainer({ process: b });
  const g1 = h.openGroup(0), g2 = h.openGroup(1);
  g1.setContainer(ca);
  g2.setContainer(ca);
  ca.setIommu("nesting");
  ca.mapDma({ vaddr: aram, iova: 0n, size: 4n * MiB, read: true, write: true });
  let next = 0x100000n;
  const allocTable = () => { const gpa = next; next += 0x1000n; return gpa; };
  const gpt = ca.gpa.pageTable({ format, allocTable });
  gpt.map(GVA, SECRET_GPA, 0x1000n, { write: true });
  const dev = g2.device("0000:02:00.0");
  const pasid = ca.pasid.alloc({ min: 1, max: 100 });
  dev.bindPgtbl({ pasid, format, root: gpt.root });
  expect(text(dev.dma.read(GVA, 11, { pasid }).data)).toBe("secret of A");
  return { h, format, ca, a, aram, cb, g1, g2, dev, pasid, allocTable };
}

/** B's container with its own guest RAM, holding group 2 now. */
function moveToB(t: Tenants): Process {
  const b = t.cb.process!;
  t.g2.setContainer(t.cb);
  t.cb.setIommu("nesting");
  t.cb.mapDma({ vaddr: b.mmap(4n * MiB), iova: 0n, size: 4n * MiB, read: true, write: true });
  return b;
}

describe.each(ARCHES)("a group leaving a nesting container (%s)", (arch, format) => {
  it("takes none of the container's PASID bindings: no DMA of its devices reaches the old container, from no container or from another", async () => {
    const t = await tenants(arch, format);
    t.g2.unsetContainer();
    // Group 1 stays, so A keeps its stage 2; the departed device must reach none of it.
    const alone = t.dev.dma.read(GVA, 11, { pasid: t.pasid });
    expect(alone.bytes).toBe(0);
    expect(alone.fault?.reason).toBe("no-context");
    moveToB(t);
    const read = t.dev.dma.read(GVA, 11, { pasid: t.pasid });
    expect(read.bytes).toBe(0);
    expect(read.fault?.reason).toBe("no-context");
    const write = t.dev.dma.write(GVA, bytes("overwritten"), { pasid: t.pasid });
    expect(write.bytes).toBe(0);
    expect(text(t.a.read(t.aram + SECRET_GPA, 11))).toBe("secret of A");
  });

  it("leaves the new owner with no bindings: B cannot unbind or free A's PASID, and A can bind it again on a device it still has", async () => {
    const t = await tenants(arch, format);
    t.g2.unsetContainer();
    moveToB(t);
    expect(errno(() => t.dev.unbindPgtbl(t.pasid))).toBe("EINVAL");
    expect(t.cb.pasid.free({ min: t.pasid, max: t.pasid })).toBe(0);
    // Still A's PASID: B cannot bind it, A can (on group 1's device), and the departed device holds no stale entry.
    expect(errno(() => t.dev.bindPgtbl({ pasid: t.pasid, format, root: 0x100000n }))).toBe("EINVAL");
    const stay = t.g1.device("0000:01:00.0");
    stay.bindPgtbl({ pasid: t.pasid, format, root: 0x100000n });
    expect(text(stay.dma.read(GVA, 11, { pasid: t.pasid }).data)).toBe("secret of A");
    // B gets its own PASID for the moved device and binds it with no EBUSY left over from A.
    const pb = t.cb.pasid.alloc({ min: 1, max: 100 });
    t.cb.gpa.writeU64(0x1000n, 0n);
    expect(errno(() => t.dev.bindPgtbl({ pasid: pb, format, root: 0x1000n }))).toBe("no error");
  });

  it("closing the group fd is a departure too: the old device object is dead, the reopened group's device has no binding", async () => {
    const t = await tenants(arch, format);
    t.g2.close();
    expect(errno(() => t.dev.dma.read(GVA, 11, { pasid: t.pasid }))).toBe("ENODEV");
    const again = t.h.openGroup(1);
    again.setContainer(t.ca);
    const dev = again.device("0000:02:00.0");
    expect(dev.dma.read(GVA, 11, { pasid: t.pasid }).fault?.reason).toBe("no-context");
    expect(errno(() => dev.bindPgtbl({ pasid: t.pasid, format, root: 0x100000n }))).toBe("no error");
  });

  it("a device that went back to A's container starts with no bindings there either", async () => {
    const t = await tenants(arch, format);
    t.g2.unsetContainer();
    t.g2.setContainer(t.ca);
    expect(t.dev.dma.read(GVA, 11, { pasid: t.pasid }).fault?.reason).toBe("no-context");
    expect(errno(() => t.dev.bindPgtbl({ pasid: t.pasid, format, root: 0x100000n }))).toBe("no error");
    expect(text(t.dev.dma.read(GVA, 11, { pasid: t.pasid }).data)).toBe("secret of A");
  });
});

describe.each(ARCHES)("a refused c.gpa.pageTable() (%s)", (arch, format) => {
  it("a misaligned root from the guest's allocator writes nothing and goes back to freeTable", async () => {
    const t = await tenants(arch, format);
    t.ca.gpa.write(0x10000n, new Uint8Array(0x2000).fill(0xa5));
    const freed: bigint[] = [];
    expect(errno(() => t.ca.gpa.pageTable({ format, allocTable: () => 0x10008n, freeTable: (gpa) => freed.push(gpa) }))).toBe("EINVAL");
    expect(t.ca.gpa.read(0x10000n, 0x2000)).toEqual(new Uint8Array(0x2000).fill(0xa5));
    expect(freed).toEqual([0x10008n]);
  });

  it("a bad addressWidth is refused before the allocator is asked", async () => {
    const t = await tenants(arch, format);
    t.ca.gpa.write(0x10000n, new Uint8Array(0x1000).fill(0x5a));
    let asked = 0;
    expect(errno(() => t.ca.gpa.pageTable({ format, addressWidth: 13, allocTable: () => { asked++; return 0x10000n; } }))).toBe("EINVAL");
    expect(asked).toBe(0);
    expect(t.ca.gpa.read(0x10000n, 0x1000)).toEqual(new Uint8Array(0x1000).fill(0x5a));
  });

  it("a root stage 2 does not reach is handed back, and a bad freeTable is refused before anything", async () => {
    const t = await tenants(arch, format);
    const freed: bigint[] = [];
    expect(errno(() => t.ca.gpa.pageTable({ format, allocTable: () => 64n * MiB, freeTable: (gpa) => freed.push(gpa) }))).toBe("EFAULT");
    expect(freed).toEqual([64n * MiB]);
    let asked = 0;
    expect(errno(() => t.ca.gpa.pageTable({ format, allocTable: () => { asked++; return 0x10000n; }, freeTable: 7 as unknown as () => void }))).toBe("EINVAL");
    expect(asked).toBe(0);
  });
});

describe.each(ARCHES)("every other way out (%s)", (arch, format) => {
  it("closing a container drops its bindings and PASIDs: another container takes the same PASID and binds it on that device, no EBUSY", async () => {
    const t = await tenants(arch, format);
    const nodesBefore = t.h.pasids.stats().nodesFree;
    t.ca.close();
    expect(t.h.pasids.stats().nodesFree).toBeGreaterThan(nodesBefore);
    expect(errno(() => t.dev.dma.read(GVA, 11, { pasid: t.pasid }))).toBe("no error");
    expect(t.dev.dma.read(GVA, 11, { pasid: t.pasid }).bytes).toBe(0);
    moveToB(t);
    expect(t.cb.pasid.alloc({ min: t.pasid, max: t.pasid })).toBe(t.pasid);
    t.cb.gpa.writeU64(0x1000n, 0n);
    expect(errno(() => t.dev.bindPgtbl({ pasid: t.pasid, format, root: 0x1000n }))).toBe("no error");
    expect(t.dev.dma.read(GVA, 11, { pasid: t.pasid }).fault?.reason).toBe("not-present");
  });

  it("the last group out releases stage 2: guest tables built over it are gone (ENODEV), not left over a stage 2 someone else may get", async () => {
    const t = await tenants(arch, format);
    const gpt = t.ca.gpa.pageTable({ format, allocTable: t.allocTable });
    t.g1.unsetContainer();
    t.g2.unsetContainer();
    expect(t.ca.domain).toBeUndefined();
    expect(errno(() => gpt.map(GVA, SECRET_GPA, 0x1000n))).toBe("ENODEV");
    expect(errno(() => gpt.unmap(GVA, 0x1000n))).toBe("ENODEV");
    expect(errno(() => gpt.destroy())).toBe("no error");
    expect(errno(() => t.ca.gpa.read(0n, 8))).toBe("EINVAL");
  });

  it("a stage 2 with nested domains over it cannot be destroyed (EBUSY), so no nested walk can land in a domain that reuses its id", async () => {
    const { h } = await tenants(arch, format);
    const s2options = arch === "vtd" ? { format: "vtd-sl" as const, inputBits: 48 } : { format: "arm64" as const, stage: 2 as const, inputBits: 40 };
    const s2 = h.createDomain(s2options);
    const nested = h.createDomain({ stage2: s2, format, root: 0x1000n });
    expect(errno(() => s2.destroy())).toBe("EBUSY");
    expect(errno(() => s2.translate(0n))).toBe("no error");
    nested.destroy();
    expect(errno(() => s2.destroy())).toBe("no error");
    // The freed id goes to another owner's stage 2; the destroyed nested domain cannot use it.
    const other = h.createDomain(s2options);
    other.pageTable.map(0n, 0x100000n, 0x200000n, { read: true, write: true });
    expect(errno(() => nested.translate(0x40000000n))).toBe("ENODEV");
  });

  it("a host driver cannot take a device whose group is in a container (EBUSY); it can once the group left", async () => {
    const t = await tenants(arch, format);
    const hostDev = t.h.device("0000:02:00.0");
    expect(errno(() => hostDev.bindDriver("host"))).toBe("EBUSY");
    expect(hostDev.driver).toBe("vfio-pci");
    expect(errno(() => hostDev.bindDriver(null))).toBe("no error");
    expect(errno(() => hostDev.bindDriver("vfio-pci"))).toBe("no error");
    t.g2.unsetContainer();
    expect(errno(() => hostDev.bindDriver("host"))).toBe("no error");
    expect(errno(() => t.g2.setContainer(t.ca))).toBe("EPERM");
    // A closed container gives its groups back too.
    hostDev.bindDriver("vfio-pci");
    t.g2.setContainer(t.ca);
    t.ca.close();
    expect(errno(() => hostDev.bindDriver("host"))).toBe("no error");
  });

  it("a process that exits keeps its pinned pages pinned until the container unmaps them, then every frame comes back", async () => {
    const h = await createHost({ ramSize: 64 * 1024 * 1024, arch });
    h.addDevice({ bdf: "0000:01:00.0" });
    const free0 = h.ram.framesFree;
    const vmm = h.createProcess();
    const ram = vmm.mmap(1n * MiB);
    vmm.write(ram, bytes("pinned"));
    const c = h.openContainer({ process: vmm });
    const g = h.openGroup(0);
    g.setContainer(c);
    c.setIommu("nesting");
    c.mapDma({ vaddr: ram, iova: 0n, size: 1n * MiB, read: true, write: true });
    vmm.exit();
    // The frames are still the container's: no one else can be handed them, and the device still reads them.
    const other = h.createProcess();
    const taken = other.mmap(BigInt(h.ram.framesFree) * 0x1000n - 64n * 0x1000n);
    expect(text(g.device("0000:01:00.0").dma.read(0n, 6).data)).toBe("pinned");
    expect(other.read(taken, 6)).toEqual(new Uint8Array(6));
    expect(errno(() => c.mapDma({ vaddr: ram, iova: 1n * MiB, size: 0x1000n, read: true }))).toBe("EFAULT");
    other.exit();
    c.unmapDma({ all: true });
    c.close();
    expect(h.ram.framesFree).toBe(free0);
  });

  it("a bind that fails after the device's PASID table was made takes the table back with it", async () => {
    // Nodes for one PASID's path in the allocator's trees, and one more: enough for a table, not for a binding deep in it.
    const h = await createHost({ ramSize: 64 * 1024 * 1024, arch, pasidNodes: 9 });
    h.addDevice({ bdf: "0000:01:00.0" });
    const vmm = h.createProcess();
    const c = h.openContainer({ process: vmm });
    const g = h.openGroup(0);
    g.setContainer(c);
    c.setIommu("nesting");
    c.mapDma({ vaddr: vmm.mmap(1n * MiB), iova: 0n, size: 1n * MiB, read: true, write: true });
    const held = [c.pasid.alloc({ min: 0x4000, max: 0xfffff })];
    expect(h.pasids.stats().nodesFree).toBe(1);
    const dev = g.device("0000:01:00.0");
    expect(errno(() => dev.bindPgtbl({ pasid: held[held.length - 1], format, root: 0x1000n }))).toBe("ENOMEM");
    expect(h.pasids.stats().nodesFree).toBe(1);
  });
});

describe("a refused attach leaves no driver behind", () => {
  it("SET_IOMMU that runs out of frames for the MSI doorbell's tables: no driver, no IOVA list; it works once frames are back", async () => {
    const h = await createHost({ ramSize: 16 * 1024 * 1024, arch: "smmuv3" });
    h.addDevice({ bdf: "0000:01:00.0" });
    const c = h.openContainer({ process: h.createProcess() });
    h.openGroup(0).setContainer(c);
    // Leave two frames: the domain's root, and one table of the three the doorbell's mapping needs.
    const taken: bigint[] = [];
    while (h.ram.framesFree > 2) taken.push(h.ram.allocFrames(1));
    expect(errno(() => c.setIommu("nesting"))).toBe("ENOMEM");
    expect(c.iommuType).toBeUndefined();
    expect(c.domain).toBeUndefined();
    expect(c.msiDoorbellIova).toBeUndefined();
    expect(errno(() => c.getInfo())).toBe("EINVAL");
    expect(h.ram.framesFree).toBe(2);
    for (const f of taken) h.ram.freeFrames(f, 1);
    c.setIommu("nesting");
    expect(c.msiDoorbellIova).toBe(0x8000000n);
  });
});

describe.each(ARCHES)("refused guest-table calls change nothing (%s)", (arch, format) => {
  /** A nesting container whose guest RAM is mapped at GPA 0 in 256 KiB chunks, so a chunk holding table pages can go. */
  async function chunked() {
    const h = await createHost({ ramSize: 64 * 1024 * 1024, arch });
    h.addDevice({ bdf: "0000:01:00.0" });
    const vmm = h.createProcess();
    const ram = vmm.mmap(4n * MiB);
    const c = h.openContainer({ process: vmm });
    const g = h.openGroup(0);
    g.setContainer(c);
    c.setIommu("nesting");
    const K = 0x40000n;
    for (let at = 0n; at < 4n * MiB; at += K) c.mapDma({ vaddr: ram + at, iova: at, size: K, read: true, write: true });
    return { h, c, vmm, ram, K, dev: g.device("0000:01:00.0") };
  }

  it("unmap where stage 2 no longer reaches a table is EFAULT and leaves every leaf, as map does", async () => {
    const { c, vmm, ram, K } = await chunked();
    const pages = [0x40000n, 0x41000n, 0x42000n, 0x1000n];
    const freed: bigint[] = [];
    const pt = c.gpa.pageTable({ format, allocTable: () => pages.shift()!, freeTable: (gpa) => { freed.push(gpa); } });
    pt.map(GVA, 0x300000n, 0x3000n, { write: true });
    const tables = vmm.read(ram, Number(4n * MiB));
    c.unmapDma({ iova: 0n, size: K }); // the chunk with the lowest table leaves stage 2
    expect(errno(() => pt.map(GVA + 0x3000n, 0x303000n, 0x1000n))).toBe("EFAULT");
    expect(errno(() => pt.unmap(GVA, 0x1000n))).toBe("EFAULT");
    expect(errno(() => pt.unmap(GVA, 0x200000n))).toBe("EFAULT");
    // Compared as one block: a deep equality over 4 MiB would take seconds.
    expect(Buffer.compare(vmm.read(ram, Number(4n * MiB)), tables)).toBe(0);
    expect(freed).toEqual([]);
    // Once stage 2 reaches the tables again, the leaves are all there and unmap takes them.
    c.mapDma({ vaddr: ram, iova: 0n, size: K, read: true, write: true });
    expect(pt.unmap(GVA, 0x200000n)).toBe(0x3000n);
  });

  it("a refused map writes none of the pages offered: a live root offered again stays intact", async () => {
    const { c, dev } = await chunked();
    let give: () => bigint = (() => { let next = 0x10000n; return () => { const p = next; next += 0x1000n; return p; }; })();
    const pt = c.gpa.pageTable({ format, allocTable: () => give() });
    pt.map(GVA, 0x300000n, 0x1000n);
    c.gpa.write(0x300000n, bytes("still here"));
    const pasid = c.pasid.alloc({ min: 1, max: 10 });
    dev.bindPgtbl({ pasid, format, root: pt.root });
    const root = c.gpa.read(pt.root, 0x1000);
    give = () => pt.root; // the guest's allocator hands out its own live root
    expect(errno(() => pt.map(0x7f0000000000n & ((1n << 48n) - 1n), 0x301000n, 0x1000n))).toBe("EINVAL");
    expect(c.gpa.read(pt.root, 0x1000)).toEqual(root);
    c.invalidate([{ addr: 0n, npages: (1n << 64n) - 1n }]);
    expect(text(dev.dma.read(GVA, 10, { pasid }).data)).toBe("still here");
  });
});
