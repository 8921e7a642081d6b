// Host physical memory and host options: createHost validation, host.ram
// accessors (checked addresses, zero-copy views, u64 accessors), the frame
// allocator and the buffer arena. Every failed call must leave RAM as it was.
import { describe, expect, it } from "vitest";
import { createHost, IommuError, type Host, type HostOptions } from "../src/index.js";
import { errno as errnoOf } from "./support/outcome.js";
import { seededBytes } from "./support/bytes.js";

const MiB = 1024 * 1024;
const PAGE = 4096;
const U64_MAX = (1n << 64n) - 1n;


async function hostErrno(options: HostOptions): Promise<string> {
  try {
    await createHost(options);
  } catch (e) {
    expect(e).toBeInstanceOf(IommuError);
    return (e as IommuError).code;
  }
  throw new Error(`createHost(${JSON.stringify(options, (_k, v) => (typeof v === "bigint" ? `${v}n` : v))}) did not throw`);
}

/** Index of the first differing byte, or -1 when a and b are equal. */
function firstDiff(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  if (Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length))) return -1;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/** Fills all of RAM with a pseudo-random pattern in which no byte is zero. */
function scribble(host: Host, seed = 1): void {
  const v = host.ram.view(0, Number(host.ram.size));
  // A block of odd length, repeated: neighbouring pages differ.
  const block = seededBytes(seed, 65537).map((b) => b | 1);
  for (let off = 0; off < v.length; off += block.length) v.set(block.subarray(0, Math.min(block.length, v.length - off)), off);
}

const allZero = (a: Uint8Array): boolean => a.every((b) => b === 0);

describe("createHost option validation", () => {
  it("accepts a small valid configuration and reports it", async () => {
    const host = await createHost({ ramSize: 16 * MiB, iotlb: { sets: 16, ways: 1 }, faultRingSize: 16, bufferArenaSize: 8192 });
    expect(host.ram.size).toBe(BigInt(16 * MiB));
    expect(host.iotlb.sets).toBe(16);
    expect(host.iotlb.ways).toBe(1);
    expect(host.iotlb.entries).toBe(16);
    expect(host.faults.size).toBe(16);
    expect(host.ram.framesFree).toBe((16 * MiB) / PAGE);
  });

  it("accepts the bounds: 4 KiB of RAM (as a bigint), 65536 sets, 16 ways, a 65536-record ring", async () => {
    const host = await createHost({ ramSize: 4096n, iotlb: { sets: 65536, ways: 16 }, faultRingSize: 65536 });
    expect(host.ram.size).toBe(4096n);
    expect(host.ram.framesFree).toBe(1);
    expect(host.iotlb.entries).toBe(65536 * 16);
    expect(host.faults.size).toBe(65536);
  });

  it.each([
    ["zero", 0],
    ["zero (bigint)", 0n],
    ["not a 4 KiB multiple", 16 * MiB + 512],
    ["smaller than a page", 2048],
    ["not a 4 KiB multiple (bigint)", 0x100001n],
    ["above 3 GiB", 0xc0001000],
    ["above 3 GiB (bigint)", 0x100000000n],
    ["negative", -4096],
    ["fractional", 4096.5],
    ["NaN", Number.NaN],
  ] as const)("ramSize %s → EINVAL", async (_name, ramSize) => {
    expect(await hostErrno({ ramSize: ramSize as number | bigint })).toBe("EINVAL");
  });

  it.each([
    ["sets not a power of two", { sets: 24 }],
    ["sets 48", { sets: 48 }],
    ["sets below 16", { sets: 8 }],
    ["sets above 65536", { sets: 131072 }],
    ["sets zero", { sets: 0 }],
    ["sets fractional", { sets: 16.5 }],
    ["ways zero", { ways: 0 }],
    ["ways 17", { ways: 17 }],
    ["ways negative", { ways: -1 }],
    ["ways fractional", { ways: 2.5 }],
  ])("iotlb %s → EINVAL", async (_name, iotlb) => {
    expect(await hostErrno({ ramSize: 16 * MiB, iotlb })).toBe("EINVAL");
  });

  it.each([
    ["not a power of two", 100],
    ["not a power of two (1000)", 1000],
    ["below 16", 8],
    ["zero", 0],
    ["above 65536", 131072],
    ["fractional", 16.5],
  ])("faultRingSize %s → EINVAL", async (_name, faultRingSize) => {
    expect(await hostErrno({ ramSize: 16 * MiB, faultRingSize })).toBe("EINVAL");
  });

  it("bufferArenaSize negative or fractional → EINVAL", async () => {
    expect(await hostErrno({ ramSize: 16 * MiB, bufferArenaSize: -1 })).toBe("EINVAL");
    expect(await hostErrno({ ramSize: 16 * MiB, bufferArenaSize: 100.5 })).toBe("EINVAL");
  });
});

