// Xen driver domains: VMs over p2ms, a driver domain's device DMA through its
// own IOMMU table, serve/unserve, delegated mapping and its refusals (each
// checked to change nothing), revocation on unserve and destroy.
import { describe, expect, it } from "vitest";
import { createHost, type Host, type Vm } from "../src/index.js";
import { errno } from "./support/outcome.js";

const NIC = "0000:03:00.0";

async function setup(arch: "vtd" | "smmuv3" = "vtd") {
  const host = await createHost({ arch, ramSize: 16 << 20 });
  host.addDevice({ bdf: NIC, driver: null });
  const hv = host.hypervisor();
  const backend = hv.createVm({ name: "netback", memory: 64 * 4096, devices: [NIC] });
  const guest = hv.createVm({ name: "guest", memory: 32 * 4096 });
  const other = hv.createVm({ name: "other", memory: 16 * 4096 });
  return { host, hv, backend, guest, other, dma: backend.device(NIC).dma };
}


const tag = (vm: Vm, gfn: number) => new TextEncoder().encode(`vm${vm.id}:gfn${gfn};`);

function snapshot(host: Host, backend: Vm) {
  return { mappings: backend.iommu.mappings(), free: host.ram.framesFree };
}

describe("xen: VMs and p2m", () => {
  it("a VM reads and writes its own memory; frames need not be contiguous; destroy frees them", async () => {
    const host = await createHost({ ramSize: 16 << 20 });
    const hv = host.hypervisor();
    expect(host.hypervisor()).toBe(hv);
    const before = host.ram.framesFree;
    const vm = hv.createVm({ name: "a", memory: 8 * 4096 });
    expect(vm.gfnCount).toBe(8);
    expect(vm.id).toBe(1);
    vm.write(4090, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
    expect([...vm.read(4090, 10)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(errno(() => vm.read(8 * 4096 - 1, 2))).toBe("EINVAL");
    expect(errno(() => hv.gfnToMfn(vm, 0))).toBe("EPERM");
    expect(host.ram.framesFree).toBeLessThan(before - 8);
    vm.destroy();
    expect(host.ram.framesFree).toBe(before);
    expect(errno(() => vm.read(0, 1))).toBe("ENODEV");
  });

  it("createVm refuses bad specs and busy devices, making nothing", async () => {
    const host = await createHost({ ramSize: 4 << 20 });
    host.addDevice({ bdf: NIC, driver: "host" });
    host.addDevice({ bdf: "0000:04:00.0", driver: null, group: 7 });
    host.addDevice({ bdf: "0000:04:00.1", driver: null, group: 7 });
    host.addDevice({ bdf: "0000:05:00.0", iommu: false, driver: null });
    const hv = host.hypervisor();
    const free = host.ram.framesFree;
    expect(errno(() => hv.createVm({ memory: 0 }))).toBe("EINVAL");
    expect(errno(() => hv.createVm({ memory: 100 }))).toBe("EINVAL");
    expect(errno(() => hv.createVm({ memory: 8 << 20 }))).toBe("ENOMEM");
    expect(errno(() => hv.createVm({ memory: 4096, devices: ["0000:09:00.0"] }))).toBe("ENODEV");
    expect(errno(() => hv.createVm({ memory: 4096, devices: [NIC] }))).toBe("EBUSY");
    expect(errno(() => hv.createVm({ memory: 4096, devices: ["0000:04:00.0"] }))).toBe("EINVAL");
    expect(errno(() => hv.createVm({ memory: 4096, devices: ["0000:05:00.0"] }))).toBe("EINVAL");
    expect(errno(() => hv.createVm({ memory: (4 << 20) - 4096 }))).toBe("ENOMEM");
    expect(host.ram.framesFree).toBe(free);
    expect(hv.vms()).toEqual([]);
    const dd = hv.createVm({ memory: 4096, devices: ["0000:04:00.1", "0000:04:00.0"] });
    expect(dd.devices().map((d) => d.bdf)).toEqual(["0000:04:00.0", "0000:04:00.1"]);
    // The group is the VM's now: no host driver, DMA API or VFIO may take it.
    expect(errno(() => host.device("0000:04:00.0").bindDriver("host"))).toBe("EBUSY");
    expect(errno(() => host.dmaApi("0000:04:00.0"))).toBe("EBUSY");
    const c = host.openContainer();
    expect(errno(() => host.openGroup(7).setContainer(c))).toBe("EBUSY");
    expect(errno(() => hv.createVm({ memory: 4096, devices: ["0000:04:00.1", "0000:04:00.0"] }))).toBe("EBUSY");
    dd.destroy();
    host.device("0000:04:00.0").bindDriver("host");
  });
});

describe("xen: driver-domain DMA and delegated mapping", () => {
  it("the device reaches its own memory at BFN = GFN and nothing else", async () => {
    const { backend, dma } = await setup();
    backend.write(5 * 4096, tag(backend, 5));
    expect(dma.read(5 * 4096, 9).data).toEqual(tag(backend, 5));
    expect(dma.read(64 * 4096, 4).fault).toBeDefined();
    expect(dma.write(3 * 4096, new Uint8Array([9])).fault).toBeUndefined();
    expect(backend.read(3 * 4096, 1)[0]).toBe(9);
  });

  it("map needs serve; the device reaches the mapped page; query names (vm, gfn), never an MFN", async () => {
    const { hv, backend, guest, dma } = await setup();
    guest.write(7 * 4096, tag(guest, 7));
    expect(errno(() => backend.iommu.map({ bfn: 0x1000, vm: guest, gfn: 7 }))).toBe("EPERM");
    hv.serve(backend, guest);
    expect(hv.served(backend)).toEqual([guest]);
    expect(errno(() => hv.serve(backend, guest))).toBe("EEXIST");
    expect(backend.iommu.map({ bfn: 0x1000, vm: guest, gfn: 7 })).toBe(0x1000n);
    expect(backend.iommu.query(0x1000)).toEqual({ bfn: 0x1000n, vm: guest.id, gfn: 7n, write: false });
    expect(dma.read(0x1000n * 4096n, 9).data).toEqual(tag(guest, 7));
    // Read-only: the device's write faults and changes nothing.
    expect(dma.write(0x1000n * 4096n, new Uint8Array([0xff])).fault).toBeDefined();
    expect(guest.read(7 * 4096, 1)[0]).toBe(tag(guest, 7)[0]);
    backend.iommu.map({ bfn: 0x2000, vm: guest.id, gfn: 0, count: 3, write: true });
    expect(dma.write(0x2002n * 4096n + 5n, new Uint8Array([0xab])).fault).toBeUndefined();
    expect(guest.read(2 * 4096 + 5, 1)[0]).toBe(0xab);
    expect(backend.iommu.mappings().map((m) => m.bfn)).toEqual([0x1000n, 0x2000n, 0x2001n, 0x2002n]);
    expect(backend.iommu.unmap({ bfn: 0x2000, count: 4 })).toBe(3);
    expect(dma.read(0x2000n * 4096n, 1).fault).toBeDefined();
    expect(backend.iommu.unmap({ bfn: 0x2000 })).toBe(0);
  });

  it("every refusal changes nothing", async () => {
    const { host, hv, backend, guest, other } = await setup();
    hv.serve(backend, guest);
    backend.iommu.map({ bfn: 0x100, vm: guest, gfn: 1 });
    const before = snapshot(host, backend);
    const cases: [string, () => unknown][] = [
      ["EPERM", () => backend.iommu.map({ bfn: 0x200, vm: other, gfn: 0 })],
      ["EPERM", () => backend.iommu.map({ bfn: 0x200, vm: backend, gfn: 0 })],
      ["EINVAL", () => backend.iommu.map({ bfn: 0x200, vm: guest, gfn: 32 })],
      ["EINVAL", () => backend.iommu.map({ bfn: 0x200, vm: guest, gfn: 30, count: 3 })],
      ["EINVAL", () => backend.iommu.map({ bfn: 1n << 36n, vm: guest, gfn: 0 })],
      ["EINVAL", () => backend.iommu.map({ bfn: (1n << 36n) - 1n, vm: guest, gfn: 0, count: 2 })],
      ["EEXIST", () => backend.iommu.map({ bfn: 0x100, vm: guest, gfn: 2 })],
      ["EEXIST", () => backend.iommu.map({ bfn: 0xfe, vm: guest, gfn: 2, count: 3 })],
      ["EEXIST", () => backend.iommu.map({ bfn: 3, vm: guest, gfn: 2 })],
      ["EINVAL", () => backend.iommu.map({ bfn: -1, vm: guest, gfn: 2 })],
      ["EINVAL", () => backend.iommu.map({ bfn: 0x200, vm: guest, gfn: 2, extra: 1 } as never)],
      ["EINVAL", () => backend.iommu.map({ bfn: 0x200, vm: "guest", gfn: 2 } as never)],
      ["EPERM", () => backend.iommu.map({ bfn: 0x200, vm: 99, gfn: 2 })],
      ["EINVAL", () => backend.iommu.unmap({ bfn: 3 })],
      ["EPERM", () => hv.gfnToMfn(guest, 0)],
      ["ENODEV", () => hv.serve(guest, other)],
      ["EINVAL", () => hv.serve(backend, backend)],
      ["ENOENT", () => hv.unserve(backend, other)],
      ["ENODEV", () => guest.iommu],
    ];
    for (const [code, f] of cases) {
      expect(errno(f), f.toString()).toBe(code);
      expect(snapshot(host, backend)).toEqual(before);
    }
  });

  it("ENOMEM when table pages run out, with nothing changed", async () => {
    const host = await createHost({ arch: "vtd", ramSize: 1 << 20 });
    host.addDevice({ bdf: NIC, driver: null });
    const hv = host.hypervisor();
    const backend = hv.createVm({ memory: 4 * 4096, devices: [NIC] });
    const guest = hv.createVm({ memory: 4 * 4096 });
    hv.serve(backend, guest);
    // Take every frame left, then ask for a BFN far away (new tables needed).
    const hog: bigint[] = [];
    while (host.ram.framesFree > 0) hog.push(host.ram.allocFrames(1));
    const before = snapshot(host, backend);
    expect(errno(() => backend.iommu.map({ bfn: 1n << 30n, vm: guest, gfn: 0, count: 2 }))).toBe("ENOMEM");
    expect(snapshot(host, backend)).toEqual(before);
    for (const f of hog) host.ram.freeFrames(f);
    backend.iommu.map({ bfn: 1n << 30n, vm: guest, gfn: 0, count: 2 });
  });

  it("unserve and destroy revoke every mapping before they return, and the frames come back", async () => {
    const { host, hv, backend, guest, other, dma } = await setup();
    hv.serve(backend, guest);
    hv.serve(backend, other);
    backend.iommu.map({ bfn: 0x100, vm: guest, gfn: 0, count: 4, write: true });
    backend.iommu.map({ bfn: 0x200, vm: other, gfn: 0, count: 2 });
    // Warm the IOTLB so a missing invalidation would show.
    expect(dma.read(0x100n * 4096n, 4).fault).toBeUndefined();
    expect(dma.read(0x200n * 4096n, 4).fault).toBeUndefined();
    expect(hv.unserve(backend, guest)).toBe(4);
    expect(dma.read(0x100n * 4096n, 4).fault).toBeDefined();
    expect(errno(() => backend.iommu.map({ bfn: 0x100, vm: guest, gfn: 0 }))).toBe("EPERM");
    expect(backend.iommu.mappings().map((m) => m.vm)).toEqual([other.id, other.id]);
    const free = host.ram.framesFree;
    other.destroy();
    expect(dma.read(0x200n * 4096n, 4).fault).toBeDefined();
    expect(backend.iommu.mappings()).toEqual([]);
    expect(hv.served(backend)).toEqual([]);
    // Its 16 frames, and the p2m's tables.
    expect(host.ram.framesFree).toBeGreaterThan(free + 16);
    backend.destroy();
    expect(dma.read(0, 4).fault).toBeDefined();
    expect(errno(() => backend.iommu)).toBe("ENODEV");
    host.device(NIC).bindDriver("host");
  });
});

describe("xen: grants", () => {
  it("a grant maps without serve; read-only grants refuse writes; revoke is EBUSY while mapped", async () => {
    const { host, backend, guest, other, dma } = await setup();
    guest.write(3 * 4096, tag(guest, 3));
    const ro = guest.grant(backend, 3, { readOnly: true });
    const toOther = guest.grant(other, 4);
    const before = snapshot(host, backend);
    expect(errno(() => backend.iommu.mapGrant({ bfn: 0x300, vm: guest, gref: ro, write: true }))).toBe("EPERM");
    expect(errno(() => backend.iommu.mapGrant({ bfn: 0x300, vm: guest, gref: toOther }))).toBe("EPERM");
    expect(errno(() => backend.iommu.mapGrant({ bfn: 0x300, vm: guest, gref: 999 }))).toBe("ENOENT");
    expect(errno(() => backend.iommu.mapGrant({ bfn: 2, vm: guest, gref: ro }))).toBe("EEXIST");
    expect(snapshot(host, backend)).toEqual(before);
    expect(backend.iommu.mapGrant({ bfn: 0x300, vm: guest, gref: ro })).toBe(0x300n);
    expect(backend.iommu.query(0x300)).toEqual({ bfn: 0x300n, vm: guest.id, gfn: 3n, write: false, gref: ro });
    expect(dma.read(0x300n * 4096n, 9).data).toEqual(tag(guest, 3));
    expect(errno(() => guest.revokeGrant(ro))).toBe("EBUSY");
    expect(backend.iommu.unmap({ bfn: 0x300 })).toBe(1);
    guest.revokeGrant(ro);
    expect(errno(() => guest.revokeGrant(ro))).toBe("ENOENT");
    expect(guest.grantRefs()).toEqual([toOther]);
    expect(errno(() => guest.grant(backend, 32))).toBe("EINVAL");
  });
});

describe("xen: restricted mappers", () => {
  it("maps only its VMs, within its budget, and loses the right when a VM is unserved", async () => {
    const { host, hv, backend, guest, other, dma } = await setup();
    hv.serve(backend, guest);
    expect(errno(() => backend.iommu.restrict({ vms: [other.id] }))).toBe("EPERM");
    const mapper = backend.iommu.restrict({ vms: [guest.id], maxPages: 2 });
    hv.serve(backend, other);
    const before = snapshot(host, backend);
    expect(errno(() => mapper.map({ bfn: 0x400, vm: other, gfn: 0 }))).toBe("EPERM");
    expect(errno(() => mapper.map({ bfn: 0x400, vm: guest, gfn: 0, count: 3 }))).toBe("ENOSPC");
    expect(snapshot(host, backend)).toEqual(before);
    mapper.map({ bfn: 0x400, vm: guest, gfn: 0, count: 2 });
    expect(mapper.pages).toBe(2);
    expect(errno(() => mapper.map({ bfn: 0x402, vm: guest, gfn: 2 }))).toBe("ENOSPC");
    backend.iommu.map({ bfn: 0x500, vm: other, gfn: 0 });
    expect(errno(() => mapper.unmap({ bfn: 0x500 }))).toBe("EPERM");
    expect(mapper.mappings().map((m) => m.bfn)).toEqual([0x400n, 0x401n]);
    expect(mapper.unmap({ bfn: 0x401 })).toBe(1);
    hv.unserve(backend, guest);
    expect(dma.read(0x400n * 4096n, 4).fault).toBeDefined();
    expect(mapper.pages).toBe(0);
    hv.serve(backend, guest);
    expect(mapper.map({ bfn: 0x400, vm: guest, gfn: 1 })).toBe(0x400n);
    hv.unserve(backend, guest);
    expect(errno(() => mapper.map({ bfn: 0x400, vm: guest, gfn: 1 }))).toBe("EPERM");
  });
});

describe("xen: the exposeMfn baseline, and what the default forbids", () => {
  async function baseline(exposeMfn: boolean) {
    const host = await createHost({ arch: "vtd", ramSize: 16 << 20 });
    host.addDevice({ bdf: NIC, driver: null });
    const hv = host.hypervisor({ exposeMfn });
    const backend = hv.createVm({ memory: 16 * 4096, devices: [NIC] });
    const victim = hv.createVm({ memory: 4 * 4096 });
    victim.write(0, tag(victim, 0));
    // The hypervisor's own memory: the victim's p2m root table (an engine-internal frame no VM owns).
    const p2mRoot = ((victim as unknown as { p2m: { context: { root: bigint } } }).p2m.context.root);
    return { host, hv, backend, victim, dma: backend.device(NIC).dma, p2mRoot };
  }

  it("with exposeMfn the backend's device reaches an unserved VM and the hypervisor's p2m", async () => {
    const { host, hv, victim, dma, p2mRoot } = await baseline(true);
    const mfn = hv.gfnToMfn(victim, 0);
    expect(hv.served(hv.vms()[0])).toEqual([]);
    expect(dma.read(mfn * 4096n, 9).data).toEqual(tag(victim, 0));
    const r = dma.read(p2mRoot, 64);
    expect(r.fault).toBeUndefined();
    expect(r.data).toEqual(host.ram.read(p2mRoot, 64));
    expect(r.data.some((b) => b !== 0)).toBe(true);
    // And it can write there: the p2m is the device's to corrupt.
    expect(dma.write(p2mRoot, new Uint8Array(8)).fault).toBeUndefined();
  });

  it("the default refuses gfnToMfn and the same reads fault", async () => {
    const { hv, victim, dma, p2mRoot } = await baseline(false);
    expect(errno(() => hv.gfnToMfn(victim, 0))).toBe("EPERM");
    const { hv: open, victim: v2 } = await baseline(true);
    const mfn = open.gfnToMfn(v2, 0);
    expect(dma.read(mfn * 4096n, 9).fault).toBeDefined();
    expect(dma.read(p2mRoot, 64).fault).toBeDefined();
    // Every BFN past its own 16 pages faults: nothing but its memory is there.
    for (const bfn of [16n, 17n, 0x1000n, p2mRoot / 4096n]) expect(dma.read(bfn * 4096n, 1).fault).toBeDefined();
  });

  it("a second hypervisor() with other options is EBUSY", async () => {
    const host = await createHost({ ramSize: 1 << 20 });
    host.hypervisor();
    expect(errno(() => host.hypervisor({ exposeMfn: true }))).toBe("EBUSY");
    expect(host.hypervisor({ exposeMfn: false })).toBe(host.hypervisor());
  });
});
