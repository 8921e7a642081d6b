// x86-64 IA-32e paging, 4 or 5 levels: VT-d first level and the process
// tables. Canonical input: sign-extended from bit 47 (or 56), so two ranges.
import * as abi from "../engine/abi.js";
import { fail } from "../errors.js";
import { U64_MAX } from "../addr.js";
import { show } from "../args.js";
import { RADIX_PAGE_SIZES, type FormatDescriptor } from "./descriptor.js";

export const x86_64: FormatDescriptor<"x86-64"> = {
  name: "x86-64",
  variants: [{ id: abi.FORMAT_X86_64, label: "x86-64", nesting: "stage1", switches: ["eafe"] }],
  resolve(options) {
    const levels = options.levels ?? 4;
    if (options.stage !== undefined) fail("EINVAL", "x86-64 has no stage option");
    if (levels !== 4 && levels !== 5) fail("EINVAL", `x86-64 has 4 or 5 levels, not ${show(levels)}`);
    if (options.inputBits !== undefined && options.inputBits !== 12 + 9 * levels) fail("EINVAL", `x86-64 with ${levels} levels has ${12 + 9 * levels} input bits`);
    const inputBits = 12 + 9 * levels;
    const half = 1n << BigInt(inputBits - 1);
    return {
      id: abi.FORMAT_X86_64, levels, inputBits,
      inputRanges: [[0n, half - 1n], [U64_MAX + 1n - half, U64_MAX]],
      defaultWidth: 52, minWidth: 32, maxWidth: 52, pageSizes: RADIX_PAGE_SIZES,
      // The one format with an NX-off mode (XD reserved).
      nx: options.nx ?? true,
      defaultAccessedDirty: true,
    };
  },
};