describe("host.ram accessors", () => {
  it("write then read round-trips, at number and bigint addresses", async () => {
    const host = await createHost({ ramSize: 16 * MiB });
    const data = Uint8Array.from({ length: 300 }, (_, i) => (i * 7 + 3) & 0xff);
    host.ram.write(0x1f80, data); // crosses a page boundary
    expect(host.ram.read(0x1f80, 300)).toEqual(data);
    expect(host.ram.read(0x1f80n, 300)).toEqual(data);
    // Reads at an offset see the right bytes.
    expect(Array.from(host.ram.read(0x2000n, 4))).toEqual(Array.from(data.subarray(0x80, 0x84)));
    host.ram.write(0x3000n, new Uint8Array([1, 2, 3, 250]));
    expect(Array.from(host.ram.read(0x3000, 4))).toEqual([1, 2, 3, 250]);
    // Neighbours of the write are untouched.
    expect(host.ram.read(0x1f7f, 1)[0]).toBe(0);
    expect(host.ram.read(0x1f80 + 300, 1)[0]).toBe(0);
  });

  it("read returns a copy: changing it does not change RAM", async () => {
    const host = await createHost({ ramSize: 16 * MiB });
    host.ram.write(0x4000, new Uint8Array([9, 8, 7]));
    const copy = host.ram.read(0x4000, 3);
    copy[0] = 0x55;
    expect(Array.from(host.ram.read(0x4000, 3))).toEqual([9, 8, 7]);
  });

  it("works at the last bytes of RAM", async () => {
    const host = await createHost({ ramSize: 16 * MiB });
    const end = 16 * MiB;
    host.ram.write(end - 4, new Uint8Array([0xde, 0xad, 0xbe, 0xef]));
    expect(Array.from(host.ram.read(BigInt(end - 4), 4))).toEqual([0xde, 0xad, 0xbe, 0xef]);
    host.ram.writeU64(end - 8, 0x1122334455667788n);
    expect(host.ram.readU64(BigInt(end - 8))).toBe(0x1122334455667788n);
    expect(host.ram.view(end - 1, 1)[0]).toBe(0x11);
  });

  it("view is zero-copy in both directions and stays valid", async () => {
    const host = await createHost({ ramSize: 16 * MiB });
    const v = host.ram.view(0x5000n, 64);
    expect(v.length).toBe(64);
    v[3] = 0xab;
    v[63] = 0xcd;
    expect(host.ram.read(0x5003, 1)[0]).toBe(0xab);
    expect(host.ram.read(0x503f, 1)[0]).toBe(0xcd);
    host.ram.write(0x5005, new Uint8Array([0x77, 0x78]));
    expect(v[5]).toBe(0x77);
    expect(v[6]).toBe(0x78);
    host.ram.writeU64(0x5008, 0x0102030405060708n);
    expect(Array.from(v.subarray(8, 16))).toEqual([8, 7, 6, 5, 4, 3, 2, 1]);
    // A second view of the same range aliases the first.
    const w = host.ram.view(0x5000, 64);
    w[10] = 0x99;
    expect(v[10]).toBe(0x99);
    // Other activity (allocating frames, page tables) does not detach it.
    host.ram.allocFrames(4);
    host.createPageTable().map(0x1000, 0x5000, 0x1000);
    v[20] = 0x42;
    expect(host.ram.read(0x5014, 1)[0]).toBe(0x42);
  });

  it("readU64/writeU64 round-trip little-endian, number and bigint values", async () => {
    const host = await createHost({ ramSize: 16 * MiB });
    host.ram.writeU64(0x6000, 0x0123456789abcdefn);
    expect(host.ram.readU64(0x6000)).toBe(0x0123456789abcdefn);
    expect(Array.from(host.ram.read(0x6000, 8))).toEqual([0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01]);
    host.ram.writeU64(0x6008n, U64_MAX);
    expect(host.ram.readU64(0x6008n)).toBe(U64_MAX);
    host.ram.writeU64(0x6010, Number.MAX_SAFE_INTEGER);
    expect(host.ram.readU64(0x6010)).toBe(BigInt(Number.MAX_SAFE_INTEGER));
    host.ram.write(0x6018, new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0x80]));
    expect(host.ram.readU64(0x6018n)).toBe(0x8000000000000001n);
  });

  describe("failed calls throw the right errno and leave RAM unchanged", () => {
    const size = 4 * MiB;

    async function prepared(): Promise<{ host: Host; before: Uint8Array }> {
      const host = await createHost({ ramSize: size });
      scribble(host, 7);
      return { host, before: host.ram.read(0, size) };
    }

    const cases: [string, string, (h: Host) => unknown][] = [
      // out of range
      ["read past the end", "EFAULT", (h) => h.ram.read(size - 4, 8)],
      ["read starting at the end", "EFAULT", (h) => h.ram.read(size, 1)],
      ["read far beyond RAM", "EFAULT", (h) => h.ram.read(0x100000000n, 1)],
      ["write past the end", "EFAULT", (h) => h.ram.write(size - 2, new Uint8Array([1, 2, 3]))],
      ["write far beyond RAM (bigint)", "EFAULT", (h) => h.ram.write(BigInt(size) + 0x1000n, new Uint8Array([1]))],
      ["view past the end", "EFAULT", (h) => h.ram.view(size - PAGE, 2 * PAGE)],
      ["readU64 at the end", "EFAULT", (h) => h.ram.readU64(size)],
      ["writeU64 straddling the end", "EFAULT", (h) => h.ram.writeU64(size - 4, 1n)],
      ["writeU64 beyond RAM", "EFAULT", (h) => h.ram.writeU64(BigInt(size) + 8n, 1n)],
      // wrap past 2^64
      ["read wrapping 2^64", "EOVERFLOW", (h) => h.ram.read(U64_MAX, 2)],
      ["write wrapping 2^64", "EOVERFLOW", (h) => h.ram.write(U64_MAX - 3n, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]))],
      ["view wrapping 2^64", "EOVERFLOW", (h) => h.ram.view(U64_MAX - 15n, 64)],
      ["readU64 wrapping 2^64", "EOVERFLOW", (h) => h.ram.readU64(U64_MAX - 3n)],
      ["writeU64 wrapping 2^64", "EOVERFLOW", (h) => h.ram.writeU64(U64_MAX - 3n, 5n)],
      // bad addresses
      ["read at a negative number", "EINVAL", (h) => h.ram.read(-1, 1)],
      ["read at a negative bigint", "EINVAL", (h) => h.ram.read(-4096n, 1)],
      ["read at a fractional address", "EINVAL", (h) => h.ram.read(4096.5, 1)],
      ["read at an unsafe number", "EINVAL", (h) => h.ram.read(2 ** 53, 1)],
      ["read at NaN", "EINVAL", (h) => h.ram.read(Number.NaN, 1)],
      ["read at 2^64", "EINVAL", (h) => h.ram.read(1n << 64n, 1)],
      ["write at a negative number", "EINVAL", (h) => h.ram.write(-8, new Uint8Array([1]))],
      ["write at a fractional address", "EINVAL", (h) => h.ram.write(0.5, new Uint8Array([1]))],
      ["write at an unsafe number", "EINVAL", (h) => h.ram.write(2 ** 60, new Uint8Array([1]))],
      ["write at a string", "EINVAL", (h) => h.ram.write("4096" as unknown as number, new Uint8Array([1]))],
      ["view at a negative number", "EINVAL", (h) => h.ram.view(-1, 4)],
      ["view at Infinity", "EINVAL", (h) => h.ram.view(Number.POSITIVE_INFINITY, 4)],
      ["readU64 at a negative bigint", "EINVAL", (h) => h.ram.readU64(-8n)],
      ["writeU64 at a fractional address", "EINVAL", (h) => h.ram.writeU64(8.25, 1n)],
      ["writeU64 at an unsafe number", "EINVAL", (h) => h.ram.writeU64(2 ** 53 + 8, 1n)],
      // bad lengths
      ["read of a negative length", "EINVAL", (h) => h.ram.read(0, -1)],
      ["read of a fractional length", "EINVAL", (h) => h.ram.read(0, 1.5)],
      ["view of a NaN length", "EINVAL", (h) => h.ram.view(0, Number.NaN)],
      // misaligned u64
      ["readU64 misaligned by 4", "EINVAL", (h) => h.ram.readU64(0x1004)],
      ["readU64 misaligned by 1 (bigint)", "EINVAL", (h) => h.ram.readU64(0x1001n)],
      ["writeU64 misaligned by 1", "EINVAL", (h) => h.ram.writeU64(0x2001, 0xffn)],
      ["writeU64 misaligned by 6", "EINVAL", (h) => h.ram.writeU64(0x2006n, 0x1234n)],
      // bad values
      ["writeU64 of 2^64", "EINVAL", (h) => h.ram.writeU64(0x3000, 1n << 64n)],
      ["writeU64 of 2^70", "EINVAL", (h) => h.ram.writeU64(0x3000, 1n << 70n)],
      ["writeU64 of -1n", "EINVAL", (h) => h.ram.writeU64(0x3000, -1n)],
      ["writeU64 of -1", "EINVAL", (h) => h.ram.writeU64(0x3000, -1)],
      ["writeU64 of a fraction", "EINVAL", (h) => h.ram.writeU64(0x3000, 1.5)],
      ["writeU64 of an unsafe number", "EINVAL", (h) => h.ram.writeU64(0x3000, 2 ** 64)],
    ];

    it.each(cases)("%s → %s", async (_name, code, call) => {
      const { host, before } = await prepared();
      expect(errnoOf(() => call(host))).toBe(code);
      expect(firstDiff(host.ram.read(0, size), before)).toBe(-1);
    });
  });
});

