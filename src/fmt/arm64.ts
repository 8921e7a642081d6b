// Arm VMSAv8-64, 4 KiB granule, stage 1 (TTBR0 region) or stage 2: the input
// size (64 - T0SZ) sets the levels walked.
import * as abi from "../engine/abi.js";
import { fail } from "../errors.js";
import { show } from "../args.js";
import { RADIX_PAGE_SIZES, fromZero, type FormatDescriptor } from "./descriptor.js";

export const arm64: FormatDescriptor<"arm64"> = {
  name: "arm64",
  variants: [
    { id: abi.FORMAT_ARM64_S1, label: "arm64 stage 1", nesting: "stage1", switches: ["hd"] },
    { id: abi.FORMAT_ARM64_S2, label: "arm64 stage 2", nesting: "stage2" },
  ],
  resolve(options) {
    const inputBits = options.inputBits ?? 48;
    if (!Number.isInteger(inputBits) || inputBits < 25 || inputBits > 48) fail("EINVAL", `arm64 inputBits (64 - T0SZ) must be 25..48, got ${show(inputBits)}`);
    const levels = Math.ceil((inputBits - 12) / 9);
    if (options.levels !== undefined && options.levels !== levels) fail("EINVAL", `arm64 with ${inputBits} input bits walks ${levels} levels`);
    const stage = options.stage ?? 1;
    if (stage !== 1 && stage !== 2) fail("EINVAL", `arm64 stage must be 1 or 2, got ${show(stage)}`);
    return {
      id: stage === 1 ? abi.FORMAT_ARM64_S1 : abi.FORMAT_ARM64_S2, levels, inputBits, inputRanges: fromZero(inputBits),
      defaultWidth: 48, minWidth: 32, maxWidth: 48, pageSizes: RADIX_PAGE_SIZES, nx: true, defaultAccessedDirty: false,
    };
  },
};
