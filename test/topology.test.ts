// Host topology and reserved regions: a group's list is sorted and merged as
// the kernel builds it, printed byte for byte as sysfs prints it, and the
// usable / valid IOVA ranges are the aperture minus every non-relaxable
// region; every bad input is refused with the errno Linux would use.
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { U64_MAX } from "../src/addr.js";
import { archPreset, type Arch } from "../src/vfio/arch.js";
import {
  intersect, isRelaxable, mergeRegions, overlaps, RESERVED_TYPES, subtractRanges, sysfsText, toReservedRegion, unionRanges,
  type IovaRange, type ReservedRegion, type ReservedRegionSpec, type ReservedType,
} from "../src/vfio/reserved.js";
import { Topology, type Driver } from "../src/vfio/topology.js";
import { errno } from "./support/outcome.js";
import { params } from "./support/runs.js";

const MiB = 0x100000n;
const GiB = 0x40000000n;


const r = (start: bigint, end: bigint, type: ReservedType): ReservedRegion => ({ start, end, type });
const range = (start: bigint, end: bigint): IovaRange => ({ start, end });

describe("arch presets", () => {
  it("VT-d: 48-bit aperture by default, 4K|2M|1G, the interrupt window as msi", () => {
    const p = archPreset("vtd");
    expect(p.arch).toBe("vtd");
    expect(p.addressWidth).toBe(48);
    expect(p.aperture).toEqual({ start: 0n, end: 0xffff_ffff_ffffn });
    expect(p.pgsizes).toBe(0x4020_1000n);
    expect(p.hardwareReserved).toEqual([r(0xfee0_0000n, 0xfeef_ffffn, "msi")]);
    expect(p.msiIsolatedDefault).toBe(true);
  });

  it("VT-d takes 39 and 57 bits; SMMUv3 anything from 32 to 48 (the 4 KiB-granule stage 2), with the sw-msi window", () => {
    expect(archPreset("vtd", 39).aperture.end).toBe(0x7f_ffff_ffffn);
    expect(archPreset("vtd", 57).aperture.end).toBe((1n << 57n) - 1n);
    const s = archPreset("smmuv3", 44);
    expect(s.aperture).toEqual({ start: 0n, end: 0xfff_ffff_ffffn });
    expect(s.hardwareReserved).toEqual([r(0x800_0000n, 0x80f_ffffn, "sw-msi")]);
    expect(archPreset("smmuv3", 32).aperture.end).toBe(0xffff_ffffn);
    expect(archPreset("smmuv3", 48).aperture.end).toBe((1n << 48n) - 1n);
    expect(() => archPreset("smmuv3", 52)).toThrow(/32\.\.48/);
    expect(archPreset("smmuv3").addressWidth).toBe(48);
  });

  it("a preset cannot be changed behind the topology's back", () => {
    const p = archPreset("vtd");
    expect(Object.isFrozen(p)).toBe(true);
    expect(Object.isFrozen(p.aperture)).toBe(true);
    expect(Object.isFrozen(p.hardwareReserved)).toBe(true);
    expect(Object.isFrozen(p.hardwareReserved[0])).toBe(true);
  });

  it("an unknown architecture or width is EINVAL", () => {
    expect(errno(() => archPreset("amdvi" as Arch))).toBe("EINVAL");
    expect(errno(() => archPreset("toString" as Arch))).toBe("EINVAL");
    for (const w of [40, 47, 52, 64, 48.5, NaN]) expect(errno(() => archPreset("vtd", w))).toBe("EINVAL");
    for (const w of [31, 53, 36.5]) expect(errno(() => archPreset("smmuv3", w))).toBe("EINVAL");
  });
});

