// The multiplexed alternative (createVm({ multiplexed })) against per-mapping
// delegation, shown rather than argued: the same backend bug — a BFN
// computed with the wrong slot — reaches another served VM's page in a
// multiplexed table and faults in a delegated one. Every scenario runs on the
// engine host and the naive twin, which must agree on every answer.
import { describe, expect, it } from "vitest";
import { createHost, MultiplexedIommu, type DmaPort, type Vm } from "../src/index.js";
import { createNaiveHost } from "../bench/naive/index.js";
import { errno } from "./support/outcome.js";

type Any = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const NIC = "0000:03:00.0";
const RAM = 16 << 20;
/** k for 16 MiB of RAM: 4096 pages. */
const K = 12;
const tag = (vm: Vm, gfn: number) => new TextEncoder().encode(`vm${vm.id}:gfn${gfn};`);
const HOSTS = [["engine", createHost], ["twin", createNaiveHost]] as const;

async function world(make: (o: object) => Promise<unknown>, multiplexed: boolean, guests = 3) {
  const host = (await make({ arch: "vtd", ramSize: RAM })) as Any;
  host.addDevice({ bdf: NIC, driver: null });
  const hv = host.hypervisor();
  const backend: Vm = hv.createVm({ name: "netback", memory: 16 * 4096, devices: [NIC], ...(multiplexed ? { multiplexed: { vmidBits: 2 } } : {}) });
  const vms: Vm[] = [...Array(guests).keys()].map((i) => hv.createVm({ name: `g${i}`, memory: (8 + i) * 4096 }));
  for (const vm of vms) for (let g = 0; g < vm.gfnCount; g++) vm.write(g * 4096, tag(vm, g));
  return { host, hv, backend, vms, dma: backend.device(NIC).dma as DmaPort };
}

/** What a device read at bfn gives: the bytes of a tag, or "fault". */
function reach(dma: DmaPort, bfn: bigint, len: number): string {
  const r = dma.read(bfn * 4096n, len);
  return r.fault !== undefined ? "fault" : new TextDecoder().decode(r.data);
}

/** The backend's intended BFN for (slot, gfn) — and its bug: the slot off by one. */
const bfnOf = (slot: number, gfn: number) => (BigInt(slot) << BigInt(K)) | BigInt(gfn);

