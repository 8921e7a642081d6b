// Shadow GTTs through delegated mapping (issue 10, XenGT without MFNs): a
// driver domain's GPU shadows a served VM's GGTT as GMA → BFN, the BFNs
// mapped by delegated mapping through a restricted mapper; the GPU's DMA by
// GMA goes GTT → BFN → MFN in one walk; unserve and VM destroy make it fault
// at the IOMMU, never reach a freed (or reused) frame. Directed cases, then
// the engine against the twin over a random mix.
import { Buffer } from "node:buffer";
import { describe, expect, it } from "vitest";
import { createHost, IommuError, type DmaPort, type Host, type ShadowGtt, type Vm, type XenShadowOptions } from "../src/index.js";
import { errno } from "./support/outcome.js";
import { xenWorld } from "./support/xenrig.js";

const GPU = "0000:00:02.0";
const RAM = 16 << 20;
const PAGE = 0x1000n;
const BACKEND_PAGES = 64;
const GUEST_PAGES = 32;

const pte = (gfn: number, write = true): bigint => (BigInt(gfn) << 12n) | 1n | (write ? 2n : 0n);
const tag = (vm: Vm, gfn: number) => new TextEncoder().encode(`vm${vm.id}:gfn${gfn};`);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

interface Rig { host: Host; hv: ReturnType<Host["hypervisor"]>; backend: Vm<DmaPort>; guest: Vm<DmaPort>; gtt: ShadowGtt }

async function rig(opts: { twin?: boolean; shadow?: Omit<XenShadowOptions, "vm">; entries?: number } = {}): Promise<Rig> {
  const { host, hv, backend, guest } = await xenWorld({ twin: opts.twin, ram: RAM, backendPages: BACKEND_PAGES, guestPages: GUEST_PAGES });
  for (let g = 0; g < GUEST_PAGES; g++) guest.write(g * 4096, tag(guest, g));
  hv.serve(backend, guest);
  const gtt = backend.shadowGtt({ format: "ggtt", entries: opts.entries ?? 1024 }, { vm: guest, ...opts.shadow });
  return { host, hv, backend, guest, gtt };
}