describe("region specs", () => {
  it("end is inclusive; size counts bytes; numbers become bigints", () => {
    expect(toReservedRegion({ start: 0x1000, end: 0x1fff, type: "direct" }, "x")).toEqual(r(0x1000n, 0x1fffn, "direct"));
    expect(toReservedRegion({ start: 0x1000n, size: 0x1000n, type: "msi" }, "x")).toEqual(r(0x1000n, 0x1fffn, "msi"));
    expect(toReservedRegion({ start: 5n, end: 5n, type: "reserved" }, "x")).toEqual(r(5n, 5n, "reserved"));
    expect(toReservedRegion({ start: U64_MAX, size: 1n, type: "reserved" }, "x")).toEqual(r(U64_MAX, U64_MAX, "reserved"));
  });

  it("refuses bad specs with the kernel's errno", () => {
    const bad: [ReservedRegionSpec, string][] = [
      [{ start: 0x1000n, size: 0n, type: "direct" }, "EINVAL"],
      [{ start: 0x1000n, end: 0x1fffn, size: 0x1000n, type: "direct" }, "EINVAL"],
      [{ start: 0x1000n, type: "direct" }, "EINVAL"],
      [{ start: 0x2000n, end: 0x1fffn, type: "direct" }, "EINVAL"],
      [{ start: U64_MAX, size: 2n, type: "direct" }, "EOVERFLOW"],
      [{ start: 0x1000n, size: U64_MAX, type: "direct" }, "EOVERFLOW"],
      [{ start: 0x1000n, size: 1n, type: "rmrr" as ReservedType }, "EINVAL"],
      [{ start: -1, size: 1n, type: "direct" }, "EINVAL"],
      [{ start: 0n, end: U64_MAX + 1n, type: "direct" }, "EINVAL"],
      [{ start: 0.5, size: 1n, type: "direct" }, "EINVAL"],
    ];
    for (const [spec, code] of bad) expect(errno(() => toReservedRegion(spec, "x"))).toBe(code);
  });
});

describe("mergeRegions: the kernel's group list", () => {
  it("same type: overlapping, touching and contained regions merge", () => {
    expect(mergeRegions([r(0x1000n, 0x2fffn, "direct"), r(0x2000n, 0x4fffn, "direct")])).toEqual([r(0x1000n, 0x4fffn, "direct")]);
    expect(mergeRegions([r(0x1000n, 0x1fffn, "reserved"), r(0x2000n, 0x2fffn, "reserved")])).toEqual([r(0x1000n, 0x2fffn, "reserved")]);
    expect(mergeRegions([r(0x1000n, 0x8fffn, "msi"), r(0x2000n, 0x2fffn, "msi")])).toEqual([r(0x1000n, 0x8fffn, "msi")]);
    // Given out of order, a chain still collapses into one.
    expect(mergeRegions([r(0x3000n, 0x3fffn, "direct"), r(0x1000n, 0x1fffn, "direct"), r(0x2000n, 0x2fffn, "direct")]))
      .toEqual([r(0x1000n, 0x3fffn, "direct")]);
  });

  it("a one-byte gap keeps same-type regions apart", () => {
    expect(mergeRegions([r(0x2001n, 0x2fffn, "direct"), r(0x1000n, 0x1fffn, "direct")]))
      .toEqual([r(0x1000n, 0x1fffn, "direct"), r(0x2001n, 0x2fffn, "direct")]);
  });

  it("different types never merge, even overlapping or touching", () => {
    expect(mergeRegions([r(0x2000n, 0x5fffn, "reserved"), r(0x1000n, 0x2fffn, "direct"), r(0x6000n, 0x6fffn, "msi")]))
      .toEqual([r(0x1000n, 0x2fffn, "direct"), r(0x2000n, 0x5fffn, "reserved"), r(0x6000n, 0x6fffn, "msi")]);
    // msi and sw-msi print the same name but are different types.
    expect(mergeRegions([r(0x1000n, 0x1fffn, "sw-msi"), r(0x1000n, 0x1fffn, "msi")]))
      .toEqual([r(0x1000n, 0x1fffn, "msi"), r(0x1000n, 0x1fffn, "sw-msi")]);
  });

  it("equal starts: lower type first, whatever the input order", () => {
    const reversed = [...RESERVED_TYPES].reverse().map((t, i) => r(0x1000n, 0x1fffn + BigInt(i) * 0x1000n, t));
    expect(mergeRegions(reversed).map((x) => x.type)).toEqual(["direct", "direct-relaxable", "reserved", "msi", "sw-msi"]);
  });

  it("a region of another type in between does not stop a merge", () => {
    expect(mergeRegions([r(0n, 0xfffn, "direct"), r(0x800n, 0x17ffn, "reserved"), r(0x1000n, 0x1fffn, "direct")]))
      .toEqual([r(0n, 0x1fffn, "direct"), r(0x800n, 0x17ffn, "reserved")]);
  });

  it("is pure: the input is untouched and the output is fresh", () => {
    const input = [r(0x1000n, 0x1fffn, "direct"), r(0x2000n, 0x2fffn, "direct")];
    const out = mergeRegions(input);
    expect(input).toEqual([r(0x1000n, 0x1fffn, "direct"), r(0x2000n, 0x2fffn, "direct")]);
    out[0].end = 0n;
    expect(input[0].end).toBe(0x1fffn);
    expect(mergeRegions([])).toEqual([]);
  });

  // A model of iommu_insert_resv_region: place the new region by (start,
  // type), then walk the list merging only regions of the new one's type
  // into the last kept region of that type.
  function kernelInsert(list: ReservedRegion[], added: ReservedRegion): ReservedRegion[] {
    const rank = (t: ReservedType) => RESERVED_TYPES.indexOf(t);
    const at = list.findIndex((it) => added.start < it.start || (added.start === it.start && rank(added.type) <= rank(it.type)));
    const placed = [...list];
    placed.splice(at < 0 ? placed.length : at, 0, { ...added });
    const kept: ReservedRegion[] = [];
    for (const it of placed) {
      const top = it.type === added.type ? [...kept].reverse().find((k) => k.type === it.type) : undefined;
      if (top === undefined || it.start > top.end + 1n) kept.push(it);
      else if (it.end > top.end) top.end = it.end;
    }
    return kept;
  }

  it("agrees with one-by-one insertion as the kernel does it, for any input order", () => {
    const region = fc.record({
      start: fc.bigInt({ min: 0n, max: 64n }),
      length: fc.bigInt({ min: 1n, max: 24n }),
      type: fc.constantFrom(...RESERVED_TYPES),
    }).map(({ start, length, type }) => r(start, start + length - 1n, type));
    fc.assert(fc.property(fc.array(region, { maxLength: 14 }), (regions) => {
      const expected = regions.reduce(kernelInsert, []);
      expect(mergeRegions(regions)).toEqual(expected);
      expect(mergeRegions([...regions].reverse())).toEqual(expected);
    }), params(400));
  });
});

