// The public surface, found at run time: every method, getter and setter a
// caller can reach on a live object, so a method is fuzzed the day it lands
// without anyone listing it here.
//
// Two kinds of member are reachable at run time but are not the API:
//  - TypeScript `private` / `protected` members: the compiler hides them, the
//    runtime does not. They are read from the source (the declaration says
//    so), per class, so a new private helper is skipped automatically.
//  - members documented `@internal`: public to TypeScript only so that other
//    facade classes can reach them. They are listed by hand below, and a test
//    checks the list against the source's `@internal` comments.
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";

/**
 * Members documented `@internal` in src/, by the class that declares them.
 * A test checks every such method and accessor is here; fields (engine,
 * pasidTable, beforeFree) are never called, so listing them is optional.
 */
export const INTERNAL: Readonly<Record<string, readonly string[]>> = {
  Host: ["engine"],
  Domain: ["liveId"],
  VfioGroup: ["domainId", "msiWindowStart"],
  VfioDevice: ["pasidTable"],
  Container: ["attachGroup", "detachGroup", "bindStage1", "unbindStage1", "external"],
  Mdev: ["dmaUnmap", "pin"],
  ShadowGtt: ["revoke"],
  Process: ["checkAccess"],
  ContainerPasids: ["beforeFree", "release"],
  PasidSpace: ["open"],
  Topology: ["claim", "addEmulatedGroup", "removeEmulatedGroup", "hold"],
  BackendIommu: ["contextId", "ownFrame", "mapArgs", "unmapArgs", "place", "remove", "revoke", "destroy", "live"],
  RestrictedMapper: [],
  MultiplexedIommu: ["attach", "revoke"],
};

export type MemberKind = "method" | "getter" | "setter";

export interface Member {
  /** The public class (or API object) a caller sees it on, e.g. "Host", "GuestMemory". */
  cls: string;
  name: string;
  kind: MemberKind;
  /** Declared parameters before the first default (Function.length); 1 for a setter, 0 for a getter. */
  arity: number;
  /** "Host.addDevice" */
  key: string;
}

/** What the source says about classes: members declared private or protected, and members documented @internal. */
export interface SourceFacts {
  hidden: Map<string, Set<string>>;
  internal: { cls: string; name: string; where: string }[];
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(path));
    else if (entry.name.endsWith(".ts") && !entry.name.endsWith(".d.ts")) out.push(path);
  }
  return out;
}

const CLASS_LINE = /^(?:export\s+)?(?:default\s+)?(?:abstract\s+)?class\s+(\w+)/;
const HIDDEN_MEMBER = /^\s+(?:(?:static|readonly|abstract|override|declare)\s+)*(?:private|protected)\s+(?:(?:static|readonly|abstract|override|async)\s+)*(?:get\s+|set\s+)?(\w+)/;
const MEMBER_NAME = /^\s*(?:(?:public|private|protected|static|readonly|abstract|override|declare|async)\s+)*(?:(?:get|set)\s+(?=\w))?(\w+)/;

/**
 * Reads every class in src/ line by line: a class runs from its `class X`
 * line to the next line that is a lone `}` at column 0 (the project's style).
 */
export function readSource(srcDir: string): SourceFacts {
  const hidden = new Map<string, Set<string>>();
  const internal: SourceFacts["internal"] = [];
  for (const file of sourceFiles(srcDir)) {
    const lines = readFileSync(file, "utf8").split("\n");
    let cls: string | undefined;
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      const start = CLASS_LINE.exec(line);
      if (start) { cls = start[1]; continue; }
      if (line === "}") { cls = undefined; continue; }
      if (!cls) continue;
      const h = HIDDEN_MEMBER.exec(line);
      if (h) {
        if (!hidden.has(cls)) hidden.set(cls, new Set());
        hidden.get(cls)!.add(h[1]);
      }
      if (line.includes("@internal")) {
        const name = documentedMember(lines, i);
        if (name && name !== "constructor") internal.push({ cls, name, where: `${relative(join(srcDir, ".."), file)}:${i + 1}` });
      }
    }
  }
  return { hidden, internal };
}

/** The member a doc comment holding line i documents: the first line after the comment closes. */
function documentedMember(lines: string[], i: number): string | undefined {
  let j = i;
  while (j < lines.length && !lines[j].includes("*/")) j++;
  const rest = lines[j]?.slice(lines[j].indexOf("*/") + 2) ?? "";
  const text = rest.trim() !== "" ? rest : lines[j + 1] ?? "";
  return MEMBER_NAME.exec(text)?.[1];
}

function skipped(owner: string, name: string, facts: SourceFacts): boolean {
  return name === "constructor" || name.startsWith("_") || (facts.hidden.get(owner)?.has(name) ?? false) || (INTERNAL[owner]?.includes(name) ?? false);
}

function memberOf(cls: string, name: string, d: PropertyDescriptor): Member[] {
  const out: Member[] = [];
  if (typeof d.value === "function") out.push({ cls, name, kind: "method", arity: d.value.length, key: `${cls}.${name}` });
  if (d.get) out.push({ cls, name, kind: "getter", arity: 0, key: `${cls}.${name}` });
  if (d.set) out.push({ cls, name, kind: "setter", arity: 1, key: `${cls}.${name}=` });
  return out;
}

/**
 * The public methods and accessors of a class instance: the prototype chain
 * up to Object.prototype (a subclass's member shadows its base's), minus
 * private, protected and @internal members of the class that declares them.
 */
export function classMembers(cls: string, instance: object, facts: SourceFacts): Member[] {
  const seen = new Set<string>();
  const out: Member[] = [];
  for (let proto = Object.getPrototypeOf(instance); proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
    const owner: string = proto.constructor?.name ?? cls;
    for (const name of Object.getOwnPropertyNames(proto)) {
      if (seen.has(name)) continue;
      seen.add(name);
      if (skipped(owner, name, facts)) continue;
      out.push(...memberOf(cls, name, Object.getOwnPropertyDescriptor(proto, name)!));
    }
  }
  return out.sort((a, b) => a.key.localeCompare(b.key));
}

/** Every method and accessor name on an instance's prototype chain, by the class that declares it (nothing skipped). */
export function callableNames(instance: object): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (let proto = Object.getPrototypeOf(instance); proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
    const names = Object.getOwnPropertyNames(proto).filter((n) => {
      const d = Object.getOwnPropertyDescriptor(proto, n)!;
      return typeof d.value === "function" || d.get !== undefined || d.set !== undefined;
    });
    out.set(proto.constructor?.name ?? "?", new Set(names));
  }
  return out;
}

/** The callable own properties of a plain API object (c.gpa, c.dirty): functions and accessors. */
export function objectMembers(cls: string, api: object): Member[] {
  const out: Member[] = [];
  for (const name of Object.getOwnPropertyNames(api)) {
    if (name.startsWith("_")) continue;
    out.push(...memberOf(cls, name, Object.getOwnPropertyDescriptor(api, name)!));
  }
  return out.sort((a, b) => a.key.localeCompare(b.key));
}
