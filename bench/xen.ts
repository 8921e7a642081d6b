// Xen driver domains (issue 10). foreign-map-4k: a backend maps one page of a
// served VM into its IOMMU table and unmaps it (IOTLB invalidated), 64 such
// cycles a call; the control code is the same over both hosts, so the
// speedup is the data plane's. backend-dma-4k: the backend's device reads 64
// delegated pages (4 KiB each, one scatter-gather call) through its IOMMU
// table, to compare with device-dma-4k (a VFIO device through its container).
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