describe("sysfs text", () => {
  it("prints 16 zero-padded lowercase hex digits, the inclusive end, and msi for sw-msi", () => {
    expect(sysfsText([])).toBe("");
    expect(sysfsText([r(0n, 0xabcdefn, "direct-relaxable"), r(0xfee0_0000n, 0xfeef_ffffn, "msi"), r(0x800_0000n, 0x80f_ffffn, "sw-msi"), r(0x1_0000_0000n, U64_MAX, "reserved")])).toBe(
      "0x0000000000000000 0x0000000000abcdef direct-relaxable\n" +
      "0x00000000fee00000 0x00000000feefffff msi\n" +
      "0x0000000008000000 0x00000000080fffff msi\n" +
      "0x0000000100000000 0xffffffffffffffff reserved\n");
  });

  it("VT-d groups: the interrupt window, platform RMRRs and each device's regions", () => {
    const t = new Topology(archPreset("vtd"), [{ start: 0x3e2e_0000n, end: 0x3e2f_ffffn, type: "direct" }]);
    t.addDevice({ bdf: "0000:00:02.0", reserved: [{ start: 0x7b80_0000n, size: 0x480_0000n, type: "direct-relaxable" }] });
    t.addDevice({ bdf: "0000:00:14.0", group: 1, reserved: [
      { start: 0x3e30_0000n, end: 0x3e30_ffffn, type: "direct" },
      { start: 0xfed0_0000n, end: 0xfee0_ffffn, type: "reserved" },
    ] });
    t.addDevice({ bdf: "0000:00:14.2", group: 1, reserved: [{ start: 0xfee0_0000n, size: 0x1000, type: "direct" }] });

    expect(t.reservedRegionsText(0)).toBe(
      "0x000000003e2e0000 0x000000003e2fffff direct\n" +
      "0x000000007b800000 0x000000007fffffff direct-relaxable\n" +
      "0x00000000fee00000 0x00000000feefffff msi\n");
    // The device's direct region touches the platform RMRR and merges with
    // it; the reserved window overlaps the msi window and stays apart; the
    // direct page at 0xfee00000 comes before the msi window that starts there.
    expect(t.reservedRegionsText(1)).toBe(
      "0x000000003e2e0000 0x000000003e30ffff direct\n" +
      "0x00000000fed00000 0x00000000fee0ffff reserved\n" +
      "0x00000000fee00000 0x00000000fee00fff direct\n" +
      "0x00000000fee00000 0x00000000feefffff msi\n");
  });

  it("SMMUv3 group: the sw-msi window grows with an adjacent one and prints as msi", () => {
    const t = new Topology(archPreset("smmuv3", 44), [{ start: 0x1000_0000n, end: 0x3eff_ffffn, type: "reserved" }]);
    t.addDevice({ bdf: "0002:01:00.0", reserved: [{ start: 0x810_0000n, size: 0x10_0000n, type: "sw-msi" }] });
    t.addDevice({ bdf: "0002:01:00.1", group: 0, reserved: [{ start: 0x800_0000n, size: 0x1000n, type: "msi" }] });
    expect(t.reservedRegions(0)).toEqual([
      r(0x800_0000n, 0x800_0fffn, "msi"),
      r(0x800_0000n, 0x81f_ffffn, "sw-msi"),
      r(0x1000_0000n, 0x3eff_ffffn, "reserved"),
    ]);
    expect(t.reservedRegionsText(0)).toBe(
      "0x0000000008000000 0x0000000008000fff msi\n" +
      "0x0000000008000000 0x00000000081fffff msi\n" +
      "0x0000000010000000 0x000000003effffff reserved\n");
  });
});

