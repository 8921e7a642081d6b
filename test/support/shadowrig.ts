// The setting of the shadow GTT tests: a host with a GPU its vendor driver
// owns, an mdev on it whose group is in the VMM's container, 16 MiB of guest
// memory mapped at GPA 0, and a shadow of the given layout over the GPU's DMA
// API; on the engine or on the naive twin.
import { createHost, type Arch, type Container, type DmaApi, type Host, type Mdev, type Process, type ShadowGtt, type ShadowLayout, type ShadowOptions } from "../../src/index.js";
import { createNaiveHost } from "../../bench/naive/index.js";

export const RAM = 32 * 1024 * 1024;
export const GPU = "0000:00:02.0";
export const GUEST = 0x100_0000n;
export const PAGE = 0x1000n;

export interface Rig { h: Host; vmm: Process; c: Container; mdev: Mdev; dma: DmaApi; gtt: ShadowGtt; ram: bigint }

export interface RigOptions {
  twin?: boolean;
  arch?: Arch;
  /** Shadow options beyond dma. */
  shadow?: Omit<ShadowOptions, "dma">;
  /** Runs after the guest memory is mmapped, before it is mapped in the container. */
  before?: (h: Host, vmm: Process, ram: bigint) => void;
}

export async function shadowRig(layout: ShadowLayout, opts: RigOptions = {}): Promise<Rig> {
  const make = opts.twin ? createNaiveHost : createHost;
  const h = (await make({ ramSize: RAM, arch: opts.arch ?? "vtd" })) as unknown as Host;
  h.addDevice({ bdf: GPU, driver: "host", dmaMask: 39 });
  const mdev = h.createMdev({ parent: GPU });
  const vmm = h.createProcess();
  const c = h.openContainer({ process: vmm });
  h.openGroup(mdev.group).setContainer(c);
  c.setIommu("type1v2");
  const ram = vmm.mmap(GUEST);
  opts.before?.(h, vmm, ram);
  c.mapDma({ vaddr: ram, iova: 0n, size: GUEST, read: true, write: true });
  const dma = h.dmaApi(GPU);
  const gtt = mdev.shadowGtt(layout, { dma, ...opts.shadow });
  return { h, vmm, c, mdev, dma, gtt, ram };
}
