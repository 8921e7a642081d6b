// VT-d second level, 3, 4 or 5 levels (39, 48 or 57 input bits): the host's
// stage 2 on Intel.
import * as abi from "../engine/abi.js";
import { fail } from "../errors.js";
import { show } from "../args.js";
import { RADIX_PAGE_SIZES, fromZero, type FormatDescriptor } from "./descriptor.js";

const INPUT_BITS_BY_LEVELS: Record<number, number> = { 3: 39, 4: 48, 5: 57 };

export const vtdSl: FormatDescriptor<"vtd-sl"> = {
  name: "vtd-sl",
  variants: [{ id: abi.FORMAT_VTD_SL, label: "vtd-sl", nesting: "stage2" }],
  resolve(options) {
    // A second-stage format: stage 2 may be said, nothing else.
    if (options.stage !== undefined && options.stage !== 2) fail("EINVAL", `vtd-sl is VT-d's second stage: stage must be 2 or left out, got ${show(options.stage)}`);
    const inputBits = options.inputBits ?? INPUT_BITS_BY_LEVELS[options.levels ?? 4];
    const levels = (inputBits - 12) / 9;
    if (![39, 48, 57].includes(inputBits) || (options.levels !== undefined && options.levels !== levels)) {
      fail("EINVAL", `vtd-sl walks 3, 4 or 5 levels for 39, 48 or 57 input bits, got levels ${show(options.levels)}, inputBits ${show(options.inputBits)}`);
    }
    return {
      id: abi.FORMAT_VTD_SL, levels, inputBits, inputRanges: fromZero(inputBits),
      defaultWidth: 52, minWidth: 32, maxWidth: 52, pageSizes: RADIX_PAGE_SIZES, nx: true, defaultAccessedDirty: false,
    };
  },
};