describe("range arithmetic", () => {
  it("overlaps and intersect treat ends as inclusive", () => {
    expect(overlaps(range(0n, 0xfffn), range(0xfffn, 0x1fffn))).toBe(true);
    expect(overlaps(range(0n, 0xfffn), range(0x1000n, 0x1fffn))).toBe(false);
    expect(intersect(range(0n, 0xfffn), range(0xfffn, 0x1fffn))).toEqual(range(0xfffn, 0xfffn));
    expect(intersect(range(0x100n, 0x200n), range(0n, 0x1000n))).toEqual(range(0x100n, 0x200n));
    expect(intersect(range(0n, 0xfffn), range(0x1000n, 0x1fffn))).toBeNull();
  });

  it("unionRanges joins overlapping and touching ranges only", () => {
    expect(unionRanges([range(0x20n, 0x2fn), range(0n, 0xfn), range(0x10n, 0x12n), range(0x14n, 0x18n)]))
      .toEqual([range(0n, 0x12n), range(0x14n, 0x18n), range(0x20n, 0x2fn)]);
  });

  it("subtractRanges cuts at 0, in the middle and at the very end", () => {
    const all = range(0n, U64_MAX);
    expect(subtractRanges([all], [range(0n, 0xfffn), range(U64_MAX - 0xfffn, U64_MAX), range(0x5000n, 0x5fffn)]))
      .toEqual([range(0x1000n, 0x4fffn), range(0x6000n, U64_MAX - 0x1000n)]);
    expect(subtractRanges([range(0x1000n, 0x1fffn)], [range(0n, 0x1fffn)])).toEqual([]);
    expect(subtractRanges([range(0x1000n, 0x1fffn)], [])).toEqual([range(0x1000n, 0x1fffn)]);
    expect(subtractRanges([range(0x1000n, 0x1fffn), range(0x3000n, 0x3fffn)], [range(0x1800n, 0x37ffn)]))
      .toEqual([range(0x1000n, 0x17ffn), range(0x3800n, 0x3fffn)]);
  });

  it("subtractRanges keeps exactly the addresses in a range and in no hole", () => {
    const small = fc.tuple(fc.bigInt({ min: 0n, max: 40n }), fc.bigInt({ min: 0n, max: 10n })).map(([s, l]) => range(s, s + l));
    fc.assert(fc.property(fc.array(small, { maxLength: 5 }), fc.array(small, { maxLength: 5 }), (ranges, holes) => {
      const out = subtractRanges(ranges, holes);
      for (let i = 1; i < out.length; i++) expect(out[i].start).toBeGreaterThan(out[i - 1].end + 1n);
      for (let a = 0n; a <= 52n; a++) {
        const inside = (list: IovaRange[]) => list.some((x) => x.start <= a && a <= x.end);
        expect(inside(out)).toBe(inside(ranges) && !inside(holes));
      }
    }), params(300));
  });

  it("only direct-relaxable is relaxable", () => {
    expect(RESERVED_TYPES.filter(isRelaxable)).toEqual(["direct-relaxable"]);
  });
});

