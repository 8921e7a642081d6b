// Per-call cases (issue 16): what a device model pays for one translation or
// one small DMA from its own arrays, a call per access, with every access an
// IOTLB hit (x86-64 4-level domain, 1024 mapped 4 KiB pages). Each case runs
// on the engine and the twin; the limits are the same copies with no IOMMU
// at all: a plain Uint8Array as large as the host's RAM, copied at the same
// offsets the DMA reaches, as an emulator without an IOMMU copies.
import { createHost, PAGE_4K, type Domain, type Host } from "../src/index.js";
import { createNaiveHost } from "./naive/index.js";
import { IOVA_BASE, RAM_SIZE, nestedDomain, pagedDomain, vfioSetup, xorshift, type HostLike, type VfioHostLike } from "./fixtures.js";
import type { Case, Limit } from "./cases.js";

const PAGES = 1024;
const CALLS = 1024;

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`benchmark fixture is broken: ${what}`);
}

/** The calls a per-call case makes on a domain or a device's DMA port (the engine's, or the twin's). */
interface PortLike {
  readInto(iova: number | bigint, target: Uint8Array, opts?: { pasid?: number }): { bytes: number };
  write(iova: number | bigint, bytes: Uint8Array): { bytes: number };
  read(iova: number | bigint, len: number): { bytes: number };
}
interface DomainCalls {
  dma: PortLike;
  translate(iova: number | bigint, access?: string): unknown;
  translateHpa(iova: number | bigint, access?: string): number;
  pageTable: { iovaToPhys(iova: bigint): bigint | undefined };
}

/** CALLS addresses as numbers: random pages, each at a random `len`-aligned offset that keeps the access in its page. */
function addresses(len: number, seed: number): number[] {
  const rnd = xorshift(seed);
  return Array.from({ length: CALLS }, () => {
    const r = rnd.next().value as number;
    return Number(IOVA_BASE) + (r % PAGES) * 4096 + (((r >>> 16) % (4096 / len)) * len);
  });
}

/** A plain copy of RAM (the unprotected device model's guest memory) and the RAM offset of each address. */
function unprotected(host: Host, domain: DomainCalls, iovas: number[]): { mem: Uint8Array; offsets: number[] } {
  const mem = host.ram.read(0n, Number(RAM_SIZE));
  return { mem, offsets: iovas.map((iova) => Number(domain.pageTable.iovaToPhys(BigInt(iova))!)) };
}

async function domains(): Promise<{ eh: Host; ed: DomainCalls; nd: DomainCalls }> {
  const eh = await createHost({ ramSize: RAM_SIZE });
  const nh = await createNaiveHost({ ramSize: RAM_SIZE });
  const ed = pagedDomain(eh as unknown as HostLike, 4, PAGES) as unknown as DomainCalls;
  const nd = pagedDomain(nh as unknown as HostLike, 4, PAGES) as unknown as DomainCalls;
  return { eh, ed, nd };
}

/** readInto of `len` bytes into a plain array, a call per access, against `dst.set(mem.subarray(o, o + len))`. */
function readCase(name: string, limitName: string, len: number, eh: Host, ed: DomainCalls, nd: DomainCalls, port = (d: DomainCalls) => d.dma): { c: Case; limit: Limit } {
  const iovas = addresses(len, len);
  const eBuf = new Uint8Array(len), nBuf = new Uint8Array(len);
  const { mem, offsets } = unprotected(eh, ed, iovas);
  const ePort = port(ed), nPort = port(nd);
  for (const iova of iovas.slice(0, 8)) check(ePort.readInto(iova, eBuf).bytes === len && nPort.readInto(iova, nBuf).bytes === len, `${name} short`);
  const dst = new Uint8Array(len);
  return {
    c: {
      name, unit: `${len} B read`, items: CALLS,
      engine: () => { for (const iova of iovas) ePort.readInto(iova, eBuf); },
      naive: () => { for (const iova of iovas) nPort.readInto(iova, nBuf); },
    },
    limit: { name: limitName, unit: `${len} B copy`, items: CALLS, bounds: name, run: () => { for (const o of offsets) dst.set(mem.subarray(o, o + len), 0); } },
  };
}

