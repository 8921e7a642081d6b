// Command-line arguments: option parsing, numbers in hex or decimal, and the
// one error type the CLI reports as a single line (no stack trace).
import { parseArgs } from "node:util";

const U64_MAX = (1n << 64n) - 1n;

/** A usage or input error: printed as "<command>: <message>", exit code 1. */
export class CliError extends Error {}

/** A file the user named could not be read: "cannot read image x.bin: no such file". */
export function fileError(what, path, e) {
  const why = { ENOENT: "no such file", EISDIR: "it is a directory", EACCES: "permission denied" }[e.code] ?? e.message;
  return new CliError(`cannot read ${what} ${path}: ${why}`);
}

/** Splits argv into option values and positionals; unknown options are usage errors. */
export function parseCommand(argv, options) {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    // node:util's messages go on to explain '--' escaping; the first sentence is the useful part.
    if (typeof e?.code === "string" && e.code.startsWith("ERR_PARSE_ARGS")) {
      const first = e.message.split(". ")[0].replace(/\.$/, "");
      throw new CliError(first.charAt(0).toLowerCase() + first.slice(1) + " (see --help)");
    }
    throw e;
  }
}

/** A 64-bit address or size written as 0x... or decimal. */
export function parseAddress(text, what) {
  const s = String(text).trim();
  if (!/^(0x[0-9a-f]+|[0-9]+)$/i.test(s)) throw new CliError(`${what} ${JSON.stringify(String(text))} is not a number (0x... or decimal)`);
  const value = BigInt(s);
  if (value > U64_MAX) throw new CliError(`${what} ${s} does not fit in 64 bits`);
  return value;
}

/** A small integer option (levels, bits, stage), or undefined when not given. */
export function parseSmallInt(text, what) {
  if (text === undefined) return undefined;
  const value = parseAddress(text, what);
  if (value > 1024n) throw new CliError(`${what} ${text} is out of range`);
  return Number(value);
}