describe("devices and groups", () => {
  it("gives an ungrouped device the lowest free group id; an explicit id joins or creates", () => {
    const t = new Topology(archPreset("vtd"));
    expect(t.addDevice({ bdf: "0000:00:01.0" }).group).toBe(0);
    expect(t.addDevice({ bdf: "0000:00:02.0", group: 2 }).group).toBe(2);
    expect(t.addDevice({ bdf: "0000:00:03.0" }).group).toBe(1);
    expect(t.addDevice({ bdf: "0000:00:04.0" }).group).toBe(3);
    expect(t.addDevice({ bdf: "0000:00:01.1", group: 0 }).group).toBe(0);
    expect(t.groups()).toEqual([0, 1, 2, 3]);
    expect(t.devicesOf(0).map((d) => d.bdf)).toEqual(["0000:00:01.0", "0000:00:01.1"]);
  });

  it("normalises the bdf to lowercase and lists a group's devices in bdf order", () => {
    const t = new Topology(archPreset("vtd"));
    t.addDevice({ bdf: "0000:00:14.2", group: 5 });
    const d = t.addDevice({ bdf: "00AB:0C:1F.7", group: 5 });
    expect(d.bdf).toBe("00ab:0c:1f.7");
    expect(t.device("00ab:0c:1f.7")).toBe(d);
    expect(t.device("00AB:0C:1f.7")).toBe(d);
    t.addDevice({ bdf: "0000:00:14.0", group: 5 });
    expect(t.devicesOf(5).map((x) => x.bdf)).toEqual(["0000:00:14.0", "0000:00:14.2", "00ab:0c:1f.7"]);
  });

  it("keeps the device's own regions, validated, and defaults from the preset", () => {
    const t = new Topology(archPreset("vtd"));
    const d = t.addDevice({ bdf: "0000:00:02.0", reserved: [{ start: 0x1000, size: 0x1000, type: "direct" }] });
    expect(d.reserved).toEqual([r(0x1000n, 0x1fffn, "direct")]);
    expect(d.msiIsolated).toBe(true);
    expect(d.driver).toBe("vfio-pci");
    const e = t.addDevice({ bdf: "0000:00:03.0", msiIsolated: false, driver: null });
    expect(e.reserved).toEqual([]);
    expect(e.msiIsolated).toBe(false);
    expect(e.driver).toBeNull();
  });

  it("platform regions apply to every group", () => {
    const rmrr = { start: 0xe_8000n, end: 0xe_8fffn, type: "direct" } as const;
    const t = new Topology(archPreset("vtd"), [rmrr]);
    t.addDevice({ bdf: "0000:00:01.0" });
    t.addDevice({ bdf: "0000:00:02.0" });
    for (const g of t.groups()) expect(t.reservedRegions(g)).toContainEqual(r(0xe_8000n, 0xe_8fffn, "direct"));
    expect(t.platformReserved).toEqual([r(0xe_8000n, 0xe_8fffn, "direct")]);
  });

  it("a group is viable only while every device is on vfio-pci or on no driver", () => {
    const t = new Topology(archPreset("vtd"));
    t.addDevice({ bdf: "0000:03:00.0", group: 7 });
    const sibling = t.addDevice({ bdf: "0000:03:00.1", group: 7, driver: "host" });
    t.addDevice({ bdf: "0000:04:00.0", group: 8 });
    expect(t.viable(7)).toBe(false);
    expect(t.viable(8)).toBe(true);
    sibling.bindDriver(null);
    expect(t.viable(7)).toBe(true);
    t.device("0000:03:00.0").bindDriver("host");
    expect(t.viable(7)).toBe(false);
    t.device("0000:03:00.0").bindDriver("vfio-pci");
    expect(t.viable(7)).toBe(true);
    expect(t.device("0000:03:00.0").driver).toBe("vfio-pci");
  });

  it("a group's MSIs are isolated only when every device's are", () => {
    const t = new Topology(archPreset("smmuv3"));
    t.addDevice({ bdf: "0000:01:00.0", group: 0 });
    t.addDevice({ bdf: "0000:02:00.0", group: 1 });
    t.addDevice({ bdf: "0000:02:00.1", group: 1, msiIsolated: false });
    expect(t.msiIsolated(0)).toBe(true);
    expect(t.msiIsolated(1)).toBe(false);
  });

  it("refuses bad devices and unknown groups or devices with the kernel's errno", () => {
    const t = new Topology(archPreset("vtd"));
    t.addDevice({ bdf: "0000:00:02.0" });
    for (const bdf of ["00:02.0", "0000:00:20.0", "0000:00:02.8", "0000:0g:02.0", "0000:00:02.0 ", "0:00:02.0", "", 42 as unknown as string]) {
      expect(errno(() => t.addDevice({ bdf }))).toBe("EINVAL");
    }
    expect(errno(() => t.addDevice({ bdf: "0000:00:02.0" }))).toBe("EEXIST");
    t.addDevice({ bdf: "0000:0a:1f.0" });
    expect(errno(() => t.addDevice({ bdf: "0000:0A:1F.0" }))).toBe("EEXIST");
    for (const group of [-1, 1.5, NaN, "1" as unknown as number]) {
      expect(errno(() => t.addDevice({ bdf: "0000:00:03.0", group }))).toBe("EINVAL");
    }
    expect(errno(() => t.addDevice({ bdf: "0000:00:03.0", msiIsolated: "yes" as unknown as boolean }))).toBe("EINVAL");
    expect(errno(() => t.addDevice({ bdf: "0000:00:03.0", driver: "nvme" as Driver }))).toBe("EINVAL");
    expect(errno(() => t.addDevice({ bdf: "0000:00:03.0", reserved: [{ start: 0x1000n, size: 0n, type: "direct" }] }))).toBe("EINVAL");
    expect(errno(() => t.addDevice({ bdf: "0000:00:03.0", reserved: [{ start: U64_MAX, size: 2n, type: "direct" }] }))).toBe("EOVERFLOW");
    // A refused device leaves nothing behind.
    expect(errno(() => t.device("0000:00:03.0"))).toBe("ENODEV");
    expect(t.groups()).toEqual([0, 1]);

    expect(errno(() => t.device("0000:00:1f.0"))).toBe("ENODEV");
    expect(errno(() => t.device("bogus"))).toBe("EINVAL");
    expect(errno(() => t.device("0000:00:02.0").bindDriver("nvme" as Driver))).toBe("EINVAL");
    expect(t.device("0000:00:02.0").driver).toBe("vfio-pci");
    for (const call of [
      () => t.devicesOf(9), () => t.viable(9), () => t.msiIsolated(9), () => t.reservedRegions(9),
      () => t.reservedRegionsText(9), () => t.usableRanges(9), () => t.iovaList([0, 9]),
      () => t.checkGuestMemoryMap([], { groups: [9] }),
    ]) expect(errno(call)).toBe("ENOENT");
    expect(errno(() => t.reservedRegions(-1))).toBe("EINVAL");
    expect(errno(() => new Topology(archPreset("vtd"), [{ start: 0x2000n, end: 0x1000n, type: "direct" }]))).toBe("EINVAL");
    expect(errno(() => new Topology(archPreset("vtd"), [{ start: 0n, size: 1n, type: "bogus" as ReservedType }]))).toBe("EINVAL");
  });
});

