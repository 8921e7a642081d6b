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
