// assembly/abi.ts is the one definition of the engine's ABI. This turns each
// `export const NAME: T = literal;` line into the facade's src/engine/abi.ts.
import { readFileSync } from "node:fs";

export function generateAbi(source) {
  const lines = ["// Generated from assembly/abi.ts by scripts/gen-abi.mjs (npm run build). Do not edit.", ""];
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

export function generateAbiFromFile(path) { return generateAbi(readFileSync(path, "utf8")); }
