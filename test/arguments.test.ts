// The argument-checking layer (src/args.ts) at the public calls the issues
// named: misspelled keys and wrong-typed values are refusals naming them
// (with a suggestion), never silent defaults; non-objects are not taken as
// {}; byte and typed-array arguments are checked before anything moves; and
// a refused call changes nothing (no frame leaked, no walk, no IOTLB fill).
import { describe, expect, it } from "vitest";
import { createHost, IommuError, type Host } from "../src/index.js";
import { errno } from "./support/outcome.js";

/** The errno and message a call throws. */
function refusal(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (e) {
    if (e instanceof IommuError) return { code: e.code, message: e.message };
    throw e;
  }
  return { code: "no error", message: "" };
}

/** What a refusal must not change. */
function fingerprint(h: Host): string {
  return JSON.stringify({ iotlb: h.iotlb.stats(), faults: h.faults.pending, frames: h.ram.framesFree, pasids: h.pasids.stats() });
}

describe("options objects", () => {
  it("a misspelled key is EINVAL naming it, with the key it was probably meant to be", async () => {
    expect(await createHost({ ramsize: 1 << 24 } as never).catch((e: IommuError) => e.message)).toMatch(/no option "ramsize" \(did you mean ramSize\?\)/);
    expect(await createHost({ ramSiez: 1 << 24 } as never).catch((e: IommuError) => e.code)).toBe("EINVAL");
    const h = await createHost({ ramSize: 1 << 24 });
    const pt = h.createPageTable({ format: "x86-64" });
    expect(refusal(() => pt.map(0x1000n, 0x1000n, 0x1000n, { wriet: true } as never)).message).toMatch(/"wriet" \(did you mean write\?\)/);
    expect(pt.iovaToPhys(0x1000n)).toBeUndefined();
    const d = h.createDomain({ pageTable: pt });
    expect(refusal(() => d.translate(0n, "read", { pasdi: 1 } as never)).message).toMatch(/"pasdi" \(did you mean pasid\?\)/);
    expect(refusal(() => d.dma.read(0n, 4, { pasdi: 1 } as never)).message).toMatch(/did you mean pasid/);
    expect(refusal(() => d.invalidate({ pasdi: 1 } as never)).message).toMatch(/did you mean pasid/);
  });

  it("mapDma({ reda: true, write: true }) is refused, not a write-only mapping", async () => {
    const h = await createHost({ ramSize: 1 << 24 });
    h.addDevice({ bdf: "0000:01:00.0" });
    const p = h.createProcess();
    const v = p.mmap(0x10000);
    const c = h.openContainer({ process: p });
    h.openGroup(0).setContainer(c);
    c.setIommu("type1v2");
    expect(refusal(() => c.mapDma({ vaddr: v, iova: 0n, size: 0x10000, reda: true, write: true } as never)).message).toMatch(/"reda" \(did you mean read\?\)/);
    expect(c.mappings()).toEqual([]);
    expect(p.lockedBytes).toBe(0n);
  });

  it("values of the wrong type are refused, not coerced by truthiness", async () => {
    const h = await createHost({ ramSize: 1 << 24 });
    const pt = h.createPageTable({ format: "x86-64" });
    expect(refusal(() => pt.map(0x1000n, 0x1000n, 0x1000n, { write: "4" } as never)).message).toMatch(/prot.write must be true or false, got "4"/);
    expect(errno(() => h.createPageTable({ levels: "4" } as never))).toBe("EINVAL");
    expect(refusal(() => h.createPageTable({ levels: "4" } as never)).message).toContain('got "4"');
    expect(await createHost({ allowUnsafeInterrupts: 1 } as never).catch((e: IommuError) => e.code)).toBe("EINVAL");
  });

  it("a stage the format does not have is refused: x86-64 has none, vtd-sl is a second stage", async () => {
    const h = await createHost({ ramSize: 1 << 24 });
    const free = h.ram.framesFree;
    expect(errno(() => h.createPageTable({ format: "x86-64", stage: 1 }))).toBe("EINVAL");
    for (const stage of [1, 3]) expect(errno(() => h.createPageTable({ format: "vtd-sl", stage } as never))).toBe("EINVAL");
    expect(h.ram.framesFree).toBe(free);
    expect(errno(() => h.createPageTable({ format: "vtd-sl", stage: 2 }).destroy())).toBe("no error");
  });

  it("non-objects are not taken as {}", async () => {
    expect(await createHost(true as never).catch((e: IommuError) => e.code)).toBe("EINVAL");
    expect(await createHost(null as never).catch((e: IommuError) => e.code)).toBe("EINVAL");
    const h = await createHost({ ramSize: 1 << 24 });
    expect(errno(() => h.openContainer("0x1000" as never))).toBe("EINVAL");
    expect(errno(() => h.createPageTable(null as never))).toBe("EINVAL");
    expect(errno(() => h.createProcess(null as never))).toBe("EINVAL");
    const d = h.createDomain({ format: "x86-64" });
    expect(errno(() => d.dma.read(0n, 4, "hello" as never))).toBe("EINVAL");
    expect(errno(() => d.translate(0n, "read", null as never))).toBe("EINVAL");
  });

  it("a throwing getter or a revoked proxy as options is EINVAL, and the message never throws", async () => {
    const h = await createHost({ ramSize: 1 << 24 });
    const d = h.createDomain({ format: "x86-64" });
    const getter = Object.defineProperty({}, "pasid", { enumerable: true, get() { throw new Error("boom"); } });
    expect(errno(() => d.dma.read(0n, 4, getter))).toBe("EINVAL");
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    expect(errno(() => d.dma.read(0n, 4, proxy))).toBe("EINVAL");
    expect(errno(() => h.device(Symbol("x") as never))).toBe("EINVAL");
    expect(errno(() => h.ram.read(Symbol("x") as never, 4))).toBe("EINVAL");
    expect(errno(() => h.device((2n ** 64n - 1n) as never))).toBe("EINVAL");
  });
});

