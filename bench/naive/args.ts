// Argument checks and encodings: the twin uses the facade's own, so the same
// inputs are refused with the same errno by construction. The twin restates
// the data plane (walks, IOTLB, builder, DMA), not the argument parsing.
export { U64_MAX, PAGE_SIZE, toU64, toLength, lastOf, requireAligned, hex } from "../../src/addr.js";
export { fail } from "../../src/errors.js";
export { checkPasid } from "../../src/dma.js";
export { accessBits, accessFlags, permsOf, protBits, reasonName } from "../../src/access.js";
export { hostMapSpans, hostMapStatus, rootArg, unmapSpan } from "../../src/mapargs.js";
export { domainParts, invalidateScope, translatePasid, batchArrays } from "../../src/domainargs.js";
