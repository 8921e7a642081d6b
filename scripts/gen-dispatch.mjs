// The engine's per-format switches, generated from the format registry
// (assembly/fmt/index.ts: one line per format, its id, class, file and role)
// into assembly/walk/byformat.ts. Each operation below is a switch over the
// formats of a role (or two nested switches, stage 1 then stage 2), each case
// the generic code specialised for that format's class: no indirect calls,
// and a format added to the registry reaches every switch it belongs in.
import { readFileSync } from "node:fs";

export const REGISTRY = "assembly/fmt/index.ts";
export const OUTPUT = "assembly/walk/byformat.ts";

const ROLES = ["stage1", "stage2", "phys-stage1", "-"];

/** The registry's lines: { id, value, cls, file, role }. */
export function parseRegistry(source) {
  const line = /^export const (FORMAT_[A-Z0-9_]+): u32 = (\d+); \/\/ (\w+) from (\w+): (\S+)\s*$/;
  const formats = [];
  for (const text of source.split("\n")) {
    if (!text.startsWith("export ")) continue;
    const m = line.exec(text);
    if (!m) throw new Error(`gen-dispatch: a registry line must read "export const FORMAT_X: u32 = n; // Class from file: role", got: ${text}`);
    const [, id, value, cls, file, role] = m;
    if (!ROLES.includes(role)) throw new Error(`gen-dispatch: ${id}: role must be one of ${ROLES.join(", ")}, got ${role}`);
    if (formats.some((f) => f.value === value || f.id === id)) throw new Error(`gen-dispatch: ${id} = ${value} is registered twice`);
    formats.push({ id, value, cls, file, role });
  }
  if (formats.length === 0) throw new Error("gen-dispatch: the registry names no format");
  return formats;
}

// An operation: its parameters; `on`, the context(s) whose format picks the
// case (one per switch); `roles`, which formats each switch has ("any": all);
// `call`, the generic call (F: the first switch's class, G: the second's);
// `otherwise`, what an unknown format gets, per switch. Only single switches
// are @inline: each is the body of one hand-written function (walk/dispatch.ts).
const OPS = [
  { name: "walkSingle", params: "ctx: usize, iova: u64, access: u32, mode: u32", ret: "u32", on: ["ctx"], roles: ["any"],
    call: "walk<F>(ctx, iova, access, mode)", otherwise: ["return noWalk(FAULT_NO_CONTEXT);"] },
  { name: "walkNested", params: "ctx: usize, s2: usize, iova: u64, access: u32, mode: u32", ret: "u32", on: ["ctx", "s2"], roles: ["stage1", "stage2"],
    call: "walkIn<F, G>(ctx, iova, access, mode, s2)", otherwise: ["return noWalk(FAULT_NO_CONTEXT);", "walkStage = 2; return noWalk(FAULT_NO_CONTEXT);"] },
  { name: "walkPhysS1", params: "ctx: usize, s2: usize, iova: u64, access: u32, mode: u32", ret: "u32", on: ["ctx", "s2"], roles: ["phys-stage1", "stage2"],
    call: "walkPhys<F, G>(ctx, s2, iova, access, mode)", otherwise: ["return noWalk(FAULT_NO_CONTEXT);", "walkStage = 2; return noWalk(FAULT_NO_CONTEXT);"] },
  { name: "mapIn", params: "ctx: usize, iova: u64, last: u64, hpa: u64, prot: u32", ret: "u32", on: ["ctx"], roles: ["any"],
    call: "buildMap<F>(ctx, iova, last, hpa, prot)", otherwise: ["return ERR_EINVAL;"] },
  { name: "mapListIn", params: "ctx: usize, list: usize, count: u32, prot: u32", ret: "u32", on: ["ctx"], roles: ["any"],
    call: "mapListWith<F>(ctx, list, count, prot)", otherwise: ["return ERR_EINVAL;"] },
  { name: "unmapIn", params: "ctx: usize, iova: u64, last: u64", ret: "u64", on: ["ctx"], roles: ["any"],
    call: "buildUnmap<F>(ctx, iova, last)", otherwise: ["return 0;"] },
  { name: "guestMapIn", params: "ctx: usize, s2: usize, iova: u64, last: u64, gpa: u64, prot: u32, pool: usize, count: u32, released: usize, cap: u32", ret: "u32",
    on: ["ctx", "s2"], roles: ["stage1", "stage2"],
    call: "buildGuestMap<F, G>(ctx, s2, iova, last, gpa, prot, pool, count, released, cap)", otherwise: ["return ERR_EINVAL;", "return ERR_EINVAL;"] },
  { name: "guestUnmapIn", params: "ctx: usize, s2: usize, iova: u64, last: u64, released: usize, cap: u32", ret: "u64",
    on: ["ctx", "s2"], roles: ["stage1", "stage2"],
    call: "buildGuestUnmap<F, G>(ctx, s2, iova, last, released, cap)", otherwise: ["return 0;", "return 0;"] },
  { name: "pinMapIn", params: "proc: usize, dom: usize, vaddr: u64, last: u64, iova: u64, prot: u32", ret: "u32", on: ["dom"], roles: ["any"],
    call: "pinMapInto<F>(proc, dom, vaddr, last, iova, prot)", otherwise: ["return ERR_EINVAL;"] },
  { name: "unpinUnmapIn", params: "dom: usize, iova: u64, last: u64", ret: "u64", on: ["dom"], roles: ["any"],
    call: "unpinUnmapWith<F>(dom, iova, last)", otherwise: ["return 0;"] },
  { name: "dirtyScanIn", params: "dom: usize, iova: u64, last: u64", ret: "u32", on: ["dom"], roles: ["any"],
    call: "visitDirty<F>(dom, iova, last)", otherwise: ["return 0;"] },
];

