// The one argument-checking layer: every public entry point reads its
// arguments through these before it touches the engine or any state, so a bad
// argument is an IommuError (EINVAL, naming it) and never a raw TypeError, a
// silent default or a WASM trap. Each value is read once, and a message never
// throws whatever it describes (symbols, detached views, revoked proxies).
import { fail } from "./errors.js";

/** A short, safe description of any value for an error message. */
export function show(value: unknown): string {
  try {
    switch (typeof value) {
      case "string": return JSON.stringify(value.length > 40 ? value.slice(0, 40) + "…" : value);
      case "bigint": return `${value}n`;
      case "number": case "boolean": case "undefined": return String(value);
      case "symbol": return "a symbol";
      case "function": return "a function";
    }
    if (value === null) return "null";
    if (Array.isArray(value)) return `an array of ${value.length}`;
    if (ArrayBuffer.isView(value)) return `a ${value.constructor.name}${value.byteLength === 0 && value.buffer.byteLength === 0 ? " (detached or empty)" : ` of ${(value as unknown as { length?: number }).length ?? value.byteLength}`}`;
    const name = Object.getPrototypeOf(value)?.constructor?.name;
    return name && name !== "Object" ? `a ${name}` : "an object";
  } catch {
    return "a value that cannot be inspected";
  }
}

/** The closest known name, for "did you mean": same letters in another case, or at most two edits away. */
function suggest(key: string, known: readonly string[]): string {
  const lower = key.toLowerCase();
  let best: string | undefined, bestDistance = 3;
  for (const k of known) {
    const d = k.toLowerCase() === lower ? 0 : editDistance(lower, k.toLowerCase());
    if (d < bestDistance) { best = k; bestDistance = d; }
  }
  return best === undefined ? ` (known: ${known.join(", ")})` : ` (did you mean ${best}?)`;
}

/** Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value) || ArrayBuffer.isView(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * An options object: undefined is {}; anything but a plain object, or a key
 * not in `known`, is EINVAL. Returns a copy holding the known keys' values,
 * each read once (a throwing getter or proxy is EINVAL too).
 */
export function options<K extends string>(value: unknown, what: string, known: readonly K[]): { [P in K]?: unknown } {
  if (value === undefined) return {};
  try {
    if (!isPlainObject(value)) fail("EINVAL", `${what} must be an object with ${known.join(", ")}; got ${show(value)}`);
    for (const key of Reflect.ownKeys(value)) {
      if (typeof key === "symbol") fail("EINVAL", `${what} has a symbol key; known: ${known.join(", ")}`);
      if (!(known as readonly string[]).includes(key)) fail("EINVAL", `${what} has no option ${JSON.stringify(key)}${suggest(key, known)}`);
    }
    const out: { [P in K]?: unknown } = {};
    for (const key of known) {
      const v = value[key];
      if (v !== undefined) out[key] = v;
    }
    return out;
  } catch (e) {
    if (e instanceof Error && e.name === "IommuError") throw e;
    return fail("EINVAL", `${what} cannot be read: ${show(value)}`);
  }
}

/**
 * A cheap check for a per-call path: a plain object whose enumerable keys are
 * all in `known`. False when in doubt (a proxy, a symbol key is not seen
 * here): the caller then reads it with options(), which refuses precisely.
 */
export function knownPlainKeys(value: unknown, known: readonly string[]): value is Record<string, unknown> {
  try {
    if (!isPlainObject(value)) return false;
    for (const key in value) if (!known.includes(key)) return false;
    return Object.getOwnPropertySymbols(value).length === 0;
  } catch {
    return false;
  }
}

/**
 * Options on a per-call path (DMA, sg, PASID requests): a plain object of known keys is used as it is
 * (no copy: a device model passes one with every call), each field read once
 * by the caller through field(); anything else goes through options(), which
 * copies or refuses it.
 */
export function perCallOptions<K extends string>(opts: unknown, what: string, known: readonly K[]): { [P in K]?: unknown } {
  return knownPlainKeys(opts, known) ? (opts as { [P in K]?: unknown }) : options(opts, what, known);
}

/** One field of per-call options; a getter that throws is a refusal, never a raw exception. */
export function field<K extends string>(o: { [P in K]?: unknown }, key: K, what: string): unknown {
  try {
    return o[key];
  } catch {
    return fail("EINVAL", `${what}.${key} cannot be read`);
  }
}

/** A boolean option; undefined gives `fallback`. Truthy strings or numbers are not booleans. */
export function bool(value: unknown, what: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") fail("EINVAL", `${what} must be true or false, got ${show(value)}`);
  return value;
}

/** An integer number in [lo, hi]. */
export function integer(value: unknown, what: string, lo: number, hi: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < lo || value > hi) {
    fail("EINVAL", `${what} must be an integer in ${lo}..${hi}, got ${show(value)}`);
  }
  return value;
}

/** A function (a callback). */
export function func<F extends (...args: never[]) => unknown>(value: unknown, what: string): F {
  if (typeof value !== "function") fail("EINVAL", `${what} must be a function, got ${show(value)}`);
  return value as F;
}

/** One of a few strings. */
export function oneOf<T extends string>(value: unknown, what: string, choices: readonly T[]): T {
  if (typeof value !== "string" || !(choices as readonly string[]).includes(value)) {
    fail("EINVAL", `${what} must be ${choices.map((c) => JSON.stringify(c)).join(", ")}; got ${show(value)}`);
  }
  return value as T;
}

/** Whether value is an instance of kind; a proxy whose traps throw (or a revoked one) is not. */
export function isInstance<T>(value: unknown, kind: abstract new (...args: never[]) => T): value is T {
  try {
    return value instanceof kind;
  } catch {
    return false;
  }
}

/** Bytes: a Uint8Array (not a view of another element type, not detached). */
export function bytes(value: unknown, what: string): Uint8Array {
  // isView first: it runs no proxy trap, so only real views reach instanceof.
  if (!ArrayBuffer.isView(value) || !isInstance(value, Uint8Array)) fail("EINVAL", `${what} must be a Uint8Array, got ${show(value)}`);
  // byteLength first: reading .buffer of a small array makes V8 give it a real ArrayBuffer, which is slow.
  if (value.byteLength === 0 && value.buffer.byteLength === 0 && isDetached(value.buffer)) fail("EINVAL", `${what} is a detached Uint8Array`);
  return value;
}

/** A typed array of one kind (BigUint64Array, Uint32Array, ...). */
export function typedArray<T extends ArrayBufferView>(value: unknown, what: string, kind: { new (...args: never[]): T; name: string }): T {
  if (!ArrayBuffer.isView(value) || !isInstance(value, kind)) fail("EINVAL", `${what} must be a ${kind.name}, got ${show(value)}`);
  return value;
}

/** A real array (copied, so a caller's later change cannot reach what was checked). */
export function list(value: unknown, what: string): unknown[] {
  try {
    if (Array.isArray(value)) return [...value];
  } catch {
    // A revoked proxy, or one whose traps throw: not an array we can read.
  }
  return fail("EINVAL", `${what} must be an array, got ${show(value)}`);
}

function isDetached(buffer: ArrayBufferLike): boolean {
  // ArrayBuffer.prototype.detached is newer than Node 20; a detached buffer refuses slice().
  const flag = (buffer as { detached?: boolean }).detached;
  if (typeof flag === "boolean") return flag;
  try {
    buffer.slice(0, 0);
    return false;
  } catch {
    return true;
  }
}
