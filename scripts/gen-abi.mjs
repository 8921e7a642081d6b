// assembly/abi.ts is the one definition of the engine's ABI, and
// assembly/fmt/index.ts (the format registry) that of the format ids. This
// turns each `export const NAME: T = literal;` line of the two into the
// facade's src/engine/abi.ts.
import { readFileSync } from "node:fs";

export const ABI_SOURCES = ["assembly/abi.ts", "assembly/fmt/index.ts"];

export function generateAbi(source) {
  const lines = [`// Generated from ${ABI_SOURCES.join(" and ")} by scripts/gen-abi.mjs (npm run build). Do not edit.`, ""];
  const decl = /^export const ([A-Z0-9_]+): [a-z0-9]+ = (0x[0-9a-fA-F]+|\d+);/;
  let count = 0;
  for (const line of source.split("\n")) {
    const m = decl.exec(line);
    if (m) { lines.push(`export const ${m[1]} = ${m[2]};`); count++; }
    else if (line.startsWith("// ----")) lines.push("", line);
    else if (line.startsWith("export ")) throw new Error(`gen-abi: cannot translate line: ${line}`);
  }
  if (count === 0) throw new Error("gen-abi: no constants found");
  return lines.join("\n") + "\n";
}

/** The ABI from the files of ABI_SOURCES under root, in that order. */
export function generateAbiFromFiles(paths) { return generateAbi(paths.map((p) => readFileSync(p, "utf8")).join("\n")); }
