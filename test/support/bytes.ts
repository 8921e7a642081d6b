// Deterministic pseudo-random bytes for tests: the bench's xorshift32, one
// byte per step, so a seed names the same bytes on the engine and the twin.
import { xorshift } from "../../bench/fixtures.js";

export function seededBytes(seed: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  const rnd = xorshift(seed);
  for (let i = 0; i < len; i++) out[i] = (rnd.next().value as number) & 0xff;
  return out;
}
