// Nesting containers: the container's mappings are stage 2 (GPA → HPA); a
// guest's stage-1 tables, in guest RAM, are bound to one PASID of one device;
// that device's PASID-tagged DMA walks them over stage 2, and no other device
// can use them. The guest's invalidations reach the IOTLB; a stage-2 change
// leaves no stale combined entry.
import { describe, expect, it } from "vitest";
import { createHost, IommuError, VTD_S1_EAFE, VTD_S1_SRE, VTD_S1_WPE, type Container, type Process, type VfioDevice } from "../src/index.js";
import { errno } from "./support/outcome.js";

const MiB = 1n << 20n;
const P = 1n, RW = 2n, US = 4n, A = 1n << 5n, PS = 1n << 7n, EA = 1n << 10n;
const VALID = 1n, TABLE = 2n, AF = 1n << 10n, AP_EL0 = 1n << 6n, AP_RO = 1n << 7n, DBM = 1n << 51n;


interface Vm { c: Container; vmm: Process; gram: bigint; nic: VfioDevice; other: VfioDevice; pasid: number; put(gpa: bigint, v: bigint): void }

/** A VMM with 8 MiB of guest RAM at GPA 0, two devices in one nesting container, and a guest stage-1 table. */
async function vm(iommu: "nesting" | "type1v2" = "nesting", arch: "vtd" | "smmuv3" = "vtd"): Promise<Vm> {
  const h = await createHost({ ramSize: 64 * 1024 * 1024, arch });
  h.addDevice({ bdf: "0000:01:00.0" });
  h.addDevice({ bdf: "0000:02:00.0" });
  const vmm = h.createProcess();
  const gram = vmm.mmap(8n * MiB);
  const c = h.openContainer({ process: vmm });
  const g0 = h.openGroup(0), g1 = h.openGroup(1);
  g0.setContainer(c);
  g1.setContainer(c);
  c.setIommu(iommu);
  c.mapDma({ vaddr: gram, iova: 0n, size: 8n * MiB, read: true, write: true });
  // The guest writes its tables into its own RAM, at GPAs.
  const put = (gpa: bigint, v: bigint) => c.gpa.writeU64(gpa, v);
  // GVA 0x40000000 → GPA 0x200000 (4 KiB, rw); GVA 0x40200000 → GPA 0x400000 (2 MiB, read-only).
  put(0x1000n, 0x2000n | P | RW | US);
  put(0x2008n, 0x3000n | P | RW | US);
  put(0x3000n, 0x4000n | P | RW | US);
  put(0x4000n, 0x200000n | P | RW | US);
  put(0x3008n, 0x400000n | P | US | PS);
  const pasid = c.pasid.alloc({ min: 1, max: 100 });
  return { c, vmm, gram, nic: g0.device("0000:01:00.0"), other: g1.device("0000:02:00.0"), pasid, put };
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe("guest memory through the container (c.gpa)", () => {
  it("reads and writes GPAs through stage 2, the same bytes the VMM sees at its vaddrs", async () => {
    const { c, vmm, gram } = await vm();
    c.gpa.write(0x123ffcn, new TextEncoder().encode("across a page"));
    expect(new TextDecoder().decode(vmm.read(gram + 0x123ffcn, 13))).toBe("across a page");
    expect(c.gpa.readU64(0x4000n)).toBe(0x200000n | P | RW | US);
    expect(errno(() => c.gpa.read(8n * MiB, 4))).toBe("EFAULT");
    expect(errno(() => c.gpa.writeU64(8n * MiB - 4n, 1n))).toBe("EFAULT");
  });
});

describe("binding guest page tables to a device's PASID", () => {
  it("the bound device DMAs with guest virtual addresses; another device of the container cannot", async () => {
    const { vmm, gram, nic, other, pasid } = await vm();
    vmm.write(gram + 0x200010n, new TextEncoder().encode("guest buffer"));
    nic.bindPgtbl({ pasid, format: "x86-64", root: 0x1000n });
    expect(text(nic.dma.read(0x40000010n, 12, { pasid }).data)).toBe("guest buffer");
    // Without the PASID, the device's requests use stage 2 alone (GPAs).
    expect(text(nic.dma.read(0x200010n, 12).data)).toBe("guest buffer");
    // The binding is the NIC's only: the other device's PASID-tagged DMA finds no table.
    const r = other.dma.read(0x40000010n, 12, { pasid });
    expect(r.bytes).toBe(0);
    expect(r.fault?.reason).toBe("no-context");
    // A PASID the NIC has not bound is blocked too.
    expect(nic.dma.read(0x40000010n, 4, { pasid: pasid + 1 }).fault?.reason).toBe("no-context");
    // Writes land in guest memory; the read-only 2 MiB page refuses them in stage 1.
    nic.dma.write(0x40000020n, new TextEncoder().encode("from the NIC"), { pasid });
    expect(text(vmm.read(gram + 0x200020n, 12))).toBe("from the NIC");
    const w = nic.dma.write(0x40200000n, new Uint8Array(4), { pasid });
    expect(w.fault).toMatchObject({ reason: "permission", stage: 1, pasid });
  });

  it("a guest that edits its table sees the old translation until it invalidates", async () => {
    const { c, vmm, gram, nic, pasid, put } = await vm();
    vmm.write(gram + 0x200000n, new TextEncoder().encode("old"));
    vmm.write(gram + 0x300000n, new TextEncoder().encode("new"));
    nic.bindPgtbl({ pasid, format: "x86-64", root: 0x1000n });
    expect(text(nic.dma.read(0x40000000n, 3, { pasid }).data)).toBe("old");
    put(0x4000n, 0x300000n | P | RW | US);
    expect(text(nic.dma.read(0x40000000n, 3, { pasid }).data)).toBe("old");
    expect(c.invalidate([{ pasid, addr: 0x40000000n, npages: 1 }])).toBe(1);
    expect(text(nic.dma.read(0x40000000n, 3, { pasid }).data)).toBe("new");
    // addr 0, npages 2^64 - 1: everything.
    put(0x4000n, 0x200000n | P | RW | US);
    c.invalidate([{ addr: 0n, npages: (1n << 64n) - 1n }]);
    expect(text(nic.dma.read(0x40000000n, 3, { pasid }).data)).toBe("old");
  });

  it("a stage-2 unmap leaves no stale combined entry: the next DMA faults in stage 2", async () => {
    const { c, nic, pasid } = await vm();
    nic.bindPgtbl({ pasid, format: "x86-64", root: 0x1000n });
    expect(nic.dma.read(0x40000000n, 8, { pasid }).bytes).toBe(8);
    c.unmapDma({ all: true });
    const r = nic.dma.read(0x40000000n, 8, { pasid });
    expect(r.bytes).toBe(0);
    expect(r.fault).toMatchObject({ reason: "not-present", stage: 2 });
  });

  it("unbind stops the device's PASID DMA; the PASID can be bound again", async () => {
    const { nic, pasid } = await vm();
    nic.bindPgtbl({ pasid, format: "x86-64", root: 0x1000n });
    nic.unbindPgtbl(pasid);
    expect(nic.dma.read(0x40000000n, 8, { pasid }).fault?.reason).toBe("no-context");
    nic.bindPgtbl({ pasid, format: "x86-64", root: 0x1000n });
    expect(nic.dma.read(0x40000000n, 8, { pasid }).bytes).toBe(8);
  });

  it("freeing a bound PASID unbinds it first: no device keeps walking a table for a PASID handed out again", async () => {
    const { c, nic, other, pasid } = await vm();
    const kept = c.pasid.alloc({ min: 1, max: 100 });
    nic.bindPgtbl({ pasid, format: "x86-64", root: 0x1000n });
    other.bindPgtbl({ pasid, format: "x86-64", root: 0x1000n });
    nic.bindPgtbl({ pasid: kept, format: "x86-64", root: 0x1000n });
    expect(c.pasid.free({ min: pasid, max: pasid })).toBe(1);
    expect(nic.dma.read(0x40000000n, 8, { pasid }).fault?.reason).toBe("no-context");
    expect(other.dma.read(0x40000000n, 8, { pasid }).fault?.reason).toBe("no-context");
    expect(errno(() => nic.unbindPgtbl(pasid))).toBe("EINVAL");
    // Outside the freed range the binding stays.
    expect(nic.dma.read(0x40000000n, 8, { pasid: kept }).bytes).toBe(8);
    // Allocated again, the PASID binds afresh (no EBUSY from the old binding).
    expect(c.pasid.alloc({ min: pasid, max: pasid })).toBe(pasid);
    nic.bindPgtbl({ pasid, format: "x86-64", root: 0x1000n });
    expect(nic.dma.read(0x40000000n, 8, { pasid }).bytes).toBe(8);
  });

  it("refuses what the kernel refuses", async () => {
    const { c, nic, pasid } = await vm();
    expect(errno(() => nic.bindPgtbl({ pasid: pasid + 1, format: "x86-64", root: 0x1000n }))).toBe("EINVAL");
    nic.bindPgtbl({ pasid, format: "x86-64", root: 0x1000n });
    expect(errno(() => nic.bindPgtbl({ pasid, format: "x86-64", root: 0x1000n }))).toBe("EBUSY");
    expect(errno(() => nic.unbindPgtbl(pasid + 1))).toBe("EINVAL");
    const second = c.pasid.alloc({ min: 1, max: 100 });
    expect(errno(() => nic.bindPgtbl({ pasid: second, format: "vtd-sl" as "x86-64", root: 0x1000n }))).toBe("EINVAL");
    expect(errno(() => nic.bindPgtbl({ pasid: second, format: "x86-64", root: 0x1000n, addressWidth: 39 }))).toBe("EINVAL");
    const plain = await vm("type1v2");
    expect(errno(() => plain.nic.bindPgtbl({ pasid: plain.pasid, format: "x86-64", root: 0x1000n }))).toBe("EINVAL");
    // Invalidation: entries up to a bad one are processed; the bad one's errno says why.
    const bad = (entries: Parameters<Container["invalidate"]>[0]) => {
      try { c.invalidate(entries); } catch (e) { if (e instanceof IommuError) return [e.code, e.processed]; throw e; }
      return undefined;
    };
    expect(bad([{ pasid, addr: 0x40000000n, npages: 1 }, { pasid, addr: 0x40000001n, npages: 1 }])).toEqual(["EINVAL", 1]);
    expect(bad([{ pasid, addr: 0n, npages: 1, flags: 2 }])).toEqual(["EOPNOTSUPP", 0]);
    expect(bad([{ pasid, addr: 0x1000n, npages: 1 }, { pasid, addr: 0x2000n, npages: 1 }, { addr: 0n, npages: 0 }])).toEqual(["EINVAL", 2]);
  });

  it("a PASID with no table is a no-context fault with no stage 2 in it, even right after a stage-2 fault", async () => {
    const { nic, pasid } = await vm();
    nic.bindPgtbl({ pasid, format: "x86-64", root: 16n * MiB });
    expect(nic.dma.read(0x40000000n, 4, { pasid }).fault).toMatchObject({ reason: "not-present", stage: 2 });
    expect(nic.dma.read(0x40000000n, 4, { pasid: pasid + 1 }).fault).toMatchObject({ reason: "no-context", stage: 1 });
  });

  it("faults of PASID-tagged DMA name the device, the PASID and the stage", async () => {
    const h = await createHost({ ramSize: 32 * 1024 * 1024 });
    h.addDevice({ bdf: "0000:03:00.0" });
    const vmm = h.createProcess();
    const gram = vmm.mmap(2n * MiB);
    const c = h.openContainer({ process: vmm });
    const g = h.openGroup(0);
    g.setContainer(c);
    c.setIommu("nesting");
    c.mapDma({ vaddr: gram, iova: 0n, size: 2n * MiB, read: true, write: true });
    const pasid = c.pasid.alloc({ min: 5, max: 5 });
    const d = g.device("0000:03:00.0");
    // The root is beyond guest RAM: the first table read fails in stage 2.
    d.bindPgtbl({ pasid, format: "x86-64", root: 4n * MiB });
    h.faults.drain();
    expect(d.dma.read(0x1000n, 4, { pasid }).fault).toMatchObject({ reason: "not-present", stage: 2, pasid });
    const [f] = h.faults.drain();
    expect(f).toMatchObject({ source: 0x300, pasid, stage: 2, reason: "not-present" });
  });
});

describe("the page-table builder writing into guest memory (c.gpa.pageTable)", () => {
  /** A guest page allocator: table pages from GPA 0x100000 up; freed pages recorded. */
  function guestAllocator() {
    let next = 0x100000n;
    const freed: bigint[] = [];
    return { allocTable: () => { const p = next; next += 0x1000n; return p; }, freeTable: (gpa: bigint) => { freed.push(gpa); }, used: () => (next - 0x100000n) / 0x1000n, freed };
  }

  it("builds a stage-1 table the device then walks with its PASID", async () => {
    const { c, vmm, gram, nic, pasid } = await vm();
    const alloc = guestAllocator();
    const pt = c.gpa.pageTable({ format: "x86-64", allocTable: alloc.allocTable, freeTable: alloc.freeTable });
    expect(pt.root).toBe(0x100000n);
    const gva = 0x7f0000000000n;
    pt.map(gva, 0x600000n, 0x3000n, { write: true });
    // Root, PDPT, PD and PT: one root and three new tables from the guest's allocator.
    expect(alloc.used()).toBe(4n);
    // A 2 MiB-aligned range under the same PD needs no new table: a 2 MiB leaf.
    pt.map(gva + 0x200000n, 0x400000n, 0x200000n);
    expect(alloc.used()).toBe(4n);
    expect(() => pt.map(gva + 0x1000n, 0x700000n, 0x1000n)).toThrow(expect.objectContaining({ code: "EEXIST" }));
    expect(alloc.used()).toBe(4n);
    vmm.write(gram + 0x601ff0n, new TextEncoder().encode("built by the guest"));
    vmm.write(gram + 0x5abcdcn, new TextEncoder().encode("big page"));
    nic.bindPgtbl({ pasid, format: "x86-64", root: pt.root });
    expect(text(nic.dma.read(gva + 0x1ff0n, 18, { pasid }).data)).toBe("built by the guest");
    expect(text(nic.dma.read(gva + 0x3abcdcn, 8, { pasid }).data)).toBe("big page");
    expect(nic.dma.write(gva + 0x200000n, new Uint8Array(4), { pasid }).fault).toMatchObject({ reason: "permission", stage: 1 });
    // Unmap: bytes, and the emptied tables go back to the guest (not the root).
    expect(pt.unmap(gva, 0x3000n)).toBe(0x3000n);
    expect(alloc.freed).toEqual([]);
    expect(pt.unmap(0x7f0000000000n, 1n << 39n)).toBe(0x200000n);
    expect([...alloc.freed].sort()).toEqual([0x101000n, 0x102000n, 0x103000n]);
    c.invalidate([{ pasid, addr: 0n, npages: (1n << 64n) - 1n }]);
    expect(nic.dma.read(gva + 0x1ff0n, 4, { pasid }).fault).toMatchObject({ reason: "not-present", stage: 1 });
  });

  it("builds Arm stage-1 tables too, and refuses a table stage 2 does not reach", async () => {
    const { c, vmm, gram, nic, pasid } = await vm();
    const alloc = guestAllocator();
    const pt = c.gpa.pageTable({ format: "arm64", addressWidth: 48, allocTable: alloc.allocTable, freeTable: alloc.freeTable });
    pt.map(0x40000000n, 0x200000n, 0x1000n, { write: true });
    vmm.write(gram + 0x200010n, new TextEncoder().encode("arm guest"));
    nic.bindPgtbl({ pasid, format: "arm64", root: pt.root });
    expect(text(nic.dma.read(0x40000010n, 9, { pasid }).data)).toBe("arm guest");
    // A root beyond guest RAM (8 MiB): every build fails with EFAULT, nothing allocated.
    const lost = c.gpa.pageTable({ format: "x86-64", root: 16n * MiB, allocTable: () => 0x200000n });
    expect(() => lost.map(0x1000n, 0x1000n, 0x1000n)).toThrow(expect.objectContaining({ code: "EFAULT" }));
    expect(() => c.gpa.pageTable({ format: "x86-64", root: 0x1000n } as never)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    // Operands are checked before anything is built: alignment, the input address space, a destroyed table.
    expect(errno(() => pt.map(0x40000800n, 0x200000n, 0x1000n))).toBe("EINVAL");
    expect(errno(() => pt.map(0x40001000n, 0x200000n, 0x1000n, { read: false }))).toBe("EINVAL");
    expect(errno(() => pt.unmap(0n, 1n << 49n))).toBe("EINVAL");
    expect(errno(() => pt.map(0xfffffffffffff000n, 0n, 0x2000n))).toBe("EOVERFLOW");
    pt.destroy();
    expect(errno(() => pt.map(0x40001000n, 0x201000n, 0x1000n))).toBe("ENODEV");
    expect(errno(() => pt.unmap(0n, 0x1000n))).toBe("ENODEV");
  });
});

describe("bind flags: VT-d's SRE, WPE and EAFE; Arm's TCR-like fields", () => {
  it("VT-d: omitted flags are all off, as the kernel's zeroed flags: supervisor requests are refused", async () => {
    const { nic, pasid } = await vm();
    nic.bindPgtbl({ pasid, format: "x86-64", root: 0x1000n });
    expect(nic.dma.read(0x40000000n, 4, { pasid }).bytes).toBe(4);
    expect(nic.dma.read(0x40000000n, 4, { pasid, privileged: true }).fault).toMatchObject({ reason: "permission", stage: 1 });
    nic.unbindPgtbl(pasid);
    nic.bindPgtbl({ pasid, format: "x86-64", root: 0x1000n, flags: { sre: true } });
    expect(nic.dma.read(0x40000000n, 4, { pasid, privileged: true }).bytes).toBe(4);
  });

  it("VT-d: WPE makes supervisor writes obey R/W; the uapi bits (SRE 1, EAFE 2, WPE 4) work as the object does", async () => {
    const { nic, other, pasid, c } = await vm();
    const o = c.pasid.alloc({ min: 1, max: 100 });
    nic.bindPgtbl({ pasid, format: "x86-64", root: 0x1000n, flags: { sre: true } });
    other.bindPgtbl({ pasid: o, format: "x86-64", root: 0x1000n, flags: VTD_S1_SRE | VTD_S1_WPE });
    // The 2 MiB page at GVA 0x40200000 is read-only.
    expect(nic.dma.write(0x40200000n, new Uint8Array(4), { pasid, privileged: true }).bytes).toBe(4);
    expect(other.dma.write(0x40200000n, new Uint8Array(4), { pasid: o, privileged: true }).fault).toMatchObject({ reason: "permission", stage: 1 });
  });

  it("VT-d: EAFE sets EA along with A in the guest's entries; without it EA stays clear", async () => {
    const { c, nic, other, pasid } = await vm();
    nic.bindPgtbl({ pasid, format: "x86-64", root: 0x1000n });
    nic.dma.read(0x40000000n, 4, { pasid });
    expect(c.gpa.readU64(0x4000n) & (A | EA)).toBe(A);
    // The guest clears A on its leaf (as an OS scanning for use does) and invalidates.
    c.gpa.writeU64(0x4000n, 0x200000n | P | RW | US);
    c.invalidate([{ pasid, addr: 0x40000000n, npages: 1 }]);
    const o = c.pasid.alloc({ min: 1, max: 100 });
    other.bindPgtbl({ pasid: o, format: "x86-64", root: 0x1000n, flags: VTD_S1_EAFE });
    other.dma.read(0x40000000n, 4, { pasid: o });
    for (const gpa of [0x1000n, 0x2008n, 0x3000n, 0x4000n]) expect(c.gpa.readU64(gpa) & (A | EA)).toBe(A | EA);
  });

  it("VT-d: undefined bits and unknown or mistyped switches are EINVAL, and leave the PASID free to bind", async () => {
    const { nic, pasid } = await vm();
    const refused = [8, -1, 1.5, { sre: true, ha: true }, { sre: "yes" }, { t0sz: 16 }];
    for (const flags of refused) expect(errno(() => nic.bindPgtbl({ pasid, format: "x86-64", root: 0x1000n, flags: flags as never })), JSON.stringify(flags)).toBe("EINVAL");
    nic.bindPgtbl({ pasid, format: "x86-64", root: 0x1000n, flags: 7 });
    expect(nic.dma.read(0x40000000n, 4, { pasid, privileged: true }).bytes).toBe(4);
  });

  /** An Arm stage 1 in guest RAM: L0 0x1000 → L1 0x2000 → L2 0x3000 → L3 0x4000, VA 0x40000000 → IPA 0x200000. */
  function armTables(put: (gpa: bigint, v: bigint) => void, leaf: bigint): void {
    put(0x1000n, 0x2000n | VALID | TABLE);
    put(0x2008n, 0x3000n | VALID | TABLE);
    put(0x3000n, 0x4000n | VALID | TABLE);
    put(0x4000n, leaf | VALID | TABLE);
  }

  it("Arm: HA sets AF instead of an access-flag fault; HD turns a writable-clean leaf writable-dirty", async () => {
    const { c, vmm, gram, nic, other, pasid, put } = await vm("nesting", "smmuv3");
    armTables(put, 0x200000n | AP_EL0 | AP_RO | DBM);
    nic.bindPgtbl({ pasid, format: "arm64", root: 0x1000n });
    expect(nic.dma.read(0x40000000n, 4, { pasid }).fault).toMatchObject({ reason: "access-flag", stage: 1 });
    nic.unbindPgtbl(pasid);
    nic.bindPgtbl({ pasid, format: "arm64", root: 0x1000n, flags: { ha: true } });
    expect(nic.dma.read(0x40000000n, 4, { pasid }).bytes).toBe(4);
    expect(c.gpa.readU64(0x4000n) & AF).toBe(AF);
    // HA alone: AP[2] is read-only, DBM or not.
    expect(nic.dma.write(0x40000000n, new Uint8Array(1), { pasid }).fault).toMatchObject({ reason: "permission", stage: 1 });
    const o = c.pasid.alloc({ min: 1, max: 100 });
    other.bindPgtbl({ pasid: o, format: "arm64", root: 0x1000n, flags: { ha: true, hd: true } });
    expect(other.dma.write(0x40000000n, new TextEncoder().encode("dirty"), { pasid: o }).bytes).toBe(5);
    expect(text(vmm.read(gram + 0x200000n, 5))).toBe("dirty");
    expect(c.gpa.readU64(0x4000n) & (AP_RO | DBM | AF)).toBe(DBM | AF);
  });

  it("Arm: T0SZ sets the input size (and must agree with addressWidth); IPS the output size", async () => {
    const { c, nic, other, pasid, put } = await vm("nesting", "smmuv3");
    armTables(put, 0x200000n | AF | AP_EL0);
    // 39 bits (T0SZ 25): the walk starts at L1, so the root is the L1 table.
    nic.bindPgtbl({ pasid, format: "arm64", root: 0x2000n, flags: { t0sz: 25 } });
    expect(nic.dma.read(0x40000000n, 4, { pasid }).bytes).toBe(4);
    expect(nic.dma.read(1n << 39n, 4, { pasid }).fault).toMatchObject({ reason: "input-range", stage: 1 });
    // IPS 0 (32 bits): an output IPA at 4 GiB is an address-size fault, not a stage-2 miss.
    put(0x4008n, (1n << 32n) | VALID | TABLE | AF | AP_EL0);
    c.invalidate([{ addr: 0n, npages: (1n << 64n) - 1n }]);
    const o = c.pasid.alloc({ min: 1, max: 100 });
    other.bindPgtbl({ pasid: o, format: "arm64", root: 0x1000n, addressWidth: 48, flags: { ips: 0, t0sz: 16 } });
    expect(other.dma.read(0x40001000n, 4, { pasid: o }).fault).toMatchObject({ reason: "address-size", stage: 1 });
    expect(nic.dma.read(0x40001000n, 4, { pasid }).fault).toMatchObject({ reason: "not-present", stage: 2 });
  });

  it("Arm: granules and sizes not modelled are EOPNOTSUPP, bad encodings and VT-d switches EINVAL; nothing is left bound", async () => {
    const { nic, pasid, put } = await vm("nesting", "smmuv3");
    armTables(put, 0x200000n | AF | AP_EL0);
    const bind = (flags: unknown, addressWidth?: number) => errno(() => nic.bindPgtbl({ pasid, format: "arm64", root: 0x1000n, addressWidth, flags: flags as never }));
    expect(bind({ tg0: 1 })).toBe("EOPNOTSUPP");
    expect(bind({ tg0: 2 })).toBe("EOPNOTSUPP");
    expect(bind({ ips: 6 })).toBe("EOPNOTSUPP");
    for (const flags of [{ tg0: 3 }, { ips: 7 }, { ips: -1 }, { t0sz: 15 }, { t0sz: 40 }, { hd: true }, { sre: true }, 1, { ha: 1 }]) {
      expect(bind(flags), JSON.stringify(flags)).toBe("EINVAL");
    }
    expect(bind({ t0sz: 16 }, 39)).toBe("EINVAL");
    expect(nic.dma.read(0x40000000n, 4, { pasid }).fault?.reason).toBe("no-context");
    expect(bind({ t0sz: 16, tg0: 0, ips: 5, ha: true, hd: true }, 48)).toBe("no error");
    expect(nic.dma.read(0x40000000n, 4, { pasid }).bytes).toBe(4);
  });
});
