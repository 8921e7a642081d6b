// The facade's page-table formats: one line each. src/format.ts resolves
// options through this list, the domain checks ask it for roles, and the
// self-tests find their configurations from it.
import type { FormatDescriptor, FormatVariant } from "./descriptor.js";
import { x86_64 } from "./x86_64.js";
import { arm64 } from "./arm64.js";
import { vtdSl } from "./vtd_sl.js";
import { ggtt } from "./ggtt.js";

export const FORMATS = [
  x86_64,
  arm64,
  vtdSl,
  ggtt,
] as const;

const VARIANTS = new Map<number, FormatVariant>(FORMATS.flatMap((f: FormatDescriptor) => f.variants.map((v) => [v.id, v] as const)));

/** The descriptor of a format name, or undefined. */
export function formatNamed(name: string): (typeof FORMATS)[number] | undefined {
  return FORMATS.find((f) => f.name === name);
}

/** What an engine format id is (every id a descriptor resolves to is listed in its variants). */
export function variantOf(id: number): FormatVariant {
  const v = VARIANTS.get(id);
  if (!v) throw new Error(`format id ${id} is in no descriptor's variants`);
  return v;
}

/** The variants that may take a place in a two-stage domain, for checks and messages. */
export function variantsFor(nesting: NonNullable<FormatVariant["nesting"]>): FormatVariant[] {
  return [...VARIANTS.values()].filter((v) => v.nesting === nesting);
}
