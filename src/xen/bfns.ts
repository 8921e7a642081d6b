// Free bus frames of a driver domain's IOMMU table for one user (a shadow
// GTT): a bump pointer over [first, limit) and a free list per run size
// (single frames, and 512-frame runs aligned to 2 MiB). Alignment padding
// skipped by the bump pointer goes to the single-frame list, so nothing is
// lost. A run taken back is reused as it was given (runs are not merged or
// split: a shadow's 4 KiB and 2 MiB entries keep their own sizes).

export class BfnAllocator {
  private next: number;
  private readonly freeSmall: number[] = [];
  private readonly freeLarge: number[] = [];

  /** BFNs in [first, limit). */
  constructor(private readonly first: number, private readonly limit: number) {
    this.next = first;
  }

  /** The first BFN of a free run of `pages` (1, or 512 aligned to 512), or undefined when the range is used up. */
  alloc(pages: number): number | undefined {
    if (pages === 1) {
      const b = this.freeSmall.pop();
      if (b !== undefined) return b;
      if (this.next >= this.limit) return undefined;
      return this.next++;
    }
    const b = this.freeLarge.pop();
    if (b !== undefined) return b;
    const at = Math.ceil(this.next / pages) * pages;
    if (at + pages > this.limit) return undefined;
    for (let k = this.next; k < at; k++) this.freeSmall.push(k);
    this.next = at + pages;
    return at;
  }

  /** The run from bfn of `pages` is free again. */
  free(bfn: number, pages: number): void {
    (pages === 1 ? this.freeSmall : this.freeLarge).push(bfn);
  }

  /** BFNs handed out and not freed (for tests and stats). */
  get used(): number {
    return this.next - this.first - this.freeSmall.length - this.freeLarge.length * 512;
  }
}
