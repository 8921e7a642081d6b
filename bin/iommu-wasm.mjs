#!/usr/bin/env node
// iommu-wasm's command line: walk and dump page tables in a RAM image, and
// show the reserved regions of a host topology. Each command returns its
// output as text; errors the user can fix are one line on stderr, exit 1.
import { readFileSync } from "node:fs";
import { IommuError } from "../dist/iommu-wasm.js";
import { CliError } from "./cli/args.mjs";
import { DUMP_HELP, dumpCommand } from "./cli/dump.mjs";
import { RESERVED_HELP, reservedCommand } from "./cli/reserved.mjs";
import { WALK_HELP, walkCommand } from "./cli/walk.mjs";

const USAGE = `usage: iommu-wasm <command> [options]

commands:
  walk IMAGE IOVA... --format F --root HPA   walk IOVAs through a page table in a RAM image, entry by entry
  dump IMAGE --format F --root HPA           every mapping of that table, as merged ranges
  reserved TOPOLOGY.json                     reserved_regions per IOMMU group, and the usable IOVA ranges

IMAGE is raw RAM from HPA 0 (QEMU: pmemsave 0 <size> file). Numbers are 0x...
hex or decimal. Every command takes --json. iommu-wasm <command> --help for more.`;

const COMMANDS = { walk: walkCommand, dump: dumpCommand, reserved: reservedCommand };
const HELP = { walk: WALK_HELP, dump: DUMP_HELP, reserved: RESERVED_HELP };

function version() {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
  return `${pkg.name} ${pkg.version}`;
}

/** The library's messages start with the errno name ("EINVAL: ..."); on a command line the sentence is what helps. */
function messageOf(e) {
  return e instanceof IommuError ? e.message.replace(/^E[A-Z]+: /, "") : e.message;
}

async function main(argv) {
  const [name, ...rest] = argv;
  if (name === undefined) {
    process.stderr.write(USAGE + "\n");
    return 1;
  }
  if (name === "--help" || name === "-h" || name === "help") {
    process.stdout.write((HELP[rest[0]] ?? USAGE) + "\n");
    return 0;
  }
  if (name === "--version" || name === "-v") {
    process.stdout.write(version() + "\n");
    return 0;
  }
  const command = COMMANDS[name];
  if (command === undefined) {
    process.stderr.write(`iommu-wasm: unknown command ${JSON.stringify(name)} (walk, dump, reserved; see --help)\n`);
    return 1;
  }
  try {
    process.stdout.write((await command(rest)) + "\n");
    return 0;
  } catch (e) {
    if (!(e instanceof CliError || e instanceof IommuError)) throw e;
    process.stderr.write(`${name}: ${messageOf(e)}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