describe("usable ranges and the valid IOVA list", () => {
  const VTD_APERTURE_END = 0xffff_ffff_ffffn;

  function vtdHost(): Topology {
    const t = new Topology(archPreset("vtd"));
    // Group 0 reserves the first page and the last page of the aperture.
    t.addDevice({ bdf: "0000:00:01.0", reserved: [
      { start: 0n, size: 0x1000n, type: "reserved" },
      { start: VTD_APERTURE_END - 0xfffn, end: VTD_APERTURE_END, type: "reserved" },
    ] });
    // Group 1: a relaxable RMRR (usable) and a direct one (not).
    t.addDevice({ bdf: "0000:00:02.0", reserved: [
      { start: 0x7b80_0000n, size: 0x480_0000n, type: "direct-relaxable" },
      { start: 0x3e2e_0000n, end: 0x3e2f_ffffn, type: "direct" },
    ] });
    return t;
  }

  it("a group's usable ranges are the aperture minus its non-relaxable regions, edges included", () => {
    const t = vtdHost();
    expect(t.usableRanges(0)).toEqual([range(0x1000n, 0xfedf_ffffn), range(0xfef0_0000n, VTD_APERTURE_END - 0x1000n)]);
    expect(t.usableRanges(1)).toEqual([range(0n, 0x3e2d_ffffn), range(0x3e30_0000n, 0xfedf_ffffn), range(0xfef0_0000n, VTD_APERTURE_END)]);
  });

  it("without a group: every group's regions at once; with no devices, the whole aperture", () => {
    const t = vtdHost();
    expect(t.usableRanges()).toEqual([
      range(0x1000n, 0x3e2d_ffffn), range(0x3e30_0000n, 0xfedf_ffffn), range(0xfef0_0000n, VTD_APERTURE_END - 0x1000n),
    ]);
    expect(new Topology(archPreset("smmuv3", 40)).usableRanges()).toEqual([range(0n, 0xff_ffff_ffffn)]);
  });

  it("iovaList: the aperture minus every non-relaxable region of every group attached", () => {
    const t = new Topology(archPreset("smmuv3", 40));
    t.addDevice({ bdf: "0000:01:00.0", group: 0, reserved: [{ start: 0x1000_0000n, end: 0x3eff_ffffn, type: "reserved" }] });
    t.addDevice({ bdf: "0000:02:00.0", group: 1, reserved: [{ start: 0x80_0000_0000n, size: GiB, type: "msi" }] });
    t.addDevice({ bdf: "0000:03:00.0", group: 2, reserved: [{ start: 0n, size: 16n * MiB, type: "direct-relaxable" }] });
    expect(t.iovaList([0])).toEqual([range(0n, 0x7ff_ffffn), range(0x810_0000n, 0xfff_ffffn), range(0x3f00_0000n, 0xff_ffff_ffffn)]);
    expect(t.iovaList([2])).toEqual([range(0n, 0x7ff_ffffn), range(0x810_0000n, 0xff_ffff_ffffn)]);
    const both = [range(0n, 0x7ff_ffffn), range(0x810_0000n, 0xfff_ffffn), range(0x3f00_0000n, 0x7f_ffff_ffffn), range(0x80_4000_0000n, 0xff_ffff_ffffn)];
    expect(t.iovaList([1, 0])).toEqual(both);
    expect(t.iovaList([0, 1, 1, 2])).toEqual(both);
    expect(t.iovaList([])).toEqual([range(0n, 0xff_ffff_ffffn)]);
  });

  it("may come out empty when a group reserves the whole aperture", () => {
    const t = new Topology(archPreset("vtd", 39));
    t.addDevice({ bdf: "0000:00:01.0" });
    t.addDevice({ bdf: "0000:00:02.0", reserved: [{ start: 0n, size: 1n << 39n, type: "reserved" }] });
    expect(t.iovaList([0])).toHaveLength(2);
    expect(t.iovaList([0, 1])).toEqual([]);
    expect(t.usableRanges(1)).toEqual([]);
  });
});