describe("bytes, lengths, typed arrays and callbacks", () => {
  it("byte arguments must be Uint8Arrays: strings, arrays, null and other typed arrays are EINVAL", async () => {
    const h = await createHost({ ramSize: 1 << 24 });
    const before = h.ram.read(0x1000n, 8);
    for (const bad of ["read", "4", [1, 2], null, new BigUint64Array(1), new Uint32Array(2)]) {
      expect(errno(() => h.ram.write(0x1000n, bad as never))).toBe("EINVAL");
    }
    expect(h.ram.read(0x1000n, 8)).toEqual(before);
    const d = h.createDomain({ format: "x86-64" });
    d.pageTable.map(0n, 0x100000n, 0x1000n, { write: true });
    for (const bad of ["hello", [1, 2], null]) expect(errno(() => d.dma.write(0n, bad as never))).toBe("EINVAL");
  });

  it("lengths are checked before anything is allocated: Infinity, 2^53, 2^64 and bigints", async () => {
    const h = await createHost({ ramSize: 1 << 24 });
    const p = h.createProcess();
    const v = p.mmap(0x1000);
    for (const len of [Infinity, 2 ** 53, 2 ** 64, -1, 1.5]) expect(errno(() => p.read(v, len))).toBe("EINVAL");
    expect(p.read(v, 4n as never)).toHaveLength(4);
    expect(errno(() => h.ram.read(0n, Infinity))).toBe("EINVAL");
  });

  it("a huge DMA read allocates only what it read", async () => {
    const h = await createHost({ ramSize: 1 << 24 });
    const d = h.createDomain({ format: "x86-64" });
    d.pageTable.map(0n, 0x100000n, 0x2000n);
    const r = d.dma.read(0n, 0xffffffff);
    expect(r.bytes).toBe(0x2000);
    expect(r.data.length).toBe(0x2000);
    expect(r.fault?.reason).toBe("not-present");
  });

  it("translateBatch and readInto refuse the wrong arrays before they translate anything", async () => {
    const h = await createHost({ ramSize: 1 << 24 });
    const d = h.createDomain({ format: "x86-64" });
    d.pageTable.map(0n, 0x100000n, 0x10000n, { write: true });
    const iovas = new BigUint64Array([0n, 0x1000n, 0x5000000n]);
    const before = fingerprint(h);
    expect(errno(() => d.translateBatch(iovas, "read", [] as never, new Uint8Array(3)))).toBe("EINVAL");
    expect(errno(() => d.translateBatch(iovas, "read", new BigUint64Array(3), new Uint32Array(3) as never))).toBe("EINVAL");
    expect(errno(() => d.translateBatch(NaN as never, "read", new BigUint64Array(3), new Uint8Array(3)))).toBe("EINVAL");
    expect(errno(() => d.dma.readInto(0n, new Uint32Array(4) as never))).toBe("EINVAL");
    expect(errno(() => d.dma.sg([{ iova: 0n, length: 4 }], new Uint32Array(4) as never, { direction: "read" }))).toBe("EINVAL");
    expect(fingerprint(h)).toBe(before);
  });

  it("createProcess checks its options before it makes a page table: no frame leaks", async () => {
    const h = await createHost({ ramSize: 1 << 24 });
    const frames = h.ram.framesFree;
    for (const bad of [{ memlockLimit: -1 }, { memlockLimt: 1 }, "x", 7]) expect(errno(() => h.createProcess(bad as never))).toBe("EINVAL");
    expect(h.ram.framesFree).toBe(frames);
  });

  it("onInterrupt takes a function only, so a later MSI write cannot throw a TypeError", async () => {
    const h = await createHost({ ramSize: 1 << 24 });
    expect(errno(() => h.onInterrupt(-1 as never))).toBe("EINVAL");
    h.addDevice({ bdf: "0000:01:00.0" });
    const p = h.createProcess();
    const c = h.openContainer({ process: p });
    const g = h.openGroup(0);
    g.setContainer(c);
    c.setIommu("type1v2");
    const dev = g.device("0000:01:00.0");
    expect(dev.dma.write(dev.msiAddress!, new Uint8Array([1, 0, 0, 0])).interrupt?.data).toBe(1);
  });

  it("arrays are arrays: c.invalidate(2n ** 63n), c.allowIovas(1.5), addDevice({ reserved: 0x7fffffff }), createHost({ platformReserved: '4' })", async () => {
    expect(await createHost({ platformReserved: "4" } as never).catch((e: IommuError) => e.code)).toBe("EINVAL");
    const h = await createHost({ ramSize: 1 << 24 });
    expect(errno(() => h.addDevice({ bdf: "0000:01:00.0", reserved: 0x7fffffff } as never))).toBe("EINVAL");
    h.addDevice({ bdf: "0000:01:00.0" });
    const c = h.openContainer({ process: h.createProcess() });
    h.openGroup(0).setContainer(c);
    c.setIommu("nesting");
    expect(errno(() => c.invalidate(2n ** 63n as never))).toBe("EINVAL");
    expect(errno(() => c.allowIovas(1.5 as never))).toBe("EINVAL");
    expect(errno(() => c.dirty.bitmap(null as never))).toBe("EINVAL");
    expect(errno(() => c.mapDma(undefined as never))).toBe("EINVAL");
  });
});

