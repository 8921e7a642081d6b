// Page-table formats of the twin: one codec per format (bench/naive/fmt/<name>.ts),
// listed once below; the walker, builder and leaf visits ask a context's codec.
export { KIND_INVALID, KIND_TABLE, KIND_LEAF, type Format } from "./fmt/codec.js";
import type { Format } from "./fmt/codec.js";
import { x86Format } from "./fmt/x86_64.js";
import { arm64Format, arm64S2Format } from "./fmt/arm64.js";
import { vtdSlFormat } from "./fmt/vtd_sl.js";
import { ggttFormat } from "./fmt/ggtt.js";

const CODECS: readonly Format[] = [
  x86Format,
  arm64Format,
  arm64S2Format,
  vtdSlFormat,
  ggttFormat,
];

export function formatById(id: number): Format | undefined {
  return CODECS.find((f) => f.id === id);
}
