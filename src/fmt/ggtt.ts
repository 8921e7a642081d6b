// Intel GPU global GTT (the package's model): one level, an array of
// `entries` u64s at the root, entry n for the 4 KiB page n; output addresses
// are 39 bits wide. Entries are a power of two from 512 (one page of
// entries, a 2 MiB graphics memory space) to 2^20 (4 GiB, the most a GGTT
// maps); the array takes entries × 8 bytes of contiguous RAM, so a root
// spans entries / 512 frames. Over a stage 2 (createDomain({ format: "ggtt",
// entries, stage2 })) the table is still host-physical and what it maps to
// is an IOVA, translated through the stage-2 domain.
import * as abi from "../engine/abi.js";
import { fail } from "../errors.js";
import { integer, show } from "../args.js";
import { PAGE_4K, fromZero, type FormatDescriptor } from "./descriptor.js";

const ENTRIES_MIN_LOG = 9;
const ENTRIES_MAX_LOG = 20;

/** log2 of the entries the options ask for, from `entries` or `inputBits` (12 + log2(entries)), which must agree. */
function entriesLog(options: { entries?: unknown; inputBits?: number }): number {
  let log: number | undefined;
  if (options.entries !== undefined) {
    const entries = integer(options.entries, "ggtt entries", 2 ** ENTRIES_MIN_LOG, 2 ** ENTRIES_MAX_LOG);
    log = Math.log2(entries);
    if (!Number.isInteger(log)) fail("EINVAL", `ggtt entries must be a power of two, got ${entries}`);
  }
  if (options.inputBits !== undefined) {
    const fromBits = options.inputBits - 12;
    if (fromBits < ENTRIES_MIN_LOG || fromBits > ENTRIES_MAX_LOG) fail("EINVAL", `ggtt inputBits must be ${12 + ENTRIES_MIN_LOG}..${12 + ENTRIES_MAX_LOG}, got ${show(options.inputBits)}`);
    if (log !== undefined && log !== fromBits) fail("EINVAL", `ggtt with ${2 ** log} entries has ${12 + log} input bits, not ${options.inputBits}`);
    log = fromBits;
  }
  if (log === undefined) fail("EINVAL", "ggtt needs entries (a power of two, 512..2^20), or inputBits (12 + log2 entries)");
  return log;
}

export const ggtt: FormatDescriptor<"ggtt"> = {
  name: "ggtt",
  // Over a stage 2 its tables stay host-physical: the GPU reads the GGTT from host memory, and its entries hold IOVAs.
  variants: [{ id: abi.FORMAT_GGTT, label: "ggtt", nesting: "phys-stage1" }],
  optionKeys: ["entries"],
  resolve(options) {
    if (options.stage !== undefined) fail("EINVAL", "ggtt has no stage option");
    if (options.levels !== undefined && options.levels !== 1) fail("EINVAL", `ggtt has one level, not ${show(options.levels)}`);
    const log = entriesLog(options);
    const inputBits = 12 + log;
    return {
      id: abi.FORMAT_GGTT, levels: 1, inputBits, inputRanges: fromZero(inputBits),
      defaultWidth: 39, minWidth: 39, maxWidth: 39, pageSizes: [PAGE_4K], nx: true, defaultAccessedDirty: false,
      rootFrames: 2 ** (log - ENTRIES_MIN_LOG),
    };
  },
};