describe("objects of this host only, and batches all or nothing", () => {
  it("createDomain over a page table or stage 2 of another host, or a look-alike, is EINVAL", async () => {
    const h = await createHost({ ramSize: 1 << 24 }), other = await createHost({ ramSize: 1 << 24 });
    const foreignS2 = other.createDomain({ format: "vtd-sl", inputBits: 48 });
    expect(errno(() => h.createDomain({ stage2: foreignS2, format: "x86-64", root: 0x1000n }))).toBe("EINVAL");
    expect(errno(() => h.createDomain({ pageTable: other.createPageTable({ format: "x86-64" }) }))).toBe("EINVAL");
    expect(errno(() => h.createDomain({ stage2: { id: 1, format: foreignS2.format } as never, format: "x86-64", root: 0x1000n }))).toBe("EINVAL");
    const s2 = h.createDomain({ format: "vtd-sl", inputBits: 48 });
    expect(errno(() => h.createDomain({ stage2: s2, format: "x86-64", root: 0x1000n }))).toBe("no error");
  });

  it("freeTranslationBatch frees nothing unless all three arrays are this host's; a batch that does not fit takes nothing", async () => {
    const h = await createHost({ ramSize: 1 << 24, bufferArenaSize: 64 * 1024 });
    const batch = h.createTranslationBatch(16);
    expect(errno(() => h.freeTranslationBatch({ ...batch, status: new Uint8Array(16) }))).toBe("EINVAL");
    // Nothing was freed: the whole batch still frees once, and then not again.
    expect(errno(() => h.freeTranslationBatch(batch))).toBe("no error");
    expect(errno(() => h.freeTranslationBatch(batch))).toBe("EINVAL");
    // 3900 entries need 31200 + 31200 + 3900 bytes of a 64 KiB arena: the third does not fit after the first two. Both go back.
    expect(errno(() => h.createTranslationBatch(3900))).toBe("ENOMEM");
    expect(errno(() => h.allocBuffer(64 * 1024))).toBe("no error");
  });
});
