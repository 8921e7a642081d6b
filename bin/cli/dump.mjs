// `dump`: every mapping of a table in a RAM image, as merged ranges.
//
// The table is scanned with the library's own probe walks, so each format's
// entry decoding stays in one place (the engine). The scan skips what a walk
// shows to be empty: a walk that stops at level L rules out the whole span
// that entry covers, so the cost is one walk per leaf plus one per empty or
// faulting entry of each table reached, never one per 4 KiB of input space.
import { CliError, parseAddress, parseCommand } from "./args.mjs";
import {
  TABLE_OPTIONS, TABLE_OPTIONS_HELP, describeTable, geometry, isStage2, loadImage, openTable, spanAt, tableOptions,
} from "./image.mjs";
import { columns, hex, pageTag, permLetters, sizeText, toJson } from "./text.mjs";

const DEFAULT_MAX_WALKS = 4_000_000;

export const DUMP_HELP = `usage: iommu-wasm dump IMAGE --format F --root HPA [options]

Prints every mapping of the page table at --root in IMAGE (raw RAM from HPA
0) as ranges: IOVA range → HPA range, size, permissions and the pages that
make it up. Neighbouring leaves are merged when both their IOVAs and HPAs
run on and their permissions are equal; ranges are inclusive (first-last).
Entries a walk faults on (reserved bits, tables outside the image, loops)
are listed after the mappings.

  --max-walks N     stop after N probe walks (default ${DEFAULT_MAX_WALKS}); a table whose
                    entries alias each other can describe far more leaves than the image holds
  --json            print JSON instead of text

${TABLE_OPTIONS_HELP}`;

export async function dumpCommand(argv) {
  const { values, positionals } = parseCommand(argv, { ...TABLE_OPTIONS, "max-walks": { type: "string" } });
  if (values.help) return DUMP_HELP;
  const [imagePath, ...extra] = positionals;
  if (imagePath === undefined) throw new CliError("no image file given (see --help)");
  if (extra.length > 0) throw new CliError(`unexpected argument ${JSON.stringify(extra[0])} (see --help)`);
  const options = tableOptions(values);
  const maxWalks = values["max-walks"] === undefined ? DEFAULT_MAX_WALKS : Number(parseAddress(values["max-walks"], "max walks"));

  const image = await loadImage(imagePath);
  const table = openTable(image, options);
  const scan = scanTable(table, geometry(options), image.size, maxWalks);
  if (values.json) {
    return toJson({ table: { ...options, description: describeTable(options) }, image: { path: image.path, size: image.size }, ...scan });
  }
  return dumpText(options, image, scan);
}

/**
 * One probe of the leaf at iova. The walk needs an access; a privileged one
 * passes every privilege check, and stage-2 entries may be write- or
 * exec-only, so a permission fault is tried again with the other kinds.
 */
function probe(table, iova) {
  let result;
  for (const kind of ["read", "write", "exec"]) {
    result = table.walk(iova, { [kind]: true, privileged: true });
    if (result.fault?.reason !== "permission") break;
  }
  return result;
}

/**
 * How far one walk's answer holds: the span of the last entry it read. For
 * a leaf or an empty or bad entry that is the entry itself; for a table
 * pointer that leads outside RAM, the pointer is the last entry read, so
 * the whole subtree is skipped at once.
 */
function spanOf(result, levels) {
  if (result.pageSize !== undefined) return result.pageSize;
  const last = result.steps.at(-1);
  return spanAt(last ? last.level : levels - 1);
}

/** Walks the input space and gathers merged mappings and faulting ranges. */
function scanTable(table, { levels, inputRanges }, imageSize, maxWalks) {
  const mappings = [];
  const faults = [];
  let walks = 0, leaves = 0;
  for (const [first, last] of inputRanges) {
    for (let iova = first; iova <= last;) {
      if (walks >= maxWalks) return { mappings, faults, leaves, walks, stoppedAt: iova };
      walks++;
      const result = probe(table, iova);
      const span = spanOf(result, levels);
      const end = (iova & ~(span - 1n)) + span - 1n;
      if (result.fault === undefined) {
        leaves++;
        addMapping(mappings, iova, end, result, imageSize);
      } else if (result.fault.reason !== "not-present") {
        addFault(faults, iova, end, result);
      }
      iova = end + 1n;
    }
  }
  return { mappings, faults, leaves, walks };
}