describe("checkGuestMemoryMap", () => {
  function twoGroups(): Topology {
    const t = new Topology(archPreset("vtd"));
    t.addDevice({ bdf: "0000:00:02.0", reserved: [{ start: 0x7b80_0000n, size: 0x480_0000n, type: "direct-relaxable" }] });
    t.addDevice({ bdf: "0000:00:03.0", reserved: [{ start: 0x4000_0000n, end: 0x4fff_ffffn, type: "reserved" }] });
    return t;
  }
  const msi = r(0xfee0_0000n, 0xfeef_ffffn, "msi");

  it("a map that leaves the holes alone has no conflict (relaxable regions do not count)", () => {
    const t = twoGroups();
    expect(t.checkGuestMemoryMap([{ start: 0, end: 0x3fff_ffffn }, { start: 0x5000_0000n, end: 0xbfff_ffffn }, { start: 4n * GiB, size: 4n * GiB }])).toEqual([]);
  });

  it("one RAM range over the interrupt window of one group is one conflict", () => {
    const t = twoGroups();
    expect(t.checkGuestMemoryMap([{ start: 0xc000_0000n, size: GiB }], { groups: [0] })).toEqual([
      { range: range(0xc000_0000n, 0xffff_ffffn), region: msi, group: 0, overlap: range(0xfee0_0000n, 0xfeef_ffffn) },
    ]);
    // A group named twice is checked once.
    expect(t.checkGuestMemoryMap([{ start: 0xc000_0000n, size: GiB }], { groups: [0, 0] })).toHaveLength(1);
  });

  it("several groups: one entry per range, region and group, sorted", () => {
    const t = twoGroups();
    const low = range(0n, 0xffff_ffffn);
    const edge = range(0x4fff_f000n, 0x5000_0fffn);
    // Given high first: the answer is still sorted by range.
    expect(t.checkGuestMemoryMap([{ start: 0x4fff_f000n, size: 0x2000n }, { start: 0n, size: 4n * GiB }])).toEqual([
      { range: low, region: r(0x4000_0000n, 0x4fff_ffffn, "reserved"), group: 1, overlap: range(0x4000_0000n, 0x4fff_ffffn) },
      { range: low, region: msi, group: 0, overlap: range(0xfee0_0000n, 0xfeef_ffffn) },
      { range: low, region: msi, group: 1, overlap: range(0xfee0_0000n, 0xfeef_ffffn) },
      { range: edge, region: r(0x4000_0000n, 0x4fff_ffffn, "reserved"), group: 1, overlap: range(0x4fff_f000n, 0x4fff_ffffn) },
    ]);
    expect(t.checkGuestMemoryMap([{ start: 0n, size: 4n * GiB }], { groups: [1] }).map((c) => c.region.type)).toEqual(["reserved", "msi"]);
  });

  it("RAM beyond the aperture is an outside-aperture conflict, not tied to a group", () => {
    const t = new Topology(archPreset("vtd", 39));
    t.addDevice({ bdf: "0000:00:02.0" });
    expect(t.checkGuestMemoryMap([{ start: 0x7f_ffff_0000n, size: 0x2_0000n }])).toEqual([{
      range: range(0x7f_ffff_0000n, 0x80_0000_ffffn),
      region: { start: 0x80_0000_0000n, end: U64_MAX, type: "outside-aperture" },
      group: null,
      overlap: range(0x80_0000_0000n, 0x80_0000_ffffn),
    }]);
    // With no group at all only the aperture can conflict.
    expect(new Topology(archPreset("vtd", 39)).checkGuestMemoryMap([{ start: 0, size: 4n * GiB }])).toEqual([]);
  });

  it("refuses bad RAM ranges", () => {
    const t = twoGroups();
    expect(errno(() => t.checkGuestMemoryMap([{ start: 0n, size: 0n }]))).toBe("EINVAL");
    expect(errno(() => t.checkGuestMemoryMap([{ start: 0x2000n, end: 0x1000n }]))).toBe("EINVAL");
    expect(errno(() => t.checkGuestMemoryMap([{ start: U64_MAX, size: 2n }]))).toBe("EOVERFLOW");
  });
});