describe("frame allocator", () => {
  const size = 16 * MiB;
  const frames = size / PAGE;

  it("hands out zeroed frames, also after they were freed dirty", async () => {
    const host = await createHost({ ramSize: size });
    scribble(host, 3); // every byte of RAM is non-zero now
    expect(host.ram.framesFree).toBe(frames);
    const a = host.ram.allocFrames(4);
    expect(a % 4096n).toBe(0n);
    expect(a + 4n * 4096n).toBeLessThanOrEqual(BigInt(size));
    expect(host.ram.framesFree).toBe(frames - 4);
    expect(allZero(host.ram.read(a, 4 * PAGE))).toBe(true);
    // The byte just after the run was not zeroed.
    expect(host.ram.read(a + 4n * 4096n, 1)[0]).not.toBe(0);

    host.ram.view(a, 4 * PAGE).fill(0xee);
    host.ram.freeFrames(a, 4);
    expect(host.ram.framesFree).toBe(frames);
    // Every frame of RAM, the dirty ones included, comes back zeroed.
    const all = host.ram.allocFrames(frames);
    expect(all).toBe(0n);
    expect(host.ram.framesFree).toBe(0);
    expect(allZero(host.ram.read(0, size))).toBe(true);
  });

  it("allocates contiguous runs that do not overlap", async () => {
    const host = await createHost({ ramSize: size });
    const a = host.ram.allocFrames(3);
    const b = host.ram.allocFrames(8);
    const c = host.ram.allocFrames(1);
    const runs: [bigint, bigint][] = [[a, 3n], [b, 8n], [c, 1n]];
    for (const [s, n] of runs) {
      expect(s % 4096n).toBe(0n);
      expect(s + n * 4096n).toBeLessThanOrEqual(BigInt(size));
    }
    for (let i = 0; i < runs.length; i++) {
      for (let j = i + 1; j < runs.length; j++) {
        const [s1, n1] = runs[i], [s2, n2] = runs[j];
        expect(s1 + n1 * 4096n <= s2 || s2 + n2 * 4096n <= s1).toBe(true);
      }
    }
    expect(host.ram.framesFree).toBe(frames - 12);
    // Each frame of b's run is allocated: freeing them one by one works.
    for (let k = 0n; k < 8n; k++) host.ram.freeFrames(b + k * 4096n, 1);
    expect(host.ram.framesFree).toBe(frames - 4);
    // ...and freeing any of them again is refused.
    expect(errnoOf(() => host.ram.freeFrames(b + 4096n, 1))).toBe("EINVAL");
  });

  it("finds a run that fits among holes (first fit)", async () => {
    const host = await createHost({ ramSize: size });
    expect(host.ram.allocFrames(frames)).toBe(0n);
    // Two holes: frames 10..19 and 100..104 (15 free frames in all).
    host.ram.freeFrames(10 * PAGE, 10);
    host.ram.freeFrames(100n * 4096n, 5);
    expect(host.ram.framesFree).toBe(15);
    expect(host.ram.allocFrames(6)).toBe(10n * 4096n);
    expect(host.ram.framesFree).toBe(9);
    // 16..19 is too short for 5: the run comes from the second hole.
    expect(host.ram.allocFrames(5)).toBe(100n * 4096n);
    expect(host.ram.allocFrames(4)).toBe(16n * 4096n);
    expect(host.ram.framesFree).toBe(0);
  });

  it("ENOMEM with framesFree unchanged when no run fits, though enough frames are free in all", async () => {
    const host = await createHost({ ramSize: size });
    expect(host.ram.allocFrames(frames)).toBe(0n);
    host.ram.freeFrames(10 * PAGE, 10);
    host.ram.freeFrames(100n * 4096n, 5);
    expect(errnoOf(() => host.ram.allocFrames(11))).toBe("ENOMEM");
    expect(errnoOf(() => host.ram.allocFrames(15))).toBe("ENOMEM");
    expect(host.ram.framesFree).toBe(15);
    // The holes are intact: each can still be taken whole.
    expect(host.ram.allocFrames(10)).toBe(10n * 4096n);
    expect(host.ram.allocFrames(5)).toBe(100n * 4096n);
    expect(errnoOf(() => host.ram.allocFrames(1))).toBe("ENOMEM");
    expect(host.ram.framesFree).toBe(0);
  });

  it("ENOMEM for more frames than RAM has, nothing allocated", async () => {
    const host = await createHost({ ramSize: size });
    expect(errnoOf(() => host.ram.allocFrames(frames + 1))).toBe("ENOMEM");
    expect(host.ram.framesFree).toBe(frames);
    expect(host.ram.allocFrames(frames)).toBe(0n);
  });

  it("page tables take their frames from the allocator", async () => {
    const host = await createHost({ ramSize: size });
    const pt = host.createPageTable();
    expect(host.ram.framesFree).toBe(frames - 1);
    // The root's frame is not handed out again.
    const rest = host.ram.allocFrames(frames - 1);
    expect(pt.root >= rest && pt.root < rest + BigInt(frames - 1) * 4096n).toBe(false);
    host.ram.freeFrames(rest, frames - 1);
    pt.map(0x1000, 0x800000, 0x1000); // needs PDPT, PD and PT below the root
    expect(host.ram.framesFree).toBe(frames - 4);
    pt.destroy();
    expect(host.ram.framesFree).toBe(frames);
  });

  it("a map that needs more table frames than are free → ENOMEM, nothing allocated", async () => {
    const host = await createHost({ ramSize: size });
    const pt = host.createPageTable();
    const rest = host.ram.allocFrames(frames - 1);
    host.ram.freeFrames(rest, 2); // two free frames; the map needs three
    let code = "";
    try { pt.map(0x1000, 0x800000, 0x1000); } catch (e) { code = (e as IommuError).code; }
    expect(code).toBe("ENOMEM");
    expect(host.ram.framesFree).toBe(2);
    expect(pt.iovaToPhys(0x1000)).toBeUndefined();
  });

  it("a page table with no free frame for its root → ENOMEM, nothing changed", async () => {
    const host = await createHost({ ramSize: size });
    host.ram.allocFrames(frames);
    expect(errnoOf(() => host.createPageTable())).toBe("ENOMEM");
    expect(errnoOf(() => host.createDomain())).toBe("ENOMEM");
    expect(host.ram.framesFree).toBe(0);
  });

  it("freeFrames of frames not (wholly) allocated → EINVAL, nothing freed", async () => {
    const host = await createHost({ ramSize: size });
    expect(errnoOf(() => host.ram.freeFrames(0x5000))).toBe("EINVAL");
    expect(host.ram.framesFree).toBe(frames);

    const a = host.ram.allocFrames(frames); // everything, at 0
    host.ram.freeFrames(20 * PAGE, 2); // frames 20, 21 free
    expect(host.ram.framesFree).toBe(2);
    // Runs that are only partly allocated, at the start, middle and end.
    expect(errnoOf(() => host.ram.freeFrames(18 * PAGE, 3))).toBe("EINVAL"); // 18, 19 allocated; 20 free
    expect(errnoOf(() => host.ram.freeFrames(21 * PAGE, 3))).toBe("EINVAL"); // 21 free
    expect(errnoOf(() => host.ram.freeFrames(19 * PAGE, 4))).toBe("EINVAL");
    expect(host.ram.framesFree).toBe(2);
    // Each frame around the hole is still allocated (freeing them now works once).
    host.ram.freeFrames(18 * PAGE, 2);
    host.ram.freeFrames(22 * PAGE, 2);
    expect(host.ram.framesFree).toBe(6);
    // Double free.
    expect(errnoOf(() => host.ram.freeFrames(18 * PAGE, 1))).toBe("EINVAL");
    // Past the end of RAM, or reaching past it.
    expect(errnoOf(() => host.ram.freeFrames(size))).toBe("EINVAL");
    expect(errnoOf(() => host.ram.freeFrames(size - PAGE, 2))).toBe("EINVAL");
    expect(errnoOf(() => host.ram.freeFrames(0x100000000n, 1))).toBe("EINVAL");
    expect(host.ram.framesFree).toBe(6);
    expect(a).toBe(0n);
  });

  it.each([
    ["0", 0],
    ["-1", -1],
    ["1.5", 1.5],
    ["NaN", Number.NaN],
    ["2^32", 2 ** 32],
  ])("allocFrames(%s) → EINVAL", async (_name, count) => {
    const host = await createHost({ ramSize: size });
    expect(errnoOf(() => host.ram.allocFrames(count))).toBe("EINVAL");
    expect(host.ram.framesFree).toBe(frames);
  });

  it("freeFrames with bad counts or addresses → EINVAL, nothing freed", async () => {
    const host = await createHost({ ramSize: size });
    const a = host.ram.allocFrames(4);
    for (const count of [0, -1, 2.5, Number.NaN, 2 ** 32]) {
      expect(errnoOf(() => host.ram.freeFrames(a, count))).toBe("EINVAL");
    }
    expect(errnoOf(() => host.ram.freeFrames(a + 1n, 1))).toBe("EINVAL"); // not 4 KiB aligned
    expect(errnoOf(() => host.ram.freeFrames(a + 0x800n, 1))).toBe("EINVAL");
    expect(errnoOf(() => host.ram.freeFrames(-4096, 1))).toBe("EINVAL");
    expect(errnoOf(() => host.ram.freeFrames(1n << 64n, 1))).toBe("EINVAL");
    expect(host.ram.framesFree).toBe(frames - 4);
    host.ram.freeFrames(a, 4);
    expect(host.ram.framesFree).toBe(frames);
  });
});