describe.each(HOSTS)("xen multiplexed table (%s)", (_name, make) => {
  it("serve maps a VM whole at (slot << k) | GFN; map, mapGrant and restrict are EOPNOTSUPP", async () => {
    const { hv, backend, vms, dma } = await world(make, true);
    const iommu = backend.iommu as MultiplexedIommu;
    expect(iommu).toBeInstanceOf(MultiplexedIommu);
    expect([iommu.vmidBits, iommu.gfnBits]).toEqual([2, K]);
    hv.serve(backend, vms[0]);
    expect(iommu.slotOf(vms[0])).toBe(1);
    expect(iommu.busFrame(vms[0], 5)).toBe(bfnOf(1, 5));
    expect(reach(dma, bfnOf(1, 5), tag(vms[0], 5).length)).toBe(`vm${vms[0].id}:gfn5;`);
    expect(iommu.query(bfnOf(1, 7))).toEqual({ bfn: bfnOf(1, 7), vm: vms[0].id, gfn: 7n, write: true });
    expect(iommu.mappings().length).toBe(vms[0].gfnCount);
    // Past the VM's memory within its slot: nothing.
    expect(reach(dma, bfnOf(1, vms[0].gfnCount), 4)).toBe("fault");
    expect(errno(() => iommu.map({ bfn: 0x100, vm: vms[0], gfn: 0 }))).toBe("EOPNOTSUPP");
    const gref = vms[1].grant(backend, 0);
    expect(errno(() => iommu.mapGrant({ bfn: 0x100, vm: vms[1], gref }))).toBe("EOPNOTSUPP");
    expect(errno(() => iommu.restrict({ vms: [vms[0]] }))).toBe("EOPNOTSUPP");
    expect(errno(() => iommu.busFrame(vms[1], 0))).toBe("ENOENT");
  });

  it("vmidBits bounds the served VMs (ENOSPC, nothing changed); a freed slot is reused", async () => {
    const { hv, backend, vms } = await world(make, true, 4);
    for (const vm of vms.slice(0, 3)) hv.serve(backend, vm);
    const before = backend.iommu.mappings();
    expect(errno(() => hv.serve(backend, vms[3]))).toBe("ENOSPC");
    expect(hv.served(backend)).toEqual(vms.slice(0, 3));
    expect(backend.iommu.mappings()).toEqual(before);
    hv.unserve(backend, vms[1]);
    hv.serve(backend, vms[3]);
    expect((backend.iommu as MultiplexedIommu).slotOf(vms[3])).toBe(2);
  });

  it("createVm refuses multiplexed without devices or past the IOMMU's width", async () => {
    const host = (await make({ arch: "vtd", ramSize: RAM })) as Any;
    host.addDevice({ bdf: NIC, driver: null });
    const hv = host.hypervisor();
    expect(errno(() => hv.createVm({ memory: 4096, multiplexed: { vmidBits: 2 } }))).toBe("EINVAL");
    expect(errno(() => hv.createVm({ memory: 4096, devices: [NIC], multiplexed: { vmidBits: 0 } }))).toBe("EINVAL");
    expect(errno(() => hv.createVm({ memory: 4096, devices: [NIC], multiplexed: { vmidBits: 36 - K + 1 } }))).toBe("EINVAL");
    expect(errno(() => hv.createVm({ memory: 4096, devices: [NIC], multiplexed: {} }))).toBe("EINVAL");
    expect(hv.vms()).toEqual([]);
  });

  it("(a) the backend bug — a BFN with the slot off by one — reads another served VM's page whenever two are served", async () => {
    const { hv, backend, vms, dma } = await world(make, true);
    const iommu = backend.iommu as MultiplexedIommu;
    hv.serve(backend, vms[0]);
    // One VM served: the off-by-one slot is empty, the bug faults.
    expect(reach(dma, bfnOf(iommu.slotOf(vms[0])! + 1, 3), 4)).toBe("fault");
    hv.serve(backend, vms[1]);
    // Two served: serving vms[0], the buggy BFN lands in vms[1]'s page.
    const len = tag(vms[1], 3).length;
    expect(reach(dma, bfnOf(iommu.slotOf(vms[0])! + 1, 3), len)).toBe(`vm${vms[1].id}:gfn3;`);
    // And it can write it: the whole slot is read-write.
    expect(dma.write(bfnOf(iommu.slotOf(vms[0])! + 1, 3) * 4096n, new Uint8Array([0x21])).fault).toBeUndefined();
    expect(vms[1].read(3 * 4096, 1)[0]).toBe(0x21);
  });

  it("(b) per-mapping delegation: the same buggy BFN faults; only pages the backend mapped are reachable", async () => {
    const { hv, backend, vms, dma } = await world(make, false);
    for (const vm of vms) hv.serve(backend, vm);
    // The backend uses the same scheme by hand, but maps only the pages it needs.
    const slots = new Map(vms.map((vm, i) => [vm, i + 1]));
    backend.iommu.map({ bfn: bfnOf(slots.get(vms[0])!, 3), vm: vms[0], gfn: 3, write: true });
    backend.iommu.map({ bfn: bfnOf(slots.get(vms[1])!, 4), vm: vms[1], gfn: 4 });
    expect(reach(dma, bfnOf(slots.get(vms[0])!, 3), tag(vms[0], 3).length)).toBe(`vm${vms[0].id}:gfn3;`);
    // The bug: vms[0]'s request at vms[1]'s slot. vms[1] is served, and has a page mapped — not that one.
    expect(reach(dma, bfnOf(slots.get(vms[0])! + 1, 3), 4)).toBe("fault");
    expect(dma.write(bfnOf(slots.get(vms[0])! + 1, 3) * 4096n, new Uint8Array([0x21])).fault).toBeDefined();
    expect(vms[1].read(3 * 4096, 1)[0]).toBe(tag(vms[1], 3)[0]);
    // Reachable: exactly the two mapped pages and the backend's own memory.
    let reachable = 0;
    for (const slot of [1, 2, 3]) for (let g = 0; g < 12; g++) if (reach(dma, bfnOf(slot, g), 1) !== "fault") reachable++;
    expect(reachable).toBe(2);
  });

  it("(c) unserve and destroy revoke the VM's slot before they return", async () => {
    const { host, hv, backend, vms, dma } = await world(make, true);
    const iommu = backend.iommu as MultiplexedIommu;
    hv.serve(backend, vms[0]);
    hv.serve(backend, vms[1]);
    const [s0, s1] = [iommu.slotOf(vms[0])!, iommu.slotOf(vms[1])!];
    // Warm the IOTLB so a missing invalidation would show.
    expect(reach(dma, bfnOf(s0, 2), 4)).not.toBe("fault");
    expect(reach(dma, bfnOf(s1, 2), 4)).not.toBe("fault");
    expect(hv.unserve(backend, vms[0])).toBe(vms[0].gfnCount);
    expect(reach(dma, bfnOf(s0, 2), 4)).toBe("fault");
    expect(iommu.slotOf(vms[0])).toBeUndefined();
    const free = host.ram.framesFree;
    vms[1].destroy();
    expect(reach(dma, bfnOf(s1, 2), 4)).toBe("fault");
    expect(iommu.mappings()).toEqual([]);
    expect(hv.served(backend)).toEqual([]);
    expect(host.ram.framesFree).toBeGreaterThan(free + vms[1].gfnCount);
    // The backend's own memory stays at slot 0.
    backend.write(4096, tag(backend, 1));
    expect(reach(dma, bfnOf(0, 1), tag(backend, 1).length)).toBe(`vm${backend.id}:gfn1;`);
  });
});

describe("xen multiplexed table: engine and twin agree", () => {
  it("the same serves, unserves, DMA reads and refusals give the same answers", async () => {
    const sides = await Promise.all(HOSTS.map(([, make]) => world(make, true, 4)));
    const trace = (s: Awaited<ReturnType<typeof world>>) => {
      const out: string[] = [];
      const step = (f: () => unknown) => { try { out.push(String(f())); } catch (e) { out.push((e as { code?: string }).code ?? "throw"); } };
      const { hv, backend, vms, dma } = s;
      const iommu = backend.iommu as MultiplexedIommu;
      for (const vm of vms) step(() => hv.serve(backend, vm));
      step(() => hv.unserve(backend, vms[0]));
      step(() => hv.serve(backend, vms[3]));
      vms[2].destroy();
      for (const vm of vms) step(() => iommu.slotOf(vm));
      for (let slot = 0; slot < 4; slot++) for (let g = 0; g < 12; g += 3) step(() => reach(dma, bfnOf(slot, g), 12));
      step(() => iommu.mappings().map((m) => `${m.bfn}:${m.vm}:${m.gfn}`).join(","));
      return out;
    };
    const [e, n] = sides.map(trace);
    expect(e).toEqual(n);
    expect(e).toContain("ENOSPC");
  });
});
