// How the CLI writes numbers, sizes, permissions and tables, and how --json
// writes bigints (as hex strings: JSON numbers lose precision past 2^53).

export const hex = (v) => "0x" + v.toString(16);

const KiB = 1024n, MiB = KiB * 1024n, GiB = MiB * 1024n, TiB = GiB * 1024n, PiB = TiB * 1024n, EiB = PiB * 1024n;

/** An exact size in words, largest unit first: "2 MiB", "2 MiB 4 KiB", "16 MiB 100 bytes". */
export function sizeText(bytes) {
  let rest = BigInt(bytes);
  if (rest === 0n) return "0 bytes";
  const parts = [];
  for (const [unit, name] of [[EiB, "EiB"], [PiB, "PiB"], [TiB, "TiB"], [GiB, "GiB"], [MiB, "MiB"], [KiB, "KiB"], [1n, "bytes"]]) {
    if (rest >= unit) parts.push(`${rest / unit} ${name}`);
    rest %= unit;
  }
  return parts.join(" ");
}

/** A page size as a short tag for the pages column: 4K, 2M, 1G. */
export function pageTag(bytes) {
  return sizeText(bytes).replace(/ (.)iB$/, "$1");
}

/** "read/write/user", the words the demo prints after a walk (no "user" for stage-2 formats, see permLetters). */
export function permWords(perms, hasUser) {
  const words = Object.entries(perms).filter(([name, on]) => on && (hasUser || name !== "user")).map(([name]) => name).join("/");
  return words || "no access";
}

/**
 * "rwxu" with "-" for what is missing. Stage-2 formats have no privilege
 * levels (the model grants U everywhere), so they show only "rwx".
 */
export function permLetters(perms, hasUser) {
  const letters = (perms.read ? "r" : "-") + (perms.write ? "w" : "-") + (perms.exec ? "x" : "-");
  return hasUser ? letters + (perms.user ? "u" : "-") : letters;
}

/** Rows of cells as aligned columns (the last column is not padded). */
export function columns(rows) {
  const widths = [];
  for (const row of rows) row.forEach((cell, i) => { widths[i] = Math.max(widths[i] ?? 0, cell.length); });
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]))).join("  ").trimEnd());
}

export function toJson(value) {
  return JSON.stringify(value, (_key, v) => (typeof v === "bigint" ? hex(v) : v), 2);
}