const IMPORTS = [
  'import { ctxFormat } from "./context";',
  'import { walk, walkIn, noWalk, walkStage } from "./walker";',
  'import { buildMap, buildUnmap, buildGuestMap, buildGuestUnmap } from "./builder";',
  'import { visitDirty } from "./leaves";',
  'import { pinMapInto, unpinUnmapWith } from "./pinned";',
  'import { walkPhys } from "./physs1";',
  'import { mapListWith } from "./maplist";',
  'import { ERR_EINVAL, FAULT_NO_CONTEXT } from "../abi";',
];

const paramNames = (params) => params.split(",").map((p) => p.trim().split(":")[0]).join(", ");
const member = (f, role) => role === "any" || f.role === role;

function switchOver(formats, op, depth, caseBody) {
  const lines = [`  switch (ctxFormat(${op.on[depth]})) {`];
  for (const f of formats.filter((x) => member(x, op.roles[depth]))) lines.push(`    case ${f.id}: ${caseBody(f)}`);
  lines.push(`    default: ${op.otherwise[depth]}`, "  }");
  return lines;
}

function emitOp(formats, op) {
  const head = (name, generic) => `${generic ? "function" : "export function"} ${name}${generic ? "<F>" : ""}(${op.params}): ${op.ret} {`;
  if (op.on.length === 1) {
    return ["@inline " + head(op.name, false), ...switchOver(formats, op, 0, (f) => `return ${op.call.replaceAll("<F>", `<${f.cls}>`)};`), "}"];
  }
  // Stage 1 picks F; a function per stage-1 class then picks G from stage 2.
  const inner = `${op.name}Over`;
  const args = paramNames(op.params);
  return [
    head(inner, true),
    ...switchOver(formats, op, 1, (g) => `return ${op.call.replaceAll(", G>", `, ${g.cls}>`)};`),
    "}",
    "",
    head(op.name, false),
    ...switchOver(formats, op, 0, (f) => `return ${inner}<${f.cls}>(${args});`),
    "}",
  ];
}

export function generateDispatch(registrySource) {
  const formats = parseRegistry(registrySource);
  const classes = new Map();
  for (const f of formats) classes.set(f.file, [...(classes.get(f.file) ?? []), f.cls]);
  const out = [
    `// Generated from ${REGISTRY} by scripts/gen-dispatch.mjs (npm run build). Do not edit.`,
    "// One switch per operation over the registered formats (walk/dispatch.ts calls them).",
    ...IMPORTS,
    ...[...classes].map(([file, cls]) => `import { ${cls.join(", ")} } from "../fmt/${file}";`),
    `import { ${formats.map((f) => f.id).join(", ")} } from "../fmt/index";`,
  ];
  for (const op of OPS) out.push("", ...emitOp(formats, op));
  return out.join("\n") + "\n";
}

export function generateDispatchFromFile(path) { return generateDispatch(readFileSync(path, "utf8")); }
