// The hostile pool: what a careless or hostile caller passes where the API
// wants an address, a length, bytes, an options object or a callback. Each
// entry makes a fresh value per call (a detached view, a revoked proxy or a
// throwing getter must not be shared between calls).
//
// Some entries are derived from the valid value at that position: a valid
// options object (or the first entry of a valid list of them) with one key
// misspelled, one value of the wrong type, one value from the plain pool, one
// key behind a throwing getter, or one key that reads valid once and hostile
// after. They get past "is it an object" and test what the call does with its
// keys. With no object there, they fall back to the issue's own examples
// ({ reda: true }, { write: "4" }, ...). A list whose first entry is hostile
// covers segments, ranges and invalidation entries.
import type { Rng } from "./rng.js";

/** Thrown by the pool's getters and proxy traps: seen outside the library, it means a value was read unguarded. */
export class HostileValueError extends Error {
  constructor(what: string) {
    super(`hostile ${what} threw when read`);
    this.name = "HostileValueError";
  }
}

/**
 * "misspelled" and "wrong-type" values test the silent-guess rule: a call
 * that accepts one has ignored a key or coerced a value.
 */
export type HostileKind = "plain" | "misspelled" | "wrong-type";

export interface HostileValue {
  value: unknown;
  /** How the report names it, e.g. `'4'` or `misspelled key "raed" (for "read")`. */
  description: string;
  kind: HostileKind;
}

interface HostileMaker {
  name: string;
  make(valid: unknown, rng: Rng): HostileValue;
}

const plain = (name: string, make: () => unknown): HostileMaker => ({
  name,
  make: () => ({ value: make(), description: name, kind: "plain" }),
});

type Options = Record<string, unknown>;

function isOptions(value: unknown): value is Options {
  return typeof value === "object" && value !== null && Object.getPrototypeOf(value) === Object.prototype;
}

/**
 * The options object a derived value starts from: the valid value itself, or
 * the first entry of a valid list of options (sg segments, ranges, entries),
 * with a function that puts the changed copy back in its place.
 */
function optionsAt(valid: unknown): { options: Options; wrap: (changed: unknown) => unknown; where: string } | undefined {
  if (isOptions(valid) && Object.keys(valid).length > 0) return { options: valid, wrap: (c) => c, where: "" };
  if (Array.isArray(valid) && isOptions(valid[0]) && Object.keys(valid[0]).length > 0) {
    return { options: valid[0], wrap: (c) => [c, ...valid.slice(1)], where: " in entry 0" };
  }
  return undefined;
}

/** A near miss of key: two neighbours swapped, a letter dropped, or the first letter's case flipped. */
function misspell(key: string, rng: Rng): string {
  const candidates: string[] = [];
  for (let i = 0; i + 1 < key.length; i++) {
    const swapped = key.slice(0, i) + key[i + 1] + key[i] + key.slice(i + 2);
    if (swapped !== key) candidates.push(swapped);
  }
  if (key.length > 2) candidates.push(key.slice(0, -1));
  const flipped = (key[0] === key[0].toUpperCase() ? key[0].toLowerCase() : key[0].toUpperCase()) + key.slice(1);
  if (flipped !== key) candidates.push(flipped);
  return candidates.length > 0 ? rng.pick(candidates) : key + "x";
}

/** A value no documented option takes for a key holding `value`: a string for everything but strings. */
function wrongTyped(value: unknown): unknown {
  switch (typeof value) {
    case "boolean": return String(value);
    case "number": return String(value);
    case "bigint": return String(value);
    case "string": return 4;
    case "function": return "a function's name";
    default: return "4";
  }
}

function describeValue(value: unknown): string {
  return typeof value === "string" ? JSON.stringify(value) : typeof value === "bigint" ? `${value}n` : String(value);
}

const misspelledKey: HostileMaker = {
  name: "misspelled option key",
  make(valid, rng) {
    const at = optionsAt(valid);
    if (!at) {
      const [key, value] = rng.pick([["reda", true], ["wriet", true], ["ramSiez", 0x100000], ["pasdi", 1]] as const);
      return { value: { [key]: value }, description: `{ ${key}: ${describeValue(value)} }`, kind: "misspelled" };
    }
    const keys = Object.keys(at.options);
    const key = rng.pick(keys);
    const typo = misspell(key, rng);
    const changed: Options = {};
    for (const k of keys) changed[k === key ? typo : k] = at.options[k];
    return { value: at.wrap(changed), description: `misspelled key "${typo}" (for "${key}")${at.where}`, kind: "misspelled" };
  },
};

const wrongTypedValue: HostileMaker = {
  name: "wrong-typed option value",
  make(valid, rng) {
    const at = optionsAt(valid);
    if (!at) {
      const [key, value] = rng.pick([["write", "4"], ["pasid", "1"], ["read", 1]] as const);
      return { value: { [key]: value }, description: `{ ${key}: ${describeValue(value)} }`, kind: "wrong-type" };
    }
    const key = rng.pick(Object.keys(at.options));
    const bad = wrongTyped(at.options[key]);
    return { value: at.wrap({ ...at.options, [key]: bad }), description: `${key}: ${describeValue(bad)}${at.where}`, kind: "wrong-type" };
  },
};

