// The setting of the shadow GTT tests: a host with a GPU its vendor driver
// owns, an mdev on it whose group is in the VMM's container, 16 MiB of guest
// memory mapped at GPA 0, and a shadow of the given layout over the GPU's DMA
// API; on the engine or on the naive twin.
import { Buffer } from "node:buffer";
import { expect } from "vitest";
import { createHost, IommuError, type Arch, type Container, type DmaApi, type Host, type Mdev, type Process, type ShadowGtt, type ShadowLayout, type ShadowOptions } from "../../src/index.js";
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
  /** Guest memory is mapped in the container as mappings of this many bytes (default: one mapping). */
  chunk?: bigint;
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
  const chunk = opts.chunk ?? GUEST;
  for (let at = 0n; at < GUEST; at += chunk) c.mapDma({ vaddr: ram + at, iova: at, size: chunk, read: true, write: true });
  const dma = h.dmaApi(GPU);
  const gtt = mdev.shadowGtt(layout, { dma, ...opts.shadow });
  return { h, vmm, c, mdev, dma, gtt, ram };
}

/** One random operation: its values drawn once, then applied to each side alike. */
export type MixOp = () => (r: Rig) => unknown;

/**
 * The engine's rig and the twin's driven by the same `steps` operations
 * (picked with rnd): after each, the results (or errnos), the shadow's stats
 * and the DMA API's live mappings must be equal, and at the end the RAM
 * image. The vendor's own unmap callback lets go of what it pinned. Returns
 * how often the engine's results were ok, a fault at each stage, or each
 * errno; a mix needs faults at the device MMU, successes and refusals, and
 * never an IOMMU fault (nothing stale).
 */
export function shadowMix(sides: Rig[], ops: MixOp[], steps: number, rnd: (n: number) => number): Map<string, number> {
  for (const r of sides) r.mdev.onDmaUnmap((iova, size) => { for (let p = 0n; p < size; p += 512n * PAGE) r.mdev.unpinPages(iova + p, Number((size - p) / PAGE > 512n ? 512n : (size - p) / PAGE)); });
  const kinds = new Map<string, number>();
  for (let step = 0; step < steps; step++) {
    const op = ops[rnd(ops.length)]();
    const out = sides.map((r) => {
      try {
        const v = op(r);
        return JSON.stringify(v, (_, x) => (typeof x === "bigint" ? `0x${x.toString(16)}` : x instanceof BigUint64Array ? [...x].map(String) : x)) ?? "void";
      } catch (e) {
        if (e instanceof IommuError) return e.code;
        throw e;
      }
    });
    expect(out[1], `step ${step}`).toBe(out[0]);
    const kind = out[0].includes("device-mmu") ? "device-mmu" : out[0].includes("\"iommu\"") ? "iommu" : /^E/.test(out[0]) ? out[0] : "ok";
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
    expect(sides[1].gtt.stats(), `stats after step ${step}`).toEqual(sides[0].gtt.stats());
    expect(sides[1].dma.stats().live).toBe(sides[0].dma.stats().live);
  }
  const [a, b] = sides.map((r) => r.h.ram.view(0n, RAM));
  expect(Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length))).toBe(true);
  for (const k of ["device-mmu", "ok", "EINVAL"]) expect(kinds.get(k) ?? 0, k).toBeGreaterThan(0);
  // Nothing stale: a shadow entry never outlives its mapping, so the GPU never gets as far as an IOMMU fault.
  expect(kinds.get("iommu") ?? 0).toBe(0);
  return kinds;
}
