// Decoding one page-table entry for display: what kind it is at its level,
// where it points, and its named bits. The layouts follow the engine's format
// notes (assembly/fmt/*.ts); this module only reads entries, the walker in
// the library decides what they mean for a request.

const bit = (entry, n) => (entry >> BigInt(n)) & 1n;
const field = (entry, lo, width) => Number((entry >> BigInt(lo)) & ((1n << BigInt(width)) - 1n));
const ADDR_MASK_52 = 0x000f_ffff_ffff_f000n;
const ADDR_MASK_48 = 0x0000_ffff_ffff_f000n;

/** A leaf at `level` maps 2^(12 + 9 level) bytes: its low address bits are the page offset. */
const leafAddress = (entry, mask, level) => entry & mask & ~((1n << BigInt(12 + 9 * level)) - 1n);

/** A one-bit flag, shown lit when set. */
const flag = (name, on, title) => ({ name, on: on === 1n, title });
/** A multi-bit field, shown as name=value, lit when non-zero. */
const value = (name, v, title) => ({ name: `${name}=${v}`, on: v !== 0, title });

// x86-64 (IA-32e, VT-d first level). Bit 7 is PS above the leaf level and PAT in a PTE.
function decodeX86(entry, level) {
  const present = bit(entry, 0) === 1n;
  const large = level >= 1 && level <= 2 && bit(entry, 7) === 1n;
  const kind = !present ? "invalid" : level === 0 || large ? "leaf" : "table";
  const bits = [
    flag("P", bit(entry, 0), "present"),
    flag("RW", bit(entry, 1), "writable"),
    flag("US", bit(entry, 2), "user (non-privileged) access allowed"),
    flag("PWT", bit(entry, 3), "page write-through"),
    flag("PCD", bit(entry, 4), "page cache disable"),
    flag("A", bit(entry, 5), "accessed: set by the IOMMU when it uses the entry"),
    flag("D", bit(entry, 6), "dirty: set by the IOMMU on a write through this leaf"),
    level === 0 ? flag("PAT", bit(entry, 7), "page attribute table") : flag("PS", bit(entry, 7), "page size: this entry is a large leaf"),
    flag("G", bit(entry, 8), "global"),
    flag("EA", bit(entry, 10), "extended accessed (VT-d, with EAFE)"),
    flag("XD", bit(entry, 63), "execute disable"),
  ];
  return { kind, next: kind === "table" ? entry & ADDR_MASK_52 : kind === "leaf" ? leafAddress(entry, ADDR_MASK_52, level) : undefined, bits };
}

// VT-d second level: present means R or W; no privilege levels.
function decodeVtdSl(entry, level) {
  const present = (entry & 3n) !== 0n;
  const large = level >= 1 && level <= 2 && bit(entry, 7) === 1n;
  const kind = !present ? "invalid" : level === 0 || large ? "leaf" : "table";
  const bits = [
    flag("R", bit(entry, 0), "read"),
    flag("W", bit(entry, 1), "write"),
    flag("X", bit(entry, 2), "execute"),
    flag("PS", bit(entry, 7), "page size: this entry is a large leaf"),
    flag("A", bit(entry, 8), "accessed (second-level A/D)"),
    flag("D", bit(entry, 9), "dirty (second-level A/D)"),
    flag("SNP", bit(entry, 11), "snoop"),
  ];
  return { kind, next: kind === "table" ? entry & ADDR_MASK_52 : kind === "leaf" ? leafAddress(entry, ADDR_MASK_52, level) : undefined, bits };
}

// Arm VMSAv8-64 stage 1, 4 KiB granule. Bits 1:0 say table (11 above L3),
// block (01 at L1/L2) or page (11 at L3); table and leaf attributes differ.
function decodeArm64(entry, level) {
  const valid = bit(entry, 0) === 1n;
  const typeBit = bit(entry, 1) === 1n;
  let kind = "invalid";
  if (valid && level === 0) kind = typeBit ? "leaf" : "invalid";
  else if (valid) kind = typeBit ? "table" : level <= 2 ? "leaf" : "invalid";
  const head = [flag("V", bit(entry, 0), "valid"), flag(level === 0 ? "page" : "table", bit(entry, 1), "descriptor type: table (page at L3) or block")];
  const bits = kind === "table"
    ? [
      ...head,
      flag("PXNTable", bit(entry, 59), "no privileged execute below"),
      flag("UXNTable", bit(entry, 60), "no unprivileged execute below"),
      flag("APTable0", bit(entry, 61), "no EL0 access below"),
      flag("APTable1", bit(entry, 62), "read-only below"),
      flag("NSTable", bit(entry, 63), "non-secure below"),
    ]
    : [
      ...head,
      value("Attr", field(entry, 2, 3), "AttrIndx: MAIR index"),
      flag("NS", bit(entry, 5), "non-secure"),
      flag("AP1", bit(entry, 6), "AP[1]: EL0 (unprivileged) access"),
      flag("AP2", bit(entry, 7), "AP[2]: read-only"),
      value("SH", field(entry, 8, 2), "shareability (3: inner)"),
      flag("AF", bit(entry, 10), "access flag"),
      flag("nG", bit(entry, 11), "not global"),
      flag("DBM", bit(entry, 51), "dirty bit modifier (with TCR.HD)"),
      flag("Contig", bit(entry, 52), "contiguous hint"),
      flag("PXN", bit(entry, 53), "privileged execute never"),
      flag("UXN", bit(entry, 54), "unprivileged execute never"),
    ];
  return { kind, next: kind === "table" ? entry & ADDR_MASK_48 : kind === "leaf" ? leafAddress(entry, ADDR_MASK_48, level) : undefined, bits };
}

const DECODERS = { "x86-64": decodeX86, "vtd-sl": decodeVtdSl, arm64: decodeArm64 };

/** { kind: "table" | "leaf" | "invalid", next: the table or page it points to, bits: [{ name, on, title }] } */
export function decodeEntry(family, level, entry) {
  return DECODERS[family](entry, level);
}