/** A valid options object (or list entry) with one key's value taken from the plain pool: a symbol, a revoked proxy, 2n**64n... */
const hostileOptionValue: HostileMaker = {
  name: "hostile option value",
  make(valid, rng) {
    const inner = rng.pick(PLAIN_POOL).make(undefined, rng);
    const at = optionsAt(valid);
    if (!at) return { value: { pasid: inner.value }, description: `{ pasid: ${inner.description} }`, kind: "plain" };
    const key = rng.pick(Object.keys(at.options));
    return { value: at.wrap({ ...at.options, [key]: inner.value }), description: `${key}: ${inner.description}${at.where}`, kind: "plain" };
  },
};

/** A list whose first entry is hostile: where the API wants segments, ranges or entries. */
const hostileListEntry: HostileMaker = {
  name: "hostile list entry",
  make(valid, rng) {
    const inner = rng.pick(PLAIN_POOL).make(undefined, rng);
    const rest = Array.isArray(valid) ? valid.slice(1) : [];
    return { value: [inner.value, ...rest], description: `[${inner.description}${rest.length ? ", …" : ""}]`, kind: "plain" };
  },
};

/**
 * A valid options object whose key reads as valid once and hostile after:
 * a call that reads a value twice checks one value and uses another.
 */
const changingGetter: HostileMaker = {
  name: "getter that changes after the first read",
  make(valid, rng) {
    const at = optionsAt(valid);
    if (!at) return rng.pick(PLAIN_POOL).make(valid, rng);
    const key = rng.pick(Object.keys(at.options));
    const first = at.options[key];
    const later = rng.pick(PLAIN_POOL).make(undefined, rng);
    let reads = 0;
    const changed: Options = { ...at.options };
    Object.defineProperty(changed, key, { enumerable: true, configurable: true, get: () => (reads++ === 0 ? first : later.value) });
    return { value: at.wrap(changed), description: `${key} valid on the first read, then ${later.description}${at.where}`, kind: "plain" };
  },
};

const throwingGetter: HostileMaker = {
  name: "throwing getter",
  make(valid, rng) {
    const at = optionsAt(valid);
    const base: Options = at ? { ...at.options } : {};
    const key = at ? rng.pick(Object.keys(base)) : "read";
    Object.defineProperty(base, key, { enumerable: true, configurable: true, get() { throw new HostileValueError(`getter "${key}"`); } });
    return { value: at ? at.wrap(base) : base, description: `throwing getter "${key}"${at?.where ?? ""}`, kind: "plain" };
  },
};

/** Every trap a library might reach: reading, listing, probing keys, the prototype, calling. */
function throwingProxy(): unknown {
  const thrower = (trap: string) => () => { throw new HostileValueError(`proxy trap ${trap}`); };
  const traps = ["get", "has", "ownKeys", "getOwnPropertyDescriptor", "getPrototypeOf", "set", "apply", "defineProperty"] as const;
  const handler: ProxyHandler<object> = {};
  for (const trap of traps) (handler as Record<string, unknown>)[trap] = thrower(trap);
  return new Proxy({}, handler);
}

function revokedProxy(): unknown {
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  return proxy;
}

function detachedBytes(): Uint8Array {
  const view = new Uint8Array(16);
  // Transferring the buffer detaches it: the view reads as length 0 and most uses throw.
  structuredClone(view.buffer, { transfer: [view.buffer] });
  return view;
}

/** A function that is not what any callback expects, but harmless if called. */
function strayFunction(): number { return 4; }

/** Values that need nothing from the valid argument. */
const PLAIN_POOL: readonly HostileMaker[] = [
  plain("undefined", () => undefined),
  plain("null", () => null),
  plain("''", () => ""),
  plain("'4'", () => "4"),
  plain("-1", () => -1),
  plain("1.5", () => 1.5),
  plain("NaN", () => NaN),
  plain("Infinity", () => Infinity),
  plain("-Infinity", () => -Infinity),
  plain("2**32", () => 2 ** 32),
  plain("2**53", () => 2 ** 53),
  plain("-1n", () => -1n),
  plain("2n**64n", () => 2n ** 64n),
  plain("{}", () => ({})),
  plain("[]", () => []),
  plain("[1, 2]", () => [1, 2]),
  plain("a function", () => strayFunction),
  plain("Symbol()", () => Symbol("hostile")),
  plain("Uint32Array(3)", () => new Uint32Array(3)),
  plain("BigUint64Array(1)", () => new BigUint64Array(1)),
  plain("Float64Array(2)", () => new Float64Array(2)),
  plain("detached Uint8Array", detachedBytes),
  plain("Proxy with throwing traps", throwingProxy),
  plain("revoked Proxy", revokedProxy),
  plain("true", () => true),
  plain("'true'", () => "true"),
];

const POOL: readonly HostileMaker[] = [...PLAIN_POOL, misspelledKey, wrongTypedValue, hostileOptionValue, throwingGetter, changingGetter, hostileListEntry];

/** One hostile value; `valid` is what a well-behaved caller would pass at that position (or undefined). */
export function hostileValue(rng: Rng, valid: unknown): HostileValue {
  return rng.pick(POOL).make(valid, rng);
}
