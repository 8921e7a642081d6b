// The VMM's side: containers opened and closed, groups attached and
// detached (moved between the two processes' containers), SET_IOMMU, and
// stage 2 (MAP_DMA / UNMAP_DMA of guest RAM in 256 KiB chunks, table chunks
// included). After SET_IOMMU("nesting") the VMM starts the guest's use of
// PASIDs, so there is always something live to attack.
import type { IommuType } from "../../../src/index.js";
import { goodPlan } from "./allocator.js";
import { OK, refused, type Verdict } from "./guard.js";
import type { ContainerModel } from "./model.js";
import { defaultFlags, someContainer } from "./operands.js";
import { bind, pasidAlloc } from "./ops-pasid.js";
import { builderMap, builderTable } from "./ops-guest.js";
import type { Session } from "./session.js";
import { CHUNK_BYTES, CHUNKS, DATA_FIRST, GROUPS, GUEST_PAGES, GVA_WINDOWS, PAGE, TABLE_CHUNKS, U64_MAX } from "./world.js";

const QUOTA = 8;

export function openContainer(s: Session, owner: number): ContainerModel | undefined {
  const out = s.guard.run(`open a container for ${"AB"[owner]}`, OK,
    () => s.w.host.openContainer({ process: s.w.guests[owner].process, pasidQuota: QUOTA }));
  return out.ok ? s.model.addContainer(out.value, owner, QUOTA) : undefined;
}

/** A process whose container was closed opens a fresh one; otherwise a container waiting for SET_IOMMU gets it. */
export function randomReopen(s: Session): void {
  const owner = s.rng.int(2);
  if (s.model.current[owner].closed) openContainer(s, owner);
  else randomSetIommu(s);
}

export function randomSetIommu(s: Session): void {
  const r = s.rng;
  const waiting = s.model.live().filter((cm) => cm.groups.length > 0 && !cm.iommu);
  const cm = waiting.length > 0 && r.chance(0.85) ? r.pick(waiting) : someContainer(s);
  const type = r.weighted<string>([[85, "nesting"], [10, "type1v2"], [5, r.pick(["type1", "spapr", ""])]]);
  setIommu(s, cm, type);
}

export function setIommu(s: Session, cm: ContainerModel, type: string): void {
  const verdict = cm.closed ? refused("setIommu on a closed container")
    : cm.groups.length === 0 ? refused("setIommu on a container with no group")
      : cm.iommu ? refused("setIommu twice")
        : type !== "nesting" && type !== "type1v2" ? refused(`setIommu(${JSON.stringify(type)})`) : OK;
  const out = s.guard.run(`${cm.name}.setIommu(${type})`, verdict, () => cm.c.setIommu(type as IommuType));
  if (!out.ok) return;
  cm.iommu = type as IommuType;
  // Then the VMM maps guest RAM, in chunks, and (nesting) starts the guest's use of PASIDs.
  for (let i = 0; i < CHUNKS; i++) stage2Map(s, cm, i, i, true);
  if (cm.iommu === "nesting") startGuest(s, cm);
}

/** What a VMM does once nesting is set: a guest table with a few pages, bound to a PASID on each device. */
function startGuest(s: Session, cm: ContainerModel): void {
  const t = builderTable(s, cm, { format: s.w.format }, goodPlan());
  const pasid = pasidAlloc(s, cm, { min: 1, max: 64 });
  if (!t || pasid === undefined) return;
  const gpa = BigInt(s.rng.range(DATA_FIRST, GUEST_PAGES - 16)) * PAGE;
  for (let i = 0n; i < 8n; i++) builderMap(s, t, GVA_WINDOWS[0] + i * PAGE, gpa + i * PAGE, PAGE, i % 4n !== 3n, goodPlan());
  for (const device of s.w.devices.filter((d) => s.model.groupIn[d.group] === cm)) {
    bind(s, device, pasid, t.root, { format: s.w.format, flags: defaultFlags(s.w.format), valid: true, plain: true });
  }
}

export function randomAttach(s: Session): void {
  const r = s.rng;
  const loose = Array.from({ length: GROUPS }, (_, g) => g).filter((g) => !s.model.groupIn[g]);
  const g = loose.length > 0 && r.chance(0.8) ? r.pick(loose) : r.int(GROUPS);
  const cm = r.chance(0.92) ? s.model.current[r.int(2)] : r.pick(s.model.containers);
  attach(s, g, cm);
}

export function attach(s: Session, g: number, cm: ContainerModel): void {
  const verdict = s.model.groupIn[g] ? refused(`group ${g} is already in ${s.model.groupIn[g]!.name}`)
    : cm.closed ? refused(`${cm.name} is closed`) : OK;
  const out = s.guard.run(`group ${g}.setContainer(${cm.name})`, verdict, () => s.w.groups[g].setContainer(cm.c));
  if (!out.ok) return;
  s.model.groupIn[g] = cm;
  cm.groups.push(g);
}

export function randomDetach(s: Session): void {
  const g = s.rng.int(GROUPS);
  const cm = s.model.groupIn[g];
  const out = s.guard.run(`group ${g}.unsetContainer() from ${cm?.name ?? "none"}`, cm ? OK : refused(`group ${g} is in no container`),
    () => s.w.groups[g].unsetContainer());
  if (!out.ok) return;
  s.model.detach(g);
  s.alloc.reclaimDeadTables();
}

