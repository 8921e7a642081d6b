// What the page-table self-tests believe is mapped: disjoint intervals
// [start, end) of input addresses, each with the output address of its start.
// It is the test's own record (the kernel's test_random_map keeps a maple
// tree for the same purpose), kept apart from the engine it checks.
export interface Mapping {
  /** First input address. */
  start: bigint;
  /** One past the last input address. */
  end: bigint;
  /** Output address of `start`. */
  hpa: bigint;
}

export class MappedRanges {
  /** Sorted by start, pairwise disjoint. */
  private list: Mapping[] = [];

  get size(): number { return this.list.length; }

  all(): readonly Mapping[] { return this.list; }

  /** The first index whose mapping ends after `iova`. */
  private firstEndingAfter(iova: bigint): number {
    let lo = 0, hi = this.list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.list[mid].end <= iova) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Every mapping that shares an address with [start, end). */
  overlapping(start: bigint, end: bigint): Mapping[] {
    const out: Mapping[] = [];
    for (let i = this.firstEndingAfter(start); i < this.list.length && this.list[i].start < end; i++) out.push(this.list[i]);
    return out;
  }

  /** Records a mapping; the oracle itself refuses an overlap (a bug in the test, not in the engine). */
  add(m: Mapping): void {
    if (m.end <= m.start) throw new Error(`oracle: empty mapping at 0x${m.start.toString(16)}`);
    if (this.overlapping(m.start, m.end).length) throw new Error(`oracle: 0x${m.start.toString(16)} overlaps a recorded mapping`);
    this.list.splice(this.firstEndingAfter(m.start), 0, { ...m });
  }

  remove(m: Mapping): void {
    const i = this.list.findIndex((x) => x.start === m.start && x.end === m.end);
    if (i < 0) throw new Error(`oracle: no mapping at 0x${m.start.toString(16)}`);
    this.list.splice(i, 1);
  }

  /** Where iova should translate to, or undefined when nothing is recorded there. */
  translate(iova: bigint): bigint | undefined {
    const i = this.firstEndingAfter(iova);
    const m = this.list[i];
    return m && m.start <= iova ? m.hpa + (iova - m.start) : undefined;
  }

  /** Bytes recorded as mapped. */
  bytes(): bigint {
    return this.list.reduce((n, m) => n + (m.end - m.start), 0n);
  }
}
