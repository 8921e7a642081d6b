// Xen driver domains (issue 10). foreign-map-4k: a backend maps one page of a
// served VM into its IOMMU table and unmaps it (IOTLB invalidated), 64 such
// cycles a call; the control code is the same over both hosts, so the
// speedup is the data plane's. backend-dma-4k: the backend's device reads 64
// delegated pages (4 KiB each, one scatter-gather call) through its IOMMU
// table, to compare with device-dma-4k (a VFIO device through its container).
// xen-shadow-gtt-update: XenGT's GGTT entry writes, each moving its entry to
// another guest frame (mapped by delegated mapping at a BFN unless the
// shadow's cache has it; frames left with no entry unmapped). xen-ppgtt-store:
// the guest's own 8-byte PTE stores into a write-tracked PPGTT page, each
// trapping to the shadow (the same moves, through vm.write).
import { createHost, type Host } from "../src/index.js";
import { createNaiveHost } from "./naive/index.js";
import { RAM_SIZE, residentU64s } from "./fixtures.js";
import type { Case } from "./cases.js";

const NIC = "0000:03:00.0";
const PAGES = 64;
const BFN = 0x10000;

type Any = any; // eslint-disable-line @typescript-eslint/no-explicit-any

async function driverDomain(make: (o: object) => Promise<unknown>) {
  const host = (await make({ arch: "vtd", ramSize: RAM_SIZE })) as Any;
  host.addDevice({ bdf: NIC, driver: null });
  const hv = host.hypervisor();
  const backend = hv.createVm({ name: "netback", memory: 16 * 4096, devices: [NIC] });
  const guest = hv.createVm({ name: "guest", memory: PAGES * 4096 });
  hv.serve(backend, guest);
  return { host, backend, guest, dma: backend.device(NIC).dma };
}

export async function foreignMap4k(): Promise<Case> {
  const [e, n] = [await driverDomain(createHost), await driverDomain(createNaiveHost as never)];
  const cycle = ({ backend, guest }: Any) => () => {
    const iommu = backend.iommu;
    for (let k = 0; k < PAGES; k++) {
      iommu.map({ bfn: BFN + k, vm: guest, gfn: k, write: true });
      iommu.unmap({ bfn: BFN + k });
    }
  };
  return { name: "foreign-map-4k", unit: "map + unmap of one page", items: PAGES, engine: cycle(e), naive: cycle(n) };
}

export async function backendDma4k(): Promise<Case> {
  const sides = [await driverDomain(createHost), await driverDomain(createNaiveHost as never)];
  const fill = Uint8Array.from({ length: PAGES * 4096 }, (_, i) => (i * 7 + (i >> 12)) & 0xff);
  for (const s of sides) {
    s.guest.write(0, fill);
    s.backend.iommu.map({ bfn: BFN, vm: s.guest, gfn: 0, count: PAGES });
  }
  const pairs = [...Array(PAGES).keys()].flatMap((i) => [BigInt(BFN + i) * 4096n, 4096n]);
  const [e, n] = sides;
  const eSegs = residentU64s(e.host as Host, pairs), nSegs = BigUint64Array.from(pairs);
  const eBuf = (e.host as Host).allocBuffer(PAGES * 4096), nBuf = new Uint8Array(PAGES * 4096);
  const read = (s: Any, segs: BigUint64Array, buf: Uint8Array) => s.dma.sg(segs, buf, { direction: "read" });
  if (read(e, eSegs, eBuf).bytes !== PAGES * 4096 || read(n, nSegs, nBuf).bytes !== PAGES * 4096) throw new Error("backend-dma-4k short");
  if (!eBuf.every((v, i) => v === fill[i] && v === nBuf[i])) throw new Error("backend-dma-4k: engine and twin read different bytes");
  return {
    name: "backend-dma-4k", unit: "4 KiB read", items: PAGES,
    engine: () => { read(e, eSegs, eBuf); },
    naive: () => { read(n, nSegs, nBuf); },
  };
}

