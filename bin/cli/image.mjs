// A RAM image (raw bytes from HPA 0, as QEMU's pmemsave writes them) loaded
// into a host, and a page table opened over a root inside it.
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { createHost } from "../../dist/iommu-wasm.js";
import { CliError, fileError, parseAddress, parseSmallInt } from "./args.mjs";
import { hex, sizeText } from "./text.mjs";

const PAGE = 4096n;
/** createHost's limit: RAM plus engine state must fit a 32-bit WebAssembly.Memory. */
const MAX_RAM = 3n << 30n;
const CHUNK = 64 << 20;

export const FORMATS = ["x86-64", "vtd-sl", "arm64"];

/** The options walk and dump share: which table, and how its format is configured. */
export const TABLE_OPTIONS = {
  format: { type: "string" },
  root: { type: "string" },
  levels: { type: "string" },
  "input-bits": { type: "string" },
  stage: { type: "string" },
  "phys-bits": { type: "string" },
  "no-nx": { type: "boolean" },
  ha: { type: "boolean" },
  hd: { type: "boolean" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
};

export const TABLE_OPTIONS_HELP = `table:
  --format F        x86-64 | vtd-sl | arm64 (required)
  --root HPA        the top-level table, 4 KiB aligned, inside the image (required)
  --levels N        x86-64: 4 (default) or 5; vtd-sl: 3, 4 (default) or 5
  --input-bits N    arm64: 25..48 (64 - T0SZ, default 48); vtd-sl: 39, 48 or 57
  --stage N         arm64: 1 (default) or 2
  --phys-bits N     physical-address width (default 52, arm64 48)
  --no-nx           x86-64: XD (bit 63) is a reserved bit, not execute-disable
  --ha              arm64: hardware-managed access flag (TCR.HA); without it AF=0 faults
  --hd              arm64 stage 1: hardware dirty state (TCR.HD, needs --ha)`;

/**
 * A host whose RAM holds the image at HPA 0. RAM is the image size rounded
 * up to 4 KiB (createHost's unit); the tail past the image reads as zeros.
 */
export async function loadImage(path) {
  let fd;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    throw fileError("image", path, e);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new CliError(`cannot read image ${path}: not a regular file`);
    const size = BigInt(stat.size);
    if (size === 0n) throw new CliError(`image ${path} is empty`);
    const ramSize = (size + PAGE - 1n) / PAGE * PAGE;
    if (ramSize > MAX_RAM) throw new CliError(`image ${path} is ${sizeText(size)}; the model's RAM holds at most 3 GiB`);
    // The CLI only probes tables: no IOTLB, DMA buffers or fault records needed, so keep those minimal.
    const host = await createHost({ ramSize, iotlb: { sets: 16, ways: 1 }, faultRingSize: 16, bufferArenaSize: 0 });
    copyInto(host, fd, path, Number(size));
    return { host, path, size };
  } finally {
    closeSync(fd);
  }
}

/** Reads the file straight into RAM through zero-copy views, a chunk at a time. */
function copyInto(host, fd, path, size) {
  let done = 0;
  while (done < size) {
    const view = host.ram.view(BigInt(done), Math.min(CHUNK, size - done));
    let filled = 0;
    while (filled < view.length) {
      let n;
      try {
        n = readSync(fd, view, filled, view.length - filled, done + filled);
      } catch (e) {
        throw fileError("image", path, e);
      }
      if (n === 0) throw new CliError(`image ${path} shrank while it was read`);
      filled += n;
    }
    done += filled;
  }
}

/** The page-table options from the command line, with only what was given (the library supplies defaults). */
export function tableOptions(values) {
  if (values.format === undefined) throw new CliError(`--format is required (${FORMATS.join(", ")})`);
  if (!FORMATS.includes(values.format)) throw new CliError(`unknown format ${JSON.stringify(values.format)} (${FORMATS.join(", ")})`);
  if (values.root === undefined) throw new CliError("--root is required (the HPA of the top-level table)");
  const options = {
    format: values.format,
    root: parseAddress(values.root, "root"),
    levels: parseSmallInt(values.levels, "levels"),
    inputBits: parseSmallInt(values["input-bits"], "input bits"),
    stage: parseSmallInt(values.stage, "stage"),
    physAddrWidth: parseSmallInt(values["phys-bits"], "physical-address width"),
    nx: values["no-nx"] ? false : undefined,
    accessedDirty: values.ha || undefined,
    hd: values.hd || undefined,
  };
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
}

/** A page table over the image's root: the root must be a whole 4 KiB page inside the image. */
export function openTable(image, options) {
  const { root } = options;
  if (root % PAGE !== 0n) throw new CliError(`root ${hex(root)} is not 4 KiB aligned`);
  if (root + PAGE > image.size) throw new CliError(`root ${hex(root)} is outside the ${sizeText(image.size)} image`);
  return image.host.createPageTable(options);
}

/**
 * Levels and input ranges of a table the library accepted, from the same
 * rules as its formats: x86-64 inputs are canonical (two halves), the
 * others run from 0 to 2^inputBits - 1.
 */
export function geometry(options) {
  const { format } = options;
  if (format === "x86-64") {
    const levels = options.levels ?? 4;
    const inputBits = 12 + 9 * levels;
    const half = 1n << BigInt(inputBits - 1);
    return { levels, inputBits, inputRanges: [[0n, half - 1n], [(1n << 64n) - half, (1n << 64n) - 1n]] };
  }
  const inputBits = options.inputBits ?? (format === "vtd-sl" ? 12 + 9 * (options.levels ?? 4) : 48);
  const levels = Math.ceil((inputBits - 12) / 9);
  return { levels, inputBits, inputRanges: [[0n, (1n << BigInt(inputBits)) - 1n]] };
}

/** Stage-2 tables (VT-d second level, Arm stage 2) have no privilege levels. */
export const isStage2 = (options) => options.format === "vtd-sl" || (options.format === "arm64" && options.stage === 2);

/** "x86-64 4-level", "arm64 stage 2, 40-bit input (3 levels)". */
export function describeTable(options) {
  const { levels, inputBits } = geometry(options);
  if (options.format === "arm64") return `arm64 stage ${options.stage ?? 1}, ${inputBits}-bit input (${levels} levels)`;
  return `${options.format} ${levels}-level`;
}

/** The name of an entry at a level (0 = leaf level of 4 KiB pages), as each architecture's manuals call it. */
export function levelName(format, level) {
  if (format === "x86-64") return ["PTE", "PDE", "PDPTE", "PML4E", "PML5E"][level];
  if (format === "vtd-sl") return ["SL-PTE", "SL-PDE", "SL-PDPE", "SL-PML4E", "SL-PML5E"][level];
  // Arm counts lookup levels from the top: its level 3 holds 4 KiB pages.
  return `Arm L${3 - level}`;
}

/** The table index an iova selects at a level: 9 bits per level above the 4 KiB offset. */
export const indexAt = (iova, level) => Number((iova >> BigInt(12 + 9 * level)) & 511n);

/** Bytes one entry at a level covers. */
export const spanAt = (level) => 1n << BigInt(12 + 9 * level);
