// mdev-pin-512 (issue 9): a vendor driver's vfio_pin_pages + vfio_unpin_pages
// of 512 pages (the kernel's per-call limit) through a container of
// emulated groups, the pin records counted against memlock. Engine (one
// WASM walk-and-pin per run of new pages) against the twin (a BigInt walk
// per page), the same control code over both.
import { createHost } from "../src/index.js";
import { createNaiveHost } from "./naive/index.js";
import { RAM_SIZE } from "./fixtures.js";
import type { Case } from "./cases.js";

const PAGES = 512;
const IOVA = 0x1000_0000n;
const PARENT = "0000:00:02.0";

interface MdevLike {
  onDmaUnmap(cb: (iova: bigint, size: bigint) => void): void;
  pinPages(iova: bigint, npage: number, opts?: { write?: boolean }): BigUint64Array;
  unpinPages(iova: bigint, npage: number): number;
}

/** An mdev whose container maps 4 MiB of the VMM's memory (1024 pages; the pins take half of it). */
async function vendor(make: (o: object) => Promise<unknown>): Promise<MdevLike> {
  type HostLike = {
    addDevice(o: object): void; createMdev(o: object): MdevLike & { group: number };
    createProcess(o?: object): { mmap(size: bigint): bigint };
    openContainer(o: object): { setIommu(t: string): void; mapDma(o: object): bigint };
    openGroup(g: number): { setContainer(c: unknown): void };
  };
  const host = (await make({ arch: "vtd", ramSize: RAM_SIZE })) as HostLike;
  host.addDevice({ bdf: PARENT, driver: "host" });
  const mdev = host.createMdev({ parent: PARENT });
  const p = host.createProcess({ memlockLimit: 64n << 20n });
  const c = host.openContainer({ process: p });
  host.openGroup(mdev.group).setContainer(c);
  c.setIommu("type1v2");
  c.mapDma({ vaddr: p.mmap(4n << 20n), iova: IOVA, size: 4n << 20n, read: true, write: true });
  mdev.onDmaUnmap((iova, size) => { mdev.unpinPages(iova, Number(size >> 12n)); });
  return mdev;
}

export async function mdevPin512(): Promise<Case> {
  const e = await vendor(createHost), n = await vendor(createNaiveHost as never);
  const a = e.pinPages(IOVA, PAGES, { write: true }), b = n.pinPages(IOVA, PAGES, { write: true });
  if (a.length !== PAGES || a.some((hpa, i) => hpa !== b[i])) throw new Error("benchmark fixture is broken: engine and twin pin different frames");
  e.unpinPages(IOVA, PAGES);
  n.unpinPages(IOVA, PAGES);
  const cycle = (m: MdevLike) => () => {
    m.pinPages(IOVA, PAGES, { write: true });
    m.unpinPages(IOVA, PAGES);
  };
  return { name: "mdev-pin-512", unit: "pin + unpin of 512 pages", items: 1, engine: cycle(e), naive: cycle(n) };
}
