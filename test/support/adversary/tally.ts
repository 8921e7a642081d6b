// What the adversary counts: each kind of violation with its first few
// examples, and how much it did (operations, DMAs, DMAs that moved data).

export const VIOLATIONS = {
  breach: "breaches (a DMA reached a frame it must not)",
  stale: "stale or wrong translations where the model knows the answer (after a covering invalidation)",
  wrongKind: "wrong-kind exceptions (thrown, not an IommuError with an errno)",
  invalidAccepted: "invalid operations accepted",
  refusedSideEffect: "refused calls with side effects",
  validRefused: "valid operations refused",
  wrongResult: "wrong results (a returned value or visible state the model disagrees with)",
} as const;

export type Violation = keyof typeof VIOLATIONS;

const EXAMPLES = 4;

export class Tally {
  readonly counts = Object.fromEntries(Object.keys(VIOLATIONS).map((k) => [k, 0])) as Record<Violation, number>;
  readonly examples = Object.fromEntries(Object.keys(VIOLATIONS).map((k) => [k, [] as string[]])) as Record<Violation, string[]>;
  ops = 0;
  dmas = 0;
  dmaMoved = 0;
  /** Pages of PASID DMAs judged against the model's exact answer (a builder table, nothing stale left). */
  exactPages = 0;
  refused = 0;
  /** Runs stopped early because a write corrupted memory the oracle cannot restore. */
  aborted = 0;

  note(kind: Violation, where: string, what: string): void {
    this.counts[kind]++;
    if (this.examples[kind].length < EXAMPLES) this.examples[kind].push(`${where}: ${what}`);
  }

  add(other: Tally): void {
    for (const k of Object.keys(VIOLATIONS) as Violation[]) {
      this.counts[k] += other.counts[k];
      for (const e of other.examples[k]) if (this.examples[k].length < EXAMPLES) this.examples[k].push(e);
    }
    this.ops += other.ops;
    this.dmas += other.dmas;
    this.dmaMoved += other.dmaMoved;
    this.exactPages += other.exactPages;
    this.refused += other.refused;
    this.aborted += other.aborted;
  }

  report(title: string): string {
    const lines = [`${title}: ${this.ops} control operations (${this.refused} refused), ${this.dmas} DMAs, ${this.dmaMoved} moved data (${percent(this.dmaMoved, this.dmas)}), ` +
      `${this.exactPages} PASID DMA pages judged exactly` +
      (this.aborted ? `, ${this.aborted} runs stopped early on unrestorable corruption` : "")];
    for (const k of Object.keys(VIOLATIONS) as Violation[]) {
      lines.push(`  ${String(this.counts[k]).padStart(5)}  ${VIOLATIONS[k]}`);
      for (const e of this.examples[k]) lines.push(`         - ${e}`);
    }
    return lines.join("\n");
  }
}

function percent(a: number, b: number): string {
  return b === 0 ? "0 %" : `${((100 * a) / b).toFixed(1)} %`;
}
