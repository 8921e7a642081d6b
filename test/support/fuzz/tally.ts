// Counting what the fuzzer saw, and grouping findings into causes: one cause
// is one method failing one way (its error message with the numbers taken
// out), however many calls and hostile values hit it. Each cause keeps its
// first example, with the seed and call number that replay it.

export type Category =
  | "returned" | "refused" | "raw exception" | "trap" | "state change after refusal" | "hang"
  | "accepted a misspelled option" | "accepted a wrong-typed option" | "partial batch (documented)";

/** The categories the test requires to stay at zero. */
export const FAILING: readonly Category[] = ["raw exception", "trap", "state change after refusal"];

export interface Example {
  seed: number;
  call: number;
  target: string;
  method: string;
  /** Which argument was hostile (0-based), and what it was. */
  position: number;
  argument: string;
  /** The error (name: message), or what changed. */
  detail: string;
  /** The first stack frame in src/, when an error has one. */
  frame?: string;
}

export interface Cause { category: Category; key: string; count: number; example: Example }

/** A message with its numbers, hex and quoted values masked, so the same failure on different values is one cause. */
export function messageShape(message: string): string {
  return message
    .replace(/0x[0-9a-f]+n?/gi, "#")
    .replace(/\b\d+n?\b/g, "#")
    .replace(/"[^"]*"/g, '"…"')
    .slice(0, 90);
}

export class Tally {
  readonly counts = new Map<Category, number>();
  readonly causes = new Map<string, Cause>();
  readonly callsPerMethod = new Map<string, number>();
  readonly errnos = new Map<string, number>();
  calls = 0;
  rebuilds = 0;
  rebuildMs = 0;
  slowest = { ms: 0, method: "" };

  count(category: Category): void {
    this.counts.set(category, (this.counts.get(category) ?? 0) + 1);
  }

  called(method: string): void {
    this.calls++;
    this.callsPerMethod.set(method, (this.callsPerMethod.get(method) ?? 0) + 1);
  }

  errno(code: string): void {
    this.errnos.set(code, (this.errnos.get(code) ?? 0) + 1);
  }

  /** Counts the finding and files it under its cause. */
  finding(category: Category, causeKey: string, example: Example): void {
    this.count(category);
    const key = `${category}\u0000${causeKey}`;
    const cause = this.causes.get(key);
    if (cause) cause.count++;
    else this.causes.set(key, { category, key: causeKey, count: 1, example });
  }

  of(category: Category): number {
    return this.counts.get(category) ?? 0;
  }

  causesOf(category: Category): Cause[] {
    return [...this.causes.values()].filter((c) => c.category === category).sort((a, b) => b.count - a.count || a.key.localeCompare(b.key));
  }

  merge(other: Tally): void {
    for (const [k, v] of other.counts) this.counts.set(k, (this.counts.get(k) ?? 0) + v);
    for (const [k, v] of other.callsPerMethod) this.callsPerMethod.set(k, (this.callsPerMethod.get(k) ?? 0) + v);
    for (const [k, v] of other.errnos) this.errnos.set(k, (this.errnos.get(k) ?? 0) + v);
    for (const [k, c] of other.causes) {
      const mine = this.causes.get(k);
      if (mine) mine.count += c.count;
      else this.causes.set(k, { ...c });
    }
    this.calls += other.calls;
    this.rebuilds += other.rebuilds;
    this.rebuildMs += other.rebuildMs;
    if (other.slowest.ms > this.slowest.ms) this.slowest = { ...other.slowest };
  }
}

const CATEGORY_ORDER: readonly Category[] = [
  "returned", "refused", "partial batch (documented)", "raw exception", "trap", "state change after refusal", "hang",
  "accepted a misspelled option", "accepted a wrong-typed option",
];

export function describeExample(e: Example): string {
  const where = e.frame ? ` at ${e.frame}` : "";
  return `${e.method}(arg ${e.position} = ${e.argument}) on ${e.target}: ${e.detail}${where} [seed ${e.seed}, call ${e.call}]`;
}

/** The summary a run prints: counts per category, errnos, then the causes of each finding category. */
export function report(t: Tally, methodsEnumerated: number, top = 30): string {
  const lines: string[] = [];
  lines.push(`API fuzz: ${t.calls} calls, ${t.rebuilds} host rebuilds (${(t.rebuildMs / 1000).toFixed(1)} s), slowest call ${t.slowest.ms.toFixed(0)} ms (${t.slowest.method})`);
  for (const c of CATEGORY_ORDER) lines.push(`  ${c.padEnd(30)} ${String(t.of(c)).padStart(8)}`);
  const errnos = [...t.errnos].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(", ");
  lines.push(`  errnos: ${errnos || "none"}`);
  const perMethod = [...t.callsPerMethod.values()];
  lines.push(`  methods called: ${t.callsPerMethod.size} of ${methodsEnumerated} enumerated (fewest calls to one: ${perMethod.length ? Math.min(...perMethod) : 0})`);
  for (const category of ["raw exception", "trap", "state change after refusal", "hang", "accepted a misspelled option", "accepted a wrong-typed option"] as const) {
    const causes = t.causesOf(category);
    if (causes.length === 0) continue;
    lines.push("", `${category}: ${causes.length} distinct cause(s)${causes.length > top ? `, top ${top}` : ""}`);
    for (const c of causes.slice(0, top)) lines.push(`  ${String(c.count).padStart(6)} × ${c.key}`, `           e.g. ${describeExample(c.example)}`);
  }
  return lines.join("\n");
}
