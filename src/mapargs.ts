// The operands of a map or unmap request on a page table, checked the way
// io-pgtable's callers check them: page-aligned, no wrap-around, inside the
// format's input address space. Host tables and guest tables share this.
import { toU64, lastOf, requireAligned, hex, PAGE_SIZE, type Address } from "./addr.js";
import { fail } from "./errors.js";
import * as abi from "./engine/abi.js";
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

/** A host table's map: the spans, with the output inside the format's physical-address width. */
export function hostMapSpans(format: ResolvedFormat, iova: Address, hpa: Address, size: Address): { input: Span; output: Span } {
  const spans = mapSpans(format, iova, hpa, size, "iova", "hpa");
  if (spans.output.last >> BigInt(format.physAddrWidth) !== 0n) {
    fail("EINVAL", `map: hpa range ends at ${hex(spans.output.last)}, beyond the ${format.physAddrWidth}-bit physical address width`);
  }
  return spans;
}

/** What a host table's map status means for [first, last]: nothing on ST_OK, else the IommuError. */
export function hostMapStatus(st: number, first: bigint, last: bigint): void {
  if (st === abi.ST_OK) return;
  const range = `[${hex(first)}, ${hex(last)}]`;
  if (st === abi.ERR_EEXIST) fail("EEXIST", `map: ${range} overlaps an existing mapping`);
  if (st === abi.ERR_ENOMEM) fail("ENOMEM", `map: not enough free frames for the page tables of ${range}`);
  if (st === abi.ERR_EFAULT) fail("EFAULT", `map: a table on the path of ${range} lies outside RAM`);
  fail("EINVAL", `map: a table on the path of ${range} is reached twice (aliased, or in a cycle)`);
}

/** A root table given by address: 4 KiB aligned (EINVAL) and inside RAM (EFAULT), all `frames` of it. */
export function rootArg(root: Address, ramSize: bigint, frames = 1): bigint {
  const r = toU64(root, "root");
  requireAligned(r, PAGE_SIZE, "root");
  if (r + BigInt(frames) * PAGE_SIZE > ramSize) fail("EFAULT", `root ${hex(r)} (${frames} frame${frames === 1 ? "" : "s"}) is outside RAM`);
  return r;
}
