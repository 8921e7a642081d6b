// The pin records of a container's external pins: per IOVA page, the frame
// pinned and a reference count, in typed arrays behind a Map of slots. A
// vendor pins and unpins the same pages over and over: a record that drops
// to no reference stays in the Map as a dead slot, reused by the next pin of
// that page (V8's Map degrades to O(n) under set+delete churn, see
// src/dmaapi/live.ts), and the Map is rebuilt from the live records when the
// dead ones outnumber them. Nothing is allocated per pin.

/** The most references one record holds. */
export const MAX_REFS = 0xffffffff;

export class PinRecords {
  /** IOVA page number → slot. */
  private index = new Map<number, number>();
  private frames = new Uint32Array(64);
  private refs = new Uint32Array(64);
  private pages = new Float64Array(64);
  /** Slots no page holds. */
  private readonly spare: number[] = [];
  private slots = 0;
  private live = 0;
  private dead = 0;

  /** Pages with a record. */
  get size(): number { return this.live; }

  /** The page's references (0: no record). */
  refsOf(page: number): number {
    const s = this.index.get(page);
    return s === undefined ? 0 : this.refs[s];
  }

  /** The frame the page's record pins (the caller checked there is one). */
  frameOf(page: number): number { return this.frames[this.index.get(page)!]; }

  /** A new record: the page's frame, one reference. */
  add(page: number, frame: number): void {
    let s = this.index.get(page);
    if (s === undefined) {
      s = this.spare.pop() ?? this.grow();
      this.index.set(page, s);
      this.pages[s] = page;
    } else this.dead--;
    this.frames[s] = frame;
    this.refs[s] = 1;
    this.live++;
  }

  /** One reference more (the caller checked the record is there and below MAX_REFS). */
  ref(page: number): void { this.refs[this.index.get(page)!]++; }

  /** One reference less; returns those left (0: the record is gone). */
  unref(page: number): number {
    const s = this.index.get(page)!;
    const left = --this.refs[s];
    if (left === 0) {
      this.live--;
      if (++this.dead > this.live + 1024) this.compact();
    }
    return left;
  }

  /** Drops the records of pages [first, last] whatever their references; returns how many. */
  dropRange(first: number, last: number): number {
    let n = 0;
    for (const [page, s] of this.index) {
      if (page < first || page > last || this.refs[s] === 0) continue;
      this.refs[s] = 0;
      this.live--;
      this.dead++;
      n++;
    }
    if (this.dead > this.live + 1024) this.compact();
    return n;
  }

  private grow(): number {
    if (this.slots === this.refs.length) {
      const size = this.refs.length * 2;
      const frames = new Uint32Array(size), refs = new Uint32Array(size), pages = new Float64Array(size);
      frames.set(this.frames);
      refs.set(this.refs);
      pages.set(this.pages);
      this.frames = frames;
      this.refs = refs;
      this.pages = pages;
    }
    return this.slots++;
  }

  /** Only live records stay in the Map; dead slots become spare. */
  private compact(): void {
    const index = new Map<number, number>();
    for (const [page, s] of this.index) {
      if (this.refs[s] !== 0) index.set(page, s);
      else this.spare.push(s);
    }
    this.index = index;
    this.dead = 0;
  }
}
