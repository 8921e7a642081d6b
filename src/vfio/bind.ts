// What a guest's stage-1 table description means for the nested domain that
// walks it: the format and its input size, and the switches a VT-d PASID
// entry (iommu_hwpt_vtd_s1 flags) or an Arm context descriptor (TCR-like
// fields for TTBR0) carries. Everything is checked before anything is made.
import { show } from "../args.js";
import { fail } from "../errors.js";
import { resolveFormat, type DomainFlags, type PageTableOptions } from "../format.js";

/** The uapi bits of iommu_hwpt_vtd_s1.flags. */
export const VTD_S1_SRE = 1;
export const VTD_S1_EAFE = 2;
export const VTD_S1_WPE = 4;

/** VT-d stage-1 switches. Omitted ones are off, as in the kernel's zeroed flags. */
export interface VtdStage1Flags {
  /** Supervisor requests allowed (SRE). */
  sre?: boolean;
  /** Write protect for supervisor requests (WPE). */
  wpe?: boolean;
  /** Extended-accessed flag (EAFE): the walk sets bit 10 along with A. */
  eafe?: boolean;
}

/** Arm context-descriptor fields for TTBR0, as TCR names them. */
export interface ArmStage1Flags {
  /** T0SZ: the input size is 64 - t0sz bits, 16..39. Must agree with addressWidth when both are given. */
  t0sz?: number;
  /** TG0, the granule: 0 = 4 KiB (default); 1 = 64 KiB and 2 = 16 KiB are not modelled (EOPNOTSUPP). */
  tg0?: number;
  /** IPS, the output size: 0..5 = 32, 36, 40, 42, 44, 48 bits (default 5); 6 = 52 bits is not modelled (EOPNOTSUPP). */
  ips?: number;
  /** HA: the walk sets AF instead of raising an access-flag fault. */
  ha?: boolean;
  /** HD: a write to a writable-clean leaf (DBM, AP[2] = 1) clears AP[2] instead of faulting. Needs ha. */
  hd?: boolean;
}

export interface Stage1Description {
  format: "x86-64" | "arm64";
  /** Input address width: x86-64 48 or 57; arm64 25..48. Default 48 (Arm: or 64 - t0sz). */
  addressWidth?: number;
  /** VT-d: an object or the uapi bits (SRE = 1, EAFE = 2, WPE = 4). Arm: TCR-like fields. */
  flags?: number | VtdStage1Flags | ArmStage1Flags;
}

const ARM_IPS_BITS = [32, 36, 40, 42, 44, 48];

/** The nested domain's format options and switches for a stage-1 description; EINVAL / EOPNOTSUPP for what it cannot be. */
export function stage1Domain(d: Stage1Description): PageTableOptions & DomainFlags {
  let options: PageTableOptions & DomainFlags;
  if (d.format === "x86-64") options = { ...x86Width(d.addressWidth ?? 48), ...vtdFlags(d.flags ?? 0) };
  else if (d.format === "arm64") options = armDomain(d.addressWidth, d.flags ?? {});
  else return fail("EINVAL", `stage-1 format must be x86-64 or arm64, got ${show(d.format)}`);
  // The format's own limits (e.g. Arm's 25..48 input bits), before anything is made from it.
  resolveFormat(options);
  return options;
}

function x86Width(width: number): PageTableOptions {
  if (width !== 48 && width !== 57) fail("EINVAL", `x86-64 address width is 48 or 57, got ${show(width)}`);
  return { format: "x86-64", levels: width === 57 ? 5 : 4 };
}

function vtdFlags(flags: number | VtdStage1Flags | ArmStage1Flags): DomainFlags {
  let bits: number;
  if (typeof flags === "number") {
    if (!Number.isInteger(flags) || flags < 0 || (flags & ~(VTD_S1_SRE | VTD_S1_EAFE | VTD_S1_WPE)) !== 0) {
      fail("EINVAL", `VT-d stage-1 flags ${show(flags)}: only SRE (1), EAFE (2) and WPE (4) are defined`);
    }
    bits = flags;
  } else {
    const f = switches(flags, ["sre", "wpe", "eafe"], "VT-d") as VtdStage1Flags;
    bits = (f.sre ? VTD_S1_SRE : 0) | (f.eafe ? VTD_S1_EAFE : 0) | (f.wpe ? VTD_S1_WPE : 0);
  }
  // VT-d first level always keeps A/D.
  return { sre: (bits & VTD_S1_SRE) !== 0, wpe: (bits & VTD_S1_WPE) !== 0, eafe: (bits & VTD_S1_EAFE) !== 0, accessedDirty: true };
}

function armDomain(addressWidth: number | undefined, flags: number | VtdStage1Flags | ArmStage1Flags): PageTableOptions & DomainFlags {
  if (typeof flags === "number") fail("EINVAL", "arm64 stage-1 flags are TCR-like fields ({ t0sz, tg0, ips, ha, hd }), not a number");
  const f = switches(flags, ["t0sz", "tg0", "ips", "ha", "hd"], "Arm") as ArmStage1Flags;
  let inputBits = addressWidth ?? 48;
  if (f.t0sz !== undefined) {
    if (!Number.isInteger(f.t0sz) || f.t0sz < 16 || f.t0sz > 39) fail("EINVAL", `T0SZ must be 16..39 (input size 48..25 bits), got ${show(f.t0sz)}`);
    if (addressWidth !== undefined && addressWidth !== 64 - f.t0sz) fail("EINVAL", `addressWidth ${addressWidth} disagrees with T0SZ ${f.t0sz} (${64 - f.t0sz} bits)`);
    inputBits = 64 - f.t0sz;
  }
  const tg0 = f.tg0 ?? 0;
  if (tg0 === 1 || tg0 === 2) fail("EOPNOTSUPP", `TG0 ${tg0} (${tg0 === 1 ? "64" : "16"} KiB granule) is not modelled; only 0 (4 KiB)`);
  if (tg0 !== 0) fail("EINVAL", `TG0 must be 0 (4 KiB), 1 (64 KiB) or 2 (16 KiB), got ${show(tg0)}`);
  const ips = f.ips ?? 5;
  if (ips === 6) fail("EOPNOTSUPP", "IPS 6 (52-bit output) is not modelled");
  if (!Number.isInteger(ips) || ips < 0 || ips > 5) fail("EINVAL", `IPS must be 0..5 (32..48 bits), got ${show(ips)}`);
  // Arm has no SRE/WPE gates: privileged requests are allowed and AP[2] binds them too.
  return { format: "arm64", inputBits, physAddrWidth: ARM_IPS_BITS[ips], sre: true, wpe: true, accessedDirty: f.ha === true, hd: f.hd === true };
}

/** The object's own keys must be known, booleans boolean and numbers numbers. */
function switches(flags: object, known: string[], who: string): Record<string, unknown> {
  if (flags === null || typeof flags !== "object") fail("EINVAL", `${who} stage-1 flags must be an object`);
  const record = flags as Record<string, unknown>;
  for (const [key, value] of Object.entries(record)) {
    if (!known.includes(key)) fail("EINVAL", `${who} stage-1 flags have no ${key} (known: ${known.join(", ")})`);
    const numeric = key === "t0sz" || key === "tg0" || key === "ips";
    if (value !== undefined && typeof value !== (numeric ? "number" : "boolean")) fail("EINVAL", `${who} stage-1 flag ${key} must be a ${numeric ? "number" : "boolean"}`);
  }
  return record;
}
