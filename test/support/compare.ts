// Comparing the engine with its naive twin: deep, strict equality (class,
// bigint, undefined keys) with a short message naming the first difference.
import { isDeepStrictEqual } from "node:util";
import { expect } from "vitest";

/** JSON with bigints in hex and byte arrays summarised, for failure messages. */
export function show(value: unknown): string {
  return JSON.stringify(value, (_k, v) => {
    if (typeof v === "bigint") return "0x" + v.toString(16);
    if (v instanceof Uint8Array) return v.length <= 32 ? `bytes[${Array.from(v).join(",")}]` : `bytes(${v.length})[${Array.from(v.subarray(0, 16)).join(",")},…]`;
    return v === undefined ? "undefined" : v;
  });
}

function firstDifference(a: unknown, b: unknown, path = ""): string {
  if (a instanceof Uint8Array && b instanceof Uint8Array) {
    let i = 0;
    while (i < a.length && a[i] === b[i]) i++;
    return `${path}: byte ${i} differs (twin ${a[i]}, engine ${b[i]}, lengths ${a.length}/${b.length})`;
  }
  if (a && b && typeof a === "object" && typeof b === "object") {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const x = (a as Record<string, unknown>)[k], y = (b as Record<string, unknown>)[k];
      if (!isDeepStrictEqual(x, y)) return firstDifference(x, y, `${path}.${k}`);
    }
  }
  return `${path}: twin ${show(a)}, engine ${show(b)}`;
}

export function expectSame(twin: unknown, engine: unknown, where: string): void {
  if (isDeepStrictEqual(twin, engine)) return;
  expect.fail(`${where}\n  ${firstDifference(twin, engine)}\n  twin:   ${show(twin).slice(0, 2000)}\n  engine: ${show(engine).slice(0, 2000)}`);
}