export function randomClose(s: Session): void {
  const cm = someContainer(s);
  const out = s.guard.run(`${cm.name}.close()`, OK, () => cm.c.close());
  if (!out.ok || cm.closed) return;
  s.model.close(cm);
  s.alloc.reclaimDeadTables();
}

// ------------------------------------------------------------------ stage 2

export function randomStage2Map(s: Session): void {
  const r = s.rng;
  const cm = someContainer(s);
  const free = cm.chunks.map((ch, i) => (ch ? -1 : i)).filter((i) => i >= 0);
  const i = free.length > 0 && r.chance(0.85) ? r.pick(free) : r.int(CHUNKS);
  // Table chunks come back in place (the model keeps their pages' GPAs); data chunks may come from another part of guest RAM.
  const src = i < TABLE_CHUNKS || r.chance(0.6) ? i : r.range(TABLE_CHUNKS, CHUNKS - 1);
  stage2Map(s, cm, i, src, r.chance(0.85), r.weighted<string>([[92, "none"], [2, "noAccess"], [2, "misaligned"], [2, "zero"], [2, "wrap"]]));
}

/** Maps chunk i of the container's IOVA space (a GPA range) to chunk src of the process's guest RAM. */
export function stage2Map(s: Session, cm: ContainerModel, i: number, src: number, write: boolean, tweak = "none"): void {
  const guest = s.w.guests[cm.owner];
  let vaddr = guest.gram + BigInt(src) * CHUNK_BYTES, iova = BigInt(i) * CHUNK_BYTES, size = CHUNK_BYTES;
  let read = true;
  if (tweak === "noAccess") { read = false; write = false; }
  if (tweak === "misaligned") vaddr += 0x800n;
  if (tweak === "zero") size = 0n;
  if (tweak === "wrap") iova = U64_MAX - 0xfffn;
  const verdict = cm.closed || !cm.iommu ? refused(`mapDma on ${cm.name} with no IOMMU`)
    : tweak !== "none" ? refused(`mapDma with ${tweak}`)
      : cm.chunks[i] ? refused(`mapDma over mapped chunk ${i}`) : OK;
  const out = s.guard.run(`${cm.name}.mapDma(chunk ${i} from ${src}${write ? "" : ", read-only"}${tweak === "none" ? "" : `, ${tweak}`})`, verdict,
    () => cm.c.mapDma({ vaddr, iova, size, read, write }));
  if (!out.ok) return;
  if (out.value !== iova) s.divergence("mapDma result", `${cm.name}.mapDma returned iova 0x${out.value.toString(16)} for 0x${iova.toString(16)}`);
  cm.chunks[i] = { src, write };
}

export function randomStage2Unmap(s: Session): void {
  const r = s.rng;
  const cm = someContainer(s);
  const i = r.int(CHUNKS);
  const at = BigInt(i) * CHUNK_BYTES;
  const span = r.weighted<[bigint, bigint] | "all">([
    [6, [at, CHUNK_BYTES]],
    [1, [at, BigInt(r.range(1, Math.min(4, CHUNKS - i))) * CHUNK_BYTES]],
    [0.3, "all"],
    [1, [at + 64n * 1024n, CHUNK_BYTES]],
    [0.5, [at + 0x800n, CHUNK_BYTES]],
    [0.5, [at, 0n]],
  ]);
  stage2Unmap(s, cm, span);
}

function stage2Unmap(s: Session, cm: ContainerModel, span: [bigint, bigint] | "all"): void {
  const [first, last] = span === "all" ? [0n, U64_MAX] : [span[0], span[0] + span[1] - 1n];
  const inside = (i: number) => BigInt(i) * CHUNK_BYTES >= first && BigInt(i + 1) * CHUNK_BYTES - 1n <= last;
  const cuts = (i: number) => !inside(i) && BigInt(i) * CHUNK_BYTES <= last && first <= BigInt(i + 1) * CHUNK_BYTES - 1n;
  let verdict: Verdict = OK;
  if (cm.closed || !cm.iommu) verdict = refused(`unmapDma on ${cm.name} with no IOMMU`);
  else if (span !== "all" && (span[1] === 0n || span[0] % PAGE !== 0n)) verdict = refused("unmapDma of a zero or misaligned range");
  else if (cm.chunks.some((ch, i) => ch && cuts(i))) verdict = refused("unmapDma that would split a mapping");
  const what = span === "all" ? "all" : `[0x${first.toString(16)}, 0x${last.toString(16)}]`;
  const out = s.guard.run(`${cm.name}.unmapDma(${what})`, verdict, () => cm.c.unmapDma(span === "all" ? { all: true } : { iova: span[0], size: span[1] }));
  if (!out.ok) return;
  let bytes = 0n;
  cm.chunks = cm.chunks.map((ch, i) => {
    if (!ch || !inside(i)) return ch;
    bytes += CHUNK_BYTES;
    return undefined;
  });
  if (out.value !== bytes) s.tally.note("wrongResult", `${cm.name}.unmapDma(${what})`, `returned 0x${out.value.toString(16)} bytes, the model unmapped 0x${bytes.toString(16)}`);
}