describe("a shadow GGTT over a Xen backend", () => {
  it("a guest entry GMA → GFN becomes GMA → BFN: query names (vm, gfn), the GPU reads the VM's page by GMA", async () => {
    const { backend, guest, gtt } = await rig();
    gtt.guestWrite(7, pte(5));
    expect(gtt.guestRead(7)).toBe(pte(5));
    const t = gtt.translate(7n * PAGE + 0x10n);
    expect(t.fault).toBeUndefined();
    const bfn = t.bus! >> 12n;
    // A BFN above the backend's own 1:1 memory, 2 MiB-aligned start of the shadow's range.
    expect(bfn).toBeGreaterThanOrEqual(BigInt(BACKEND_PAGES));
    expect(backend.iommu.query(bfn)).toEqual({ bfn, vm: guest.id, gfn: 5n, write: true });
    expect(backend.iommu.mappings()).toEqual([{ bfn, vm: guest.id, gfn: 5n, write: true }]);
    const got = gtt.dma.read(7n * PAGE, tag(guest, 5).length);
    expect(got.fault).toBeUndefined();
    expect(text(got.data)).toBe(text(tag(guest, 5)));
    // The GPU writes through it, and the guest sees it.
    expect(gtt.dma.write(7n * PAGE + 0x100n, new TextEncoder().encode("from the GPU")).bytes).toBe(12);
    expect(text(guest.read(5 * 4096 + 0x100, 12))).toBe("from the GPU");
    // The backend's own device reaches the same page at that BFN, as the GPU's stage 2 does.
    expect(text(backend.device(GPU).dma.read(bfn * PAGE, 4).data)).toBe("vm2:");
    expect(gtt.stats()).toMatchObject({ shadowEntries: 1, pinnedPages: 1, scratch: 0, cacheMisses: 1 });
  });

  it("a thousand entries over one frame cost one BFN mapping; the last one out unmaps it and its BFN is reused", async () => {
    const { backend, gtt } = await rig();
    for (let i = 0; i < 1000; i++) gtt.guestWrite(i, pte(3));
    expect(gtt.stats()).toMatchObject({ shadowEntries: 1000, pinnedPages: 1, cacheHits: 999, cacheMisses: 1 });
    expect(backend.iommu.mappings().length).toBe(1);
    const bus = gtt.translate(0n).bus!;
    for (let i = 0; i < 1000; i++) gtt.guestWrite(i, 0n);
    expect(backend.iommu.mappings()).toEqual([]);
    gtt.guestWrite(1, pte(4));
    expect(gtt.translate(1n * PAGE).bus).toBe(bus);
  });

  it("a not-present entry faults at the device MMU; a read-only one refuses the GPU's write there", async () => {
    const { gtt } = await rig();
    expect(gtt.dma.read(5n * PAGE, 4).fault?.stage).toBe("device-mmu");
    gtt.guestWrite(5, pte(2, false));
    expect(gtt.dma.read(5n * PAGE, 4).fault).toBeUndefined();
    expect(gtt.dma.write(5n * PAGE, new Uint8Array(4)).fault).toMatchObject({ stage: "device-mmu", reason: "permission" });
  });

  it("unserve: the GPU's next read faults at the IOMMU; its BFNs are quarantined; later writes of the entry work with no double unmap", async () => {
    const { hv, backend, guest, gtt } = await rig();
    gtt.guestWrite(1, pte(5));
    gtt.guestWrite(2, pte(5));
    gtt.guestWrite(3, pte(6));
    expect(gtt.dma.read(1n * PAGE, 4).fault).toBeUndefined(); // fills the GPU's IOTLB
    const dead = gtt.translate(1n * PAGE).bus!;
    expect(hv.unserve(backend, guest)).toBe(2);
    const f = gtt.dma.read(1n * PAGE, 4).fault;
    expect(f?.stage).toBe("iommu");
    expect(gtt.translate(1n * PAGE)).toMatchObject({ bus: dead, fault: { stage: "iommu" } });
    expect(gtt.stats()).toMatchObject({ shadowEntries: 3, pinnedPages: 0 });
    // The guest rewrites its entries: no right now, so scratch; nothing throws, nothing is unmapped twice.
    gtt.guestWrite(1, pte(7));
    gtt.guestWrite(2, 0n);
    expect(gtt.stats()).toMatchObject({ shadowEntries: 2, scratch: 1 });
    // Served again: fresh BFNs, never the quarantined ones.
    hv.serve(backend, guest);
    gtt.guestWrite(4, pte(5));
    const fresh = gtt.translate(4n * PAGE);
    expect(fresh.fault).toBeUndefined();
    expect(fresh.bus! >> 12n).not.toBe(dead >> 12n);
    expect(gtt.dma.read(3n * PAGE, 4).fault?.stage).toBe("iommu");
  });

  it("'invalidate-shadow': the entries go with the revocation and the GPU faults at its own MMU", async () => {
    const { hv, backend, guest, gtt } = await rig({ shadow: { onUnmap: "invalidate-shadow" } });
    gtt.guestWrite(1, pte(5));
    hv.unserve(backend, guest);
    expect(gtt.dma.read(1n * PAGE, 4).fault?.stage).toBe("device-mmu");
    expect(gtt.stats()).toMatchObject({ shadowEntries: 0, pinnedPages: 0 });
    expect(gtt.guestRead(1)).toBe(pte(5));
  });

  it("VM destroy: its frames go back and a new VM gets them; the GPU faults at the IOMMU and never reads the new VM's data", async () => {
    const { host, hv, backend, guest, gtt } = await rig();
    for (let i = 0; i < GUEST_PAGES; i++) gtt.guestWrite(i, pte(i));
    for (let i = 0; i < GUEST_PAGES; i++) expect(gtt.dma.read(BigInt(i) * PAGE, 4).fault).toBeUndefined();
    const hpas = new Set<bigint>();
    for (let i = 0; i < GUEST_PAGES; i++) hpas.add(gtt.translate(BigInt(i) * PAGE).hpa! >> 12n);
    const free = host.ram.framesFree;
    guest.destroy();
    expect(host.ram.framesFree).toBeGreaterThan(free);
    expect(backend.iommu.mappings()).toEqual([]);
    const next = hv.createVm({ name: "next", memory: GUEST_PAGES * 4096 });
    let reused = 0;
    for (let g = 0; g < GUEST_PAGES; g++) {
      next.write(g * 4096, new TextEncoder().encode("SECRET of the next VM"));
      // The test looks behind the p2m (no API shows an MFN) to see the frames go round.
      if (hpas.has((next as unknown as { p2m: { mfnAddress(g: number): bigint } }).p2m.mfnAddress(g) >> 12n)) reused++;
    }
    // The frames went to the new VM (the allocator hands them out again); its secret is out of the GPU's reach.
    const secret = new TextEncoder().encode("SECRET");
    for (let i = 0; i < GUEST_PAGES; i++) {
      const r = gtt.dma.read(BigInt(i) * PAGE, 6);
      expect(r.fault?.stage).toBe("iommu");
      expect(Buffer.from(r.data.subarray(0, r.bytes)).includes(Buffer.from(secret))).toBe(false);
    }
    expect(reused).toBeGreaterThan(0);
    // Mapping for the dead VM is refused: scratch, no throw.
    gtt.guestWrite(100, pte(1));
    expect(gtt.stats().scratch).toBe(1);
  });

  it("a restricted mapper's page budget sends excess entries to the scratch page (the backend's own page)", async () => {
    const host = await createHost({ ramSize: RAM });
    host.addDevice({ bdf: GPU, driver: null });
    const hv = host.hypervisor();
    const backend = hv.createVm({ memory: BACKEND_PAGES * 4096, devices: [GPU] });
    const guest = hv.createVm({ memory: GUEST_PAGES * 4096 });
    hv.serve(backend, guest);
    const mapper = backend.iommu.restrict({ vms: [guest], maxPages: 3 });
    backend.write((BACKEND_PAGES - 1) * 4096, new TextEncoder().encode("scratch"));
    const gtt = backend.shadowGtt({ format: "ggtt", entries: 512 }, { vm: guest, mapper });
    for (let i = 0; i < 5; i++) gtt.guestWrite(i, pte(10 + i));
    expect(gtt.stats()).toMatchObject({ shadowEntries: 5, pinnedPages: 3, scratch: 2 });
    expect(mapper.pages).toBe(3);
    expect(text(gtt.dma.read(4n * PAGE, 7).data)).toBe("scratch");
    expect(gtt.translate(4n * PAGE).bus).toBe(BigInt(BACKEND_PAGES - 1) * PAGE);
    // Freeing one makes room again.
    gtt.guestWrite(0, 0n);
    gtt.guestWrite(4, pte(14));
    expect(gtt.stats()).toMatchObject({ pinnedPages: 3, scratch: 1 });
  });

  it("refuses bad arguments; the backend's destroy takes its shadows with it", async () => {
    const { hv, backend, guest, gtt } = await rig();
    const other = hv.createVm({ memory: 4096 });
    expect(errno(() => backend.shadowGtt({ format: "ggtt", entries: 1024 }, { vm: other }))).toBe("EPERM");
    expect(errno(() => backend.shadowGtt({ format: "ggtt", entries: 1000 }, { vm: guest }))).toBe("EINVAL");
    expect(errno(() => backend.shadowGtt({ format: "x86-64", levels: 4 }, { vm: guest, entries: 512 } as never))).toBe("EINVAL");
    expect(errno(() => backend.shadowGtt({ format: "ggtt", entries: 1024 }, undefined as never))).toBe("EINVAL");
    expect(errno(() => backend.shadowGtt({ format: "ggtt", entries: 1024 }, { vm: guest, onUnmap: "never" as never }))).toBe("EINVAL");
    expect(errno(() => backend.shadowGtt({ format: "ggtt", entries: 1024 }, { vm: guest, mapper: {} as never }))).toBe("EINVAL");
    hv.serve(backend, other);
    const narrow = backend.iommu.restrict({ vms: [other] });
    expect(errno(() => backend.shadowGtt({ format: "ggtt", entries: 1024 }, { vm: guest, mapper: narrow }))).toBe("EPERM");
    expect(errno(() => guest.shadowGtt({ format: "ggtt", entries: 1024 }, { vm: backend }))).toBe("ENODEV");
    gtt.guestWrite(1, pte(1));
    backend.destroy();
    expect(errno(() => gtt.guestWrite(1, pte(2)))).toBe("ENODEV");
    expect(guest.read(1 * 4096, 4)).toEqual(tag(guest, 1).subarray(0, 4));
  });
});