export async function perCallSuite(): Promise<{ cases: Case[]; limits: Limit[] }> {
  const { eh, ed, nd } = await domains();
  const cases: Case[] = [];
  const limits: Limit[] = [];
  const add = (r: { c: Case; limit?: Limit }) => { cases.push(r.c); if (r.limit) limits.push(r.limit); };

  // One address, one call: the fastest public translation, and translate() with its result object.
  const iovas = addresses(8, 3);
  check(iovas.every((iova) => ed.translateHpa(iova) === nd.translateHpa(iova) && ed.translateHpa(iova) >= 0), "translate-1 disagrees");
  add({ c: {
    name: "translate-1", unit: "translation", items: CALLS,
    engine: () => { for (const iova of iovas) ed.translateHpa(iova); },
    naive: () => { for (const iova of iovas) nd.translateHpa(iova); },
  } });
  const bigIovas = iovas.map(BigInt);
  add({ c: {
    name: "translate-call", unit: "translation", items: CALLS,
    engine: () => { for (const iova of bigIovas) ed.translate(iova); },
    naive: () => { for (const iova of bigIovas) nd.translate(iova); },
  } });

  add(readCase("dma-16b-plain", "js-copy-16b", 16, eh, ed, nd));
  add(readCase("dma-64b-plain", "js-copy-64b", 64, eh, ed, nd));
  add(readCase("dma-4k-plain", "js-copy-4k", 4096, eh, ed, nd));

  // A 64-byte write from a plain array, against mem.set(src, o).
  const wIovas = addresses(64, 5);
  const src = Uint8Array.from({ length: 64 }, (_, i) => i);
  const { mem, offsets } = unprotected(eh, ed, wIovas);
  add({
    c: {
      name: "dma-write-64b-plain", unit: "64 B write", items: CALLS,
      engine: () => { for (const iova of wIovas) ed.dma.write(iova, src); },
      naive: () => { for (const iova of wIovas) nd.dma.write(iova, src); },
    },
    limit: { name: "js-set-64b", unit: "64 B copy", items: CALLS, bounds: "dma-write-64b-plain", run: () => { for (const o of offsets) mem.set(src, o); } },
  });

  // read() allocates its result: against dma-64b-plain.
  const rIovas = addresses(64, 6);
  add({ c: {
    name: "dma-read-64b", unit: "64 B read", items: CALLS,
    engine: () => { for (const iova of rIovas) ed.dma.read(iova, 64); },
    naive: () => { for (const iova of rIovas) nd.dma.read(iova, 64); },
  } });

  // The same 64-byte read through other doors: a PASID-tagged request (on domains of its own, so its
  // 1024 IOTLB entries do not share the cache with the untagged cases'), a nested domain, a VFIO device.
  const pasidSide = await domains();
  const pasidBuf = new Uint8Array(64), nPasidBuf = new Uint8Array(64), pIovas = addresses(64, 7);
  // The options a device model passes with every call, frozen (their keys are checked once);
  // plain_opts_ns: the same calls with an unfrozen options object (its keys checked every call).
  const tagged = Object.freeze({ pasid: 5 }), plainTagged = { pasid: 5 };
  add({ c: {
    name: "dma-64b-plain-pasid", unit: "64 B read", items: CALLS,
    engine: () => { for (const iova of pIovas) pasidSide.ed.dma.readInto(iova, pasidBuf, tagged); },
    naive: () => { for (const iova of pIovas) pasidSide.nd.dma.readInto(iova, nPasidBuf, tagged); },
    variant: { field: "plain_opts_ns", run: () => { for (const iova of pIovas) pasidSide.ed.dma.readInto(iova, pasidBuf, plainTagged); } },
  } });
  add(await nestedRead());
  add(await deviceRead());
  return { cases, limits };
}

/** 64-byte reads through a nested domain (x86-64 over VT-d second level), every access an IOTLB hit. */
async function nestedRead(): Promise<{ c: Case }> {
  const eh = await createHost({ ramSize: RAM_SIZE });
  const nh = await createNaiveHost({ ramSize: RAM_SIZE });
  const gvas = Array.from({ length: PAGES }, (_, i) => IOVA_BASE + BigInt(i) * PAGE_4K);
  type RamHost = Parameters<typeof nestedDomain>[0];
  const ed = nestedDomain(eh as unknown as RamHost, gvas) as unknown as Domain, nd = nestedDomain(nh as unknown as RamHost, gvas) as unknown as Domain;
  const iovas = addresses(64, 8);
  const eBuf = new Uint8Array(64), nBuf = new Uint8Array(64);
  check(iovas.every((iova) => ed.dma.readInto(iova, eBuf).bytes === 64 && nd.dma.readInto(iova, nBuf).bytes === 64), "dma-64b-plain-nested short");
  return { c: {
    name: "dma-64b-plain-nested", unit: "64 B read", items: CALLS,
    engine: () => { for (const iova of iovas) ed.dma.readInto(iova, eBuf); },
    naive: () => { for (const iova of iovas) nd.dma.readInto(iova, nBuf); },
  } };
}

/** 64-byte reads by a VFIO device behind a type1 container mapping 4 MiB of a process. */
async function deviceRead(): Promise<{ c: Case }> {
  const [eh, nh] = [await createHost({ ramSize: RAM_SIZE }), await createNaiveHost({ ramSize: RAM_SIZE })] as unknown as VfioHostLike[];
  const bytes = BigInt(PAGES) * PAGE_4K;
  const [ePort, nPort] = [eh, nh].map((host) => {
    const side = vfioSetup(host, bytes);
    side.container.mapDma({ vaddr: side.vaddr, iova: IOVA_BASE, size: bytes, read: true, write: true });
    return side.dma as unknown as PortLike;
  });
  const iovas = addresses(64, 9);
  const eBuf = new Uint8Array(64), nBuf = new Uint8Array(64);
  check(iovas.every((iova) => ePort.readInto(iova, eBuf).bytes === 64 && nPort.readInto(iova, nBuf).bytes === 64), "device-dma-64b-plain short");
  return { c: {
    name: "device-dma-64b-plain", unit: "64 B read", items: CALLS,
    engine: () => { for (const iova of iovas) ePort.readInto(iova, eBuf); },
    naive: () => { for (const iova of iovas) nPort.readInto(iova, nBuf); },
  } };
}