const GUEST_FRAMES = 1000;
const ENTRIES = 512;
const GPU = "0000:00:02.0";

/** A GPU backend serving a guest of GUEST_FRAMES pages, with a shadow of the given layout. */
async function xenGt(make: (o: object) => Promise<unknown>, layout: object) {
  const host = (await make({ arch: "vtd", ramSize: RAM_SIZE })) as Any;
  host.addDevice({ bdf: GPU, driver: null });
  const hv = host.hypervisor();
  const backend = hv.createVm({ name: "dom0", memory: 64 * 4096, devices: [GPU] });
  const guest = hv.createVm({ name: "guest", memory: GUEST_FRAMES * 4096 });
  hv.serve(backend, guest);
  return { host, backend, guest, gtt: backend.shadowGtt(layout, { vm: guest }) };
}

/** Entry i's frame in round r: every round moves every entry; most frames are in the cache already. */
const frameOf = (i: number, r: number): bigint => BigInt(16 + ((i * 7 + r * 13) % (GUEST_FRAMES - 16)));

export async function xenShadowGttUpdate(): Promise<Case> {
  const sides = [await xenGt(createHost, { format: "ggtt", entries: ENTRIES }), await xenGt(createNaiveHost as never, { format: "ggtt", entries: ENTRIES })];
  let round = 0;
  const pass = (s: Any, r: number) => { for (let i = 0; i < ENTRIES; i++) s.gtt.guestWrite(i, (frameOf(i, r) << 12n) | 3n); };
  sides.forEach((s) => pass(s, 0));
  const [e, n] = sides;
  if (JSON.stringify(e.gtt.stats()) !== JSON.stringify(n.gtt.stats()) || e.gtt.stats().scratch !== 0) throw new Error("xen-shadow-gtt-update: engine and twin shadows differ");
  return {
    name: "xen-shadow-gtt-update", unit: "guest GGTT entry write", items: ENTRIES,
    engine: () => { pass(e, ++round); },
    naive: () => { pass(n, ++round); },
  };
}

export async function xenPpgttStore(): Promise<Case> {
  const layout = { format: "x86-64", levels: 4 };
  const sides = [await xenGt(createHost, layout), await xenGt(createNaiveHost as never, layout)];
  // PML4 at GFN 1 → PDPT 2 → PD 3 → PT 4: the PT's entries are the stores.
  const u64 = (v: bigint) => new Uint8Array(new BigUint64Array([v]).buffer);
  const PT = 4n * 4096n;
  for (const s of sides) {
    for (const [at, next] of [[1n, 2n], [2n, 3n], [3n, 4n]]) s.guest.write(at * 4096n, u64((next << 12n) | 3n));
    s.gtt.setRoot(4096n);
  }
  // The stores of each round, made once: an emulator's trapped values cost nothing to build.
  const rounds = 8;
  const stores = [...Array(rounds).keys()].map((r) => [...Array(ENTRIES).keys()].map((i) => u64((frameOf(i, r) << 12n) | 3n)));
  let round = 0;
  const pass = (s: Any, r: number) => { const vs = stores[r % rounds]; for (let i = 0; i < ENTRIES; i++) s.guest.write(PT + BigInt(i) * 8n, vs[i]); };
  sides.forEach((s) => pass(s, 0));
  const [e, n] = sides;
  const probe = (s: Any) => s.gtt.dma.read(0x5000n, 8);
  if (JSON.stringify(e.gtt.stats()) !== JSON.stringify(n.gtt.stats()) || e.gtt.stats().shadowEntries !== ENTRIES + 3 || probe(e).fault || probe(n).fault) {
    throw new Error("xen-ppgtt-store: engine and twin shadows differ");
  }
  return {
    name: "xen-ppgtt-store", unit: "guest PTE store, trapped", items: ENTRIES,
    engine: () => { pass(e, ++round); },
    naive: () => { pass(n, ++round); },
  };
}