const samePerms = (a, b) => a.read === b.read && a.write === b.write && a.exec === b.exec && a.user === b.user;

function addMapping(mappings, iova, iovaEnd, result, imageSize) {
  const size = iovaEnd - iova + 1n;
  const hpa = result.hpa;
  const prev = mappings.at(-1);
  const runsOn = prev !== undefined && prev.iovaEnd + 1n === iova && prev.hpaEnd + 1n === hpa && samePerms(prev.perms, result.perms);
  const range = runsOn ? prev : { iova, iovaEnd: iova - 1n, hpa, hpaEnd: hpa - 1n, size: 0n, perms: result.perms, pages: [], inImage: true };
  if (!runsOn) mappings.push(range);
  range.iovaEnd = iovaEnd;
  range.hpaEnd = hpa + size - 1n;
  range.size += size;
  range.inImage &&= range.hpaEnd < imageSize;
  const pages = range.pages.find((p) => p.size === result.pageSize);
  if (pages) pages.count++;
  else range.pages.push({ size: result.pageSize, count: 1 });
}

function addFault(faults, iova, iovaEnd, result) {
  const { reason, level } = result.fault;
  const prev = faults.at(-1);
  if (prev !== undefined && prev.iovaEnd + 1n === iova && prev.reason === reason && prev.level === level) {
    prev.iovaEnd = iovaEnd;
    prev.entries++;
    return;
  }
  // The first entry of a run is the one to look at; the rest of the run is the same fault again.
  const step = result.steps.at(-1);
  faults.push({ iova, iovaEnd, reason, level, entryAddress: step?.entryAddress, entry: step?.entry, entries: 1 });
}

function dumpText(options, image, scan) {
  const lines = [`${describeTable(options)} table at root ${hex(options.root)}, image ${image.path} (${sizeText(image.size)})`, ""];
  const withUser = !isStage2(options);
  if (scan.mappings.length === 0) lines.push("no mappings");
  else {
    const header = ["iova", "", "hpa", "size", "perms", "pages", ""];
    const rows = scan.mappings.map((m) => [
      `${hex(m.iova)}-${hex(m.iovaEnd)}`, "→", `${hex(m.hpa)}-${hex(m.hpaEnd)}`, sizeText(m.size),
      permLetters(m.perms, withUser), m.pages.map((p) => `${pageTag(p.size)}×${p.count}`).join(" "), m.inImage ? "" : "outside the image",
    ]);
    lines.push(...columns([header, ...rows]));
    const total = scan.mappings.reduce((sum, m) => sum + m.size, 0n);
    lines.push("", `${scan.mappings.length} ${scan.mappings.length === 1 ? "range" : "ranges"} from ${scan.leaves} ${scan.leaves === 1 ? "leaf" : "leaves"}, ${sizeText(total)} mapped`);
  }
  if (scan.faults.length > 0) {
    lines.push("", "faults:");
    lines.push(...columns(scan.faults.map((f) => [
      `${hex(f.iova)}-${hex(f.iovaEnd)}`, `${f.reason} at level ${f.level}`,
      f.entry === undefined ? "" : `entry ${hex(f.entry)} @ ${hex(f.entryAddress)}${f.entries > 1 ? ` and ${f.entries - 1} more like it` : ""}`,
    ])));
  }
  if (scan.stoppedAt !== undefined) lines.push("", `stopped after ${scan.walks} walks at iova ${hex(scan.stoppedAt)} (raise --max-walks to go on)`);
  return lines.join("\n");
}
