// `walk`: the walk of one or more IOVAs through a table in a RAM image,
// entry by entry, as the demo prints it — what a device's request would see.
import { CliError, parseAddress, parseCommand } from "./args.mjs";
import { TABLE_OPTIONS, TABLE_OPTIONS_HELP, describeTable, indexAt, isStage2, levelName, loadImage, openTable, tableOptions } from "./image.mjs";
import { hex, permWords, sizeText, toJson } from "./text.mjs";

export const WALK_HELP = `usage: iommu-wasm walk IMAGE IOVA... --format F --root HPA [options]

Walks each IOVA through the page table at --root in IMAGE (raw RAM from
HPA 0, e.g. QEMU's pmemsave) and prints every entry read, then the HPA or
the fault. Nothing in the image is changed (no accessed/dirty updates).

  --access A        read (default), write or exec
  --privileged      a privileged request (x86 CPL 0, Arm EL1); default: user
  --json            print JSON instead of text

${TABLE_OPTIONS_HELP}`;

const ACCESSES = ["read", "write", "exec"];

export async function walkCommand(argv) {
  const { values, positionals } = parseCommand(argv, {
    ...TABLE_OPTIONS,
    access: { type: "string" },
    privileged: { type: "boolean" },
  });
  if (values.help) return WALK_HELP;
  const [imagePath, ...iovaTexts] = positionals;
  if (imagePath === undefined) throw new CliError("no image file given (see --help)");
  if (iovaTexts.length === 0) throw new CliError("no IOVA given (see --help)");
  const options = tableOptions(values);
  const iovas = iovaTexts.map((t) => parseAddress(t, "iova"));
  const access = accessArg(values);

  const image = await loadImage(imagePath);
  const table = openTable(image, options);
  const walks = iovas.map((iova) => describeWalk(options.format, image, iova, table.walk(iova, access)));
  const request = { access: values.access ?? "read", privileged: Boolean(values.privileged) };
  if (values.json) return toJson({ table: { ...options, description: describeTable(options) }, image: { path: image.path, size: image.size }, request, walks });
  const heading = `${describeTable(options)} table at root ${hex(options.root)}, access: ${request.privileged ? "privileged " : ""}${request.access}`;
  return [heading, ...walks.flatMap((walk) => walkText(walk, !isStage2(options)))].join("\n");
}

function accessArg(values) {
  const kind = values.access ?? "read";
  if (!ACCESSES.includes(kind)) throw new CliError(`access ${JSON.stringify(kind)} is not one of ${ACCESSES.join(", ")}`);
  return values.privileged ? { [kind]: true, privileged: true } : kind;
}

/** The library's walk result with each step named and indexed (what the text and --json both show). */
function describeWalk(format, image, iova, result) {
  const steps = result.steps.map((s) => ({ level: s.level, name: levelName(format, s.level), index: indexAt(iova, s.level), entryAddress: s.entryAddress, entry: s.entry }));
  if (result.fault) return { iova, steps, fault: result.fault };
  // A table may point past the dump (device MMIO, or a bad entry): say so, the bytes are not in the image.
  return { iova, steps, hpa: result.hpa, pageSize: result.pageSize, perms: result.perms, inImage: result.hpa < image.size };
}

function walkText(walk, hasUser) {
  const lines = ["", `walk ${hex(walk.iova)}:`];
  const addrWidth = Math.max(...walk.steps.map((s) => hex(s.entryAddress).length));
  for (const s of walk.steps) {
    lines.push(`  L${s.level} ${s.name.padEnd(8)} [${String(s.index).padStart(3)}] @ ${hex(s.entryAddress).padStart(addrWidth)} = ${hex(s.entry).padStart(18)}`);
  }
  if (walk.fault) lines.push(`  → fault: ${walk.fault.reason} at level ${walk.fault.level}`);
  else lines.push(`  → hpa ${hex(walk.hpa)} (${sizeText(walk.pageSize)} page, ${permWords(walk.perms, hasUser)})${walk.inImage ? "" : ", outside the image"}`);
  return lines;
}
