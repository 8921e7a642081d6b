// How tests read what a call did: the errno of the IommuError it threw, or
// its result. Anything else thrown (a WASM trap, a bug) propagates and fails.
import { IommuError } from "../../src/index.js";

export type Outcome = { ok: unknown } | { error: string };

/** The errno fn throws, or "no error" when it returns. */
export function errno(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof IommuError) return e.code;
    throw e;
  }
  return "no error";
}

/** fn's result, or the errno it throws. */
export function attempt(fn: () => unknown): Outcome {
  try {
    return { ok: fn() };
  } catch (e) {
    if (e instanceof IommuError) return { error: e.code };
    throw e;
  }
}