describe("buffer arena", () => {
  it("hands out zero-filled views on engine memory, apart from RAM and each other", async () => {
    const host = await createHost({ ramSize: 16 * MiB, bufferArenaSize: 64 * 1024 });
    const ramView = host.ram.view(0, 16);
    const a = host.allocBuffer(100);
    const b = host.allocBuffer(5000);
    expect(a.length).toBe(100);
    expect(b.length).toBe(5000);
    expect(a.buffer).toBe(ramView.buffer);
    expect(b.buffer).toBe(ramView.buffer);
    expect(allZero(a) && allZero(b)).toBe(true);
    // Not RAM: writing a buffer changes no RAM byte, and the two buffers do not overlap.
    const before = host.ram.read(0, 16 * MiB);
    a.fill(0xa1);
    b.fill(0xb2);
    expect(a.every((x) => x === 0xa1)).toBe(true);
    expect(firstDiff(host.ram.read(0, 16 * MiB), before)).toBe(-1);
    const [lo, hi] = a.byteOffset < b.byteOffset ? [a, b] : [b, a];
    expect(lo.byteOffset + lo.byteLength).toBeLessThanOrEqual(hi.byteOffset);
  });

  it("a freed buffer comes back zero-filled", async () => {
    const host = await createHost({ ramSize: 16 * MiB, bufferArenaSize: 8192 });
    const a = host.allocBuffer(8192);
    a.fill(0x5a);
    host.freeBuffer(a);
    const b = host.allocBuffer(8192); // the whole arena: the same bytes
    expect(b.byteOffset).toBe(a.byteOffset);
    expect(allZero(b)).toBe(true);
  });

  it("ENOMEM when the arena is exhausted; freeing makes room again (neighbours coalesce)", async () => {
    const arena = 64 * 1024;
    const host = await createHost({ ramSize: 16 * MiB, bufferArenaSize: arena });
    expect(errnoOf(() => host.allocBuffer(arena + 1))).toBe("ENOMEM");
    const whole = host.allocBuffer(arena);
    expect(errnoOf(() => host.allocBuffer(1))).toBe("ENOMEM");
    host.freeBuffer(whole);
    const a = host.allocBuffer(arena / 2);
    const b = host.allocBuffer(arena / 2);
    expect(errnoOf(() => host.allocBuffer(1))).toBe("ENOMEM");
    host.freeBuffer(a);
    expect(errnoOf(() => host.allocBuffer(arena / 2 + 1))).toBe("ENOMEM");
    const c = host.allocBuffer(arena / 2);
    host.freeBuffer(c);
    host.freeBuffer(b);
    // Both halves free again and merged: one buffer of the whole arena fits.
    expect(host.allocBuffer(arena).length).toBe(arena);
  });

  it("translation batches come from the same arena", async () => {
    const host = await createHost({ ramSize: 16 * MiB, bufferArenaSize: 4096 });
    // 200 entries need 1600 + 1600 + 200 bytes (rounded to 64-byte granules): 3520 of 4096.
    const batch = host.createTranslationBatch(200);
    expect(batch.iovas.length).toBe(200);
    expect(errnoOf(() => host.allocBuffer(1024))).toBe("ENOMEM");
    host.freeTranslationBatch(batch);
    expect(host.allocBuffer(4096).length).toBe(4096);
  });

  it("an arena of size 0 has no room", async () => {
    const host = await createHost({ ramSize: 16 * MiB, bufferArenaSize: 0 });
    expect(errnoOf(() => host.allocBuffer(1))).toBe("ENOMEM");
  });

  it("freeing a foreign or already freed view → EINVAL, nothing freed", async () => {
    const host = await createHost({ ramSize: 16 * MiB, bufferArenaSize: 8192 });
    const other = await createHost({ ramSize: 16 * MiB, bufferArenaSize: 8192 });
    const a = host.allocBuffer(4096);
    const foreign = other.allocBuffer(4096);
    expect(errnoOf(() => host.freeBuffer(new Uint8Array(4096)))).toBe("EINVAL");
    expect(errnoOf(() => host.freeBuffer(host.ram.view(0, 4096)))).toBe("EINVAL");
    expect(errnoOf(() => host.freeBuffer(foreign))).toBe("EINVAL");
    expect(errnoOf(() => host.freeBuffer(a.subarray(64)))).toBe("EINVAL");
    // a is still allocated: only the other half of the arena is free.
    expect(errnoOf(() => host.allocBuffer(8192))).toBe("ENOMEM");
    host.freeBuffer(a);
    expect(errnoOf(() => host.freeBuffer(a))).toBe("EINVAL");
    expect(host.allocBuffer(8192).length).toBe(8192);
    // The other host's buffer is untouched by all this.
    other.freeBuffer(foreign);
  });

  it.each([["0", 0], ["-1", -1], ["1.5", 1.5], ["NaN", Number.NaN]])("allocBuffer(%s) → EINVAL", async (_n, len) => {
    const host = await createHost({ ramSize: 16 * MiB, bufferArenaSize: 8192 });
    expect(errnoOf(() => host.allocBuffer(len))).toBe("EINVAL");
    expect(host.allocBuffer(8192).length).toBe(8192);
  });
});
