// The self-tests' fixture: a table on a shared host, destroyed at the end of
// the test, with the kernel's exit-time leak check (generic_pt compares the
// node's secondary-page-table count before and after; here the host's free
// frames must be back where they were before the table was made).
import { expect } from "vitest";
import type { Host, PageTable, PageTableOptions } from "../../../src/index.js";

export interface Held {
  /** Frames the table holds now (its root and every table page below it, and any it lost). */
  (): number;
}

export function withTable(host: Host, options: PageTableOptions, body: (pt: PageTable, held: Held) => void): void {
  const before = host.ram.framesFree;
  const pt = host.createPageTable(options);
  try {
    body(pt, () => before - host.ram.framesFree);
  } finally {
    pt.destroy();
  }
  expect(host.ram.framesFree, "free frames after destroy() (the kernel's exit-time leak check)").toBe(before);
}

/** Frames a fresh table holds after `build` (its root included): what a table that reuses nothing should hold. */
export function freshFrames(host: Host, options: PageTableOptions, build: (pt: PageTable) => void): number {
  const before = host.ram.framesFree;
  const pt = host.createPageTable(options);
  try {
    build(pt);
    return before - host.ram.framesFree;
  } finally {
    pt.destroy();
  }
}

export const alignDown = (v: bigint, a: bigint): bigint => v - (v % a);
export const alignUp = (v: bigint, a: bigint): bigint => alignDown(v + a - 1n, a);