describe("engine and twin agree on a Xen shadow", () => {
  it("random guest GTT writes, GPU DMA, guest writes and unserve/serve give the same results, stats, mappings and RAM", async () => {
    const sides = [await rig(), await rig({ twin: true })];
    let seed = 7;
    // The high bits: an LCG's low bits cycle in a few steps.
    const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return Math.floor(seed / 65536) % n; };
    // Each op's random values are drawn once, outside the per-side closure; 64 entries, so DMA meets them.
    const ops: (() => (r: Rig) => unknown)[] = [
      () => { const i = rnd(64), gfn = rnd(GUEST_PAGES + 4), flags = BigInt(rnd(4)); return (r) => r.gtt.guestWrite(i, (BigInt(gfn) << 12n) | flags); },
      () => { const i = rnd(64); return (r) => r.gtt.guestRead(i); },
      () => { const i = rnd(64), len = 1 + rnd(6000), fill = rnd(256); return (r) => r.gtt.dma.write(BigInt(i) * PAGE, new Uint8Array(len).fill(fill)); },
      () => { const i = rnd(64), len = 1 + rnd(6000); return (r) => { const x = r.gtt.dma.read(BigInt(i) * PAGE, len); return { bytes: x.bytes, fault: x.fault, sum: x.data.reduce((a, b) => a + b, 0) }; }; },
      () => { const i = rnd(64); return (r) => r.gtt.translate(BigInt(i) * PAGE); },
      () => (r) => r.hv.unserve(r.backend, r.guest),
      () => (r) => r.hv.serve(r.backend, r.guest),
      () => { const g = rnd(GUEST_PAGES), b = rnd(256); return (r) => r.guest.write(g * 4096 + 8, new Uint8Array([b])); },
    ];
    const kinds = new Map<string, number>();
    for (let step = 0; step < 1500; step++) {
      const op = ops[rnd(ops.length)]();
      const out = sides.map((r) => {
        try {
          return JSON.stringify(op(r), (_, x) => (typeof x === "bigint" ? `0x${x.toString(16)}` : x)) ?? "void";
        } catch (e) {
          if (e instanceof IommuError) return e.code;
          throw e;
        }
      });
      expect(out[1], `step ${step}`).toBe(out[0]);
      const kind = out[0].includes("device-mmu") ? "device-mmu" : out[0].includes("\"iommu\"") ? "iommu" : /^"?E[A-Z]/.test(out[0]) ? "errno" : "ok";
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      expect(sides[1].gtt.stats(), `stats after step ${step}`).toEqual(sides[0].gtt.stats());
      expect(sides[1].backend.iommu.mappings()).toEqual(sides[0].backend.iommu.mappings());
    }
    const [a, b] = sides.map((r) => r.host.ram.view(0n, RAM));
    expect(Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length))).toBe(true);
    for (const k of ["device-mmu", "iommu", "ok", "errno"]) expect(kinds.get(k) ?? 0, k).toBeGreaterThan(0);
  });
});
