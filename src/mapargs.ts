// The operands of a map or unmap request on a page table, checked the way
// io-pgtable's callers check them: page-aligned, no wrap-around, inside the
// format's input address space. Host tables and guest tables share this.
import { toU64, lastOf, requireAligned, hex, PAGE_SIZE, type Address } from "./addr.js";
import { fail } from "./errors.js";
import type { ResolvedFormat } from "./format.js";

export interface Span { first: bigint; last: bigint }

/** Fails EINVAL unless [first, last] lies inside one of the format's input ranges. */
export function checkInputRange(format: ResolvedFormat, first: bigint, last: bigint, what: string): void {
  if (!format.inputRanges.some(([lo, hi]) => first >= lo && last <= hi)) {
    fail("EINVAL", `${what}: [${hex(first)}, ${hex(last)}] is outside the ${format.inputBits}-bit input address space`);
  }
}

/** The input span of an unmap: `inName` names the input address in messages ("iova", "gva"). */
export function unmapSpan(format: ResolvedFormat, input: Address, size: Address, inName: string): Span {
  const first = toU64(input, inName), s = toU64(size, "size");
  requireAligned(first, PAGE_SIZE, inName);
  requireAligned(s, PAGE_SIZE, "size");
  const last = lastOf(first, s, `unmap ${inName}`);
  checkInputRange(format, first, last, "unmap");
  return { first, last };
}

/** The input span and output span of a map; `outName` names the output address ("hpa", "gpa"). */
export function mapSpans(format: ResolvedFormat, input: Address, output: Address, size: Address,
  inName: string, outName: string): { input: Span; output: Span } {
  const first = toU64(input, inName), out = toU64(output, outName), s = toU64(size, "size");
  requireAligned(first, PAGE_SIZE, inName);
  requireAligned(out, PAGE_SIZE, outName);
  requireAligned(s, PAGE_SIZE, "size");
  const last = lastOf(first, s, `map ${inName}`);
  const outLast = lastOf(out, s, `map ${outName}`);
  checkInputRange(format, first, last, "map");
  return { input: { first, last }, output: { first: out, last: outLast } };
}
