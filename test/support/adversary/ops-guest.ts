// The guest's own memory: stage-1 tables it builds with the builder
// (c.gpa.pageTable, map, unmap, destroy) over a sloppy allocator, hostile
// tables it writes by hand with c.gpa.writeU64, and raw writes that must be
// refused (unmapped GPAs, values that are no u64, a write across into an
// unmapped chunk).
import type { GuestPageTable } from "../../../src/index.js";
import { MUST_REFUSE, type AllocPlan } from "./allocator.js";
import { EITHER, OK, refused, type Verdict } from "./guard.js";
import { hostileEntry, hostilePage, leafEntry, tableEntry } from "./hostile.js";
import { GuestPool, type BuilderTable, type ContainerModel } from "./model.js";
import { otherFormat, show, someContainer, someTable } from "./operands.js";
import type { Session } from "./session.js";
import {
  CHUNK_BYTES, DATA_FIRST, GUEST_BYTES, GUEST_PAGES, GVA_HOT, GVA_SPAN, GVA_WINDOWS, HOSTILE_FIRST, HOSTILE_GVAS, MiB, PAGE, U64_MAX,
  tagWord, type Stage1Format,
} from "./world.js";

export function randomBuilderTable(s: Session): void {
  const r = s.rng;
  const cm = someContainer(s);
  const live = s.model.liveTables().filter((t) => t.container === cm);
  const options = r.weighted<() => Record<string, unknown>>([
    [20, () => ({ format: s.w.format })],
    [1, () => ({ format: otherFormat(s.w.format) })],
    [1, () => ({ format: r.pick(["vtd-sl", "x86", undefined]) })],
    [1, () => ({ format: s.w.format, addressWidth: s.w.format === "x86-64" ? 39 : 49 })],
    [1, () => ({ format: s.w.format, noAlloc: true })],
    [live.length ? 1 : 0, () => ({ format: s.w.format, root: r.pick(live).root })],
  ])();
  // The root is the only page the call asks for: a bad plan misbehaves there.
  builderTable(s, cm, options, { ...s.alloc.randomPlan(0.3), at: 0 });
}

/** c.gpa.pageTable: everything is checked before the guest's memory is touched, and a refused call hands its root back. */
export function builderTable(s: Session, cm: ContainerModel, options: Record<string, unknown>, plan: AllocPlan): BuilderTable | undefined {
  const format = options.format as Stage1Format;
  const t = s.model.newTable(cm, format);
  const sharedRoot = options.root as bigint | undefined;
  const badOptions = (format !== "x86-64" && format !== "arm64") || options.noAlloc === true ||
    (options.addressWidth !== undefined && options.addressWidth !== 48);
  let verdict: Verdict = OK;
  if (cm.closed || !cm.iommu) verdict = refused(`c.gpa.pageTable in ${cm.name} with no IOMMU`);
  else if (badOptions) verdict = refused(`c.gpa.pageTable with bad options ${show(options)}`);
  else if (sharedRoot === undefined && MUST_REFUSE.includes(plan.kind)) verdict = refused(`c.gpa.pageTable whose allocTable gave a ${plan.kind} root`);
  else if (sharedRoot === undefined && (plan.kind !== "good" || !cm.chunks[0] || !cm.chunks[1] || s.model.pools[cm.owner].free.length < 2)) verdict = EITHER;
  const { allocTable, freeTable } = s.alloc.callbacks(t);
  const request = { format: options.format, addressWidth: options.addressWidth, root: sharedRoot, allocTable: options.noAlloc ? undefined : allocTable, freeTable };
  const label = `${cm.name}.gpa.pageTable(${show(options)}, allocator ${plan.kind}@${plan.at})`;
  const { result: out, used } = s.alloc.during(plan, () => s.guard.run(label, verdict, () => cm.c.gpa.pageTable(request as never), true));
  s.alloc.taintAliases(t, used);
  if (!out.ok) {
    // What the library kept of a refused call stays handed out, as the guest sees it.
    t.dead = true;
    return undefined;
  }
  t.gpt = out.value as GuestPageTable;
  t.root = t.gpt.root;
  cm.tables.push(t);
  if (sharedRoot !== undefined) {
    // Two builders over one table: neither one's model holds, and neither may give its pages back to the pool.
    for (const other of s.model.liveTables()) {
      if (other.root !== sharedRoot || other.container.owner !== cm.owner) continue;
      other.tainted = other.shared = true;
    }
  }
  s.alloc.checkAccepted(used, `${cm.name}.gpa.pageTable`);
  return t;
}

export function randomBuilderMap(s: Session): void {
  const t = someTable(s);
  if (!t) return randomBuilderTable(s);
  const r = s.rng;
  const page = BigInt(r.int(Number((r.chance(0.8) ? GVA_HOT : GVA_SPAN) / PAGE)));
  let gva = r.pick(GVA_WINDOWS) + page * PAGE;
  let size = BigInt(r.range(1, 8)) * PAGE;
  let gpa = BigInt(r.range(DATA_FIRST, GUEST_PAGES - 8)) * PAGE;
  let prot: Record<string, unknown> = { write: r.chance(0.6) };
  const variant = r.weighted<string>([[40, "small"], [6, "2M"], [3, "beyond"], [1, "tables"], [2, "bad"]]);
  if (variant === "2M") { gva &= ~(2n * MiB - 1n); gpa = 2n * MiB; size = 2n * MiB; }
  if (variant === "beyond") gpa = GUEST_BYTES + BigInt(r.int(512)) * PAGE;
  if (variant === "tables") gpa = BigInt(r.range(1, HOSTILE_FIRST + 20)) * PAGE;
  let bad: string | undefined;
  if (variant === "bad") {
    bad = r.pick(["misaligned gva", "zero size", "no access", "wrap", "outside the input space"]);
    if (bad === "misaligned gva") gva += 0x10n;
    if (bad === "zero size") size = 0n;
    if (bad === "no access") prot = { read: false, write: false };
    if (bad === "wrap") { gva = U64_MAX - 0xfffn; size = 2n * PAGE; }
    if (bad === "outside the input space") gva = 1n << 48n;
  }
  builderMap(s, t, gva, gpa, size, prot, s.alloc.randomPlan(0.2), bad);
}

/** gpt.map: all or nothing; EEXIST over a leaf; the pages it needs come from the (maybe sloppy) allocator. */
export function builderMap(s: Session, t: BuilderTable, gva: bigint, gpa: bigint, size: bigint, prot: boolean | Record<string, unknown>, plan: AllocPlan, bad?: string): void {
  const cm = t.container;
  const writable = typeof prot === "boolean" ? prot : prot.write === true;
  let verdict: Verdict = OK;
  if (t.dead) verdict = refused(`map on ${t.name}, which is dead`);
  else if (bad) verdict = refused(`map with ${bad}`);
  else if (!t.tainted && t.overlaps(gva, size)) verdict = refused("map over an existing leaf");
  else if (t.tainted || plan.kind !== "good" || !cm.tablesWritable() || s.model.pools[cm.owner].free.length < 6) verdict = EITHER;
  const label = `${t.name}.map(gva 0x${gva.toString(16)}, gpa 0x${gpa.toString(16)}, 0x${size.toString(16)}, ${writable ? "rw" : "ro"}, allocator ${plan.kind}@${plan.at})`;
  const { result: out, used } = s.alloc.during(plan,
    () => s.guard.run(label, verdict, () => t.gpt!.map(gva, gpa, size, typeof prot === "boolean" ? { write: prot } : prot), true));
  s.alloc.taintAliases(t, used);
  if (!out.ok) return;
  s.alloc.checkAccepted(used, label);
  t.map(gva, gpa, size, writable);
  // A leaf onto table pages lets a DMA rewrite tables mid-transfer: the model stops following this one.
  if (gpa < BigInt(DATA_FIRST) * PAGE) t.tainted = true;
}

export function randomBuilderUnmap(s: Session): void {
  const r = s.rng;
  // Often a leaf a device just used: if its IOTLB entry outlives the invalidation, the next DMA shows it.
  const hot = s.touched.filter((x) => !x.table.dead);
  const t = hot.length > 0 && r.chance(0.4) ? r.pick(hot).table : someTable(s);
  if (!t) return;
  const used = s.touched.filter((x) => x.table === t).map((x) => t.leaves.find((l) => x.gva >= l.gva && x.gva < l.gva + l.size)).filter((l) => l !== undefined);
  const leaf = used.length > 0 && r.chance(0.7) ? r.pick(used) : t.leaves.length > 0 ? r.pick(t.leaves) : undefined;
  const [gva, size, bad] = r.weighted<() => [bigint, bigint, string | undefined]>([
    [leaf ? 6 : 0, () => [leaf!.gva, leaf!.size, undefined]],
    [leaf ? 2 : 0, () => [leaf!.gva & ~(2n * MiB - 1n), 2n * MiB, undefined]],
    [2, () => [r.pick(GVA_WINDOWS), r.pick([1n << 30n, 1n << 39n, GVA_SPAN]), undefined]],
    [1, () => [r.pick(GVA_WINDOWS) + BigInt(r.int(2048)) * PAGE, BigInt(r.range(1, 16)) * PAGE, undefined]],
    [1, () => r.pick<[bigint, bigint, string]>([[0x40000010n, PAGE, "misaligned gva"], [0x40000000n, 0n, "zero size"], [U64_MAX - 0xfffn, 2n * PAGE, "wrap"], [1n << 48n, PAGE, "outside the input space"]])],
  ])();
  builderUnmap(s, t, gva, size, bad);
}

/** gpt.unmap: the leaves wholly inside go; until the guest invalidates, each binding may still use them. */
export function builderUnmap(s: Session, t: BuilderTable, gva: bigint, size: bigint, bad?: string): void {
  const label = `${t.name}.unmap(0x${gva.toString(16)}, 0x${size.toString(16)})`;
  // Like map, unmap is all or nothing: EFAULT (nothing changed) when stage 2 keeps a table of the range out of reach.
  const verdict = t.dead ? refused(`unmap on ${t.name}, which is dead`) : bad ? refused(`unmap with ${bad}`)
    : t.tainted || !t.container.tablesWritable() ? EITHER : OK;
  const out = s.guard.run(label, verdict, () => t.gpt!.unmap(gva, size), true);
  if (!out.ok) return;
  const gone = t.unmap(gva, size);
  const bytes = gone.reduce((n, l) => n + l.size, 0n);
  if (!t.tainted && out.value !== bytes) {
    s.tally.note("wrongResult", label, `returned 0x${out.value.toString(16)}; the model had 0x${bytes.toString(16)} bytes mapped there`);
    t.tainted = true;
  }
  for (const b of t.container.bindings) {
    if (b.exact !== t) continue;
    for (const l of gone) {
      const stale = { first: l.gva, last: l.gva + l.size - 1n, gpa: l.gpa, write: l.write };
      b.stale.push(stale);
      b.recent.push(stale);
    }
    b.recent.splice(0, Math.max(0, b.recent.length - 8));
  }
}

export function randomBuilderDestroy(s: Session): void {
  const t = someTable(s);
  if (!t) return;
  const out = s.guard.run(`${t.name}.destroy()`, t.dead ? EITHER : OK, () => t.gpt!.destroy());
  if (!out.ok || t.dead) return;
  // The guest forgets the table and reuses its pages; a binding still walking it is on its own.
  t.dead = true;
  t.tainted = true;
  t.container.tables = t.container.tables.filter((x) => x !== t);
  s.alloc.reclaimDeadTables();
}

// ------------------------------------------------------------------ hostile tables, raw guest writes

/** One chain from a hostile root to a leaf for one GVA, with one level perturbed. */
export function randomHostileChain(s: Session): void {
  const r = s.rng;
  const cm = someContainer(s);
  const format = r.chance(0.85) ? s.w.format : otherFormat(s.w.format);
  const gva = r.pick(HOSTILE_GVAS);
  let table = hostilePage(r, 8);
  const perturbAt = r.int(5);
  for (let level = 3; level >= 0; level--) {
    const slot = table + ((gva >> BigInt(12 + 9 * level)) & 511n) * 8n;
    const next = level === 0 ? BigInt(r.range(DATA_FIRST, GUEST_PAGES - 1)) * PAGE : hostilePage(r);
    let value = level === 0 ? leafEntry(format, next, 0) : tableEntry(format, next);
    if (level === perturbAt) {
      const builderPages = s.model.liveTables().filter((t) => t.container.owner === cm.owner).flatMap((t) => [...t.pages]).filter(GuestPool.isPoolPage);
      value = hostileEntry(r, format, level, table, builderPages);
    }
    guestWriteU64(s, cm, slot, value);
    if (level === perturbAt && r.chance(0.5)) return;
    table = next;
  }
}

/** Raw guest writes: some into a builder's table; some that must be refused; one across into the next chunk. */
export function randomGuestWrite(s: Session): void {
  const r = s.rng;
  const cm = someContainer(s);
  const own = s.model.liveTables().filter((t) => t.container === cm && t.pages.size > 0);
  const choice = r.weighted<string>([[own.length ? 1 : 0, "builder"], [2, "unmapped"], [1, "badValue"], [2, "across"]]);
  if (choice === "builder") {
    const t = r.pick(own);
    const page = r.pick([...t.pages]);
    guestWriteU64(s, cm, (page & ~0xfffn) + BigInt(r.int(512)) * 8n, r.chance(0.5) ? 0n : r.u64());
  } else if (choice === "unmapped") {
    guestWriteU64(s, cm, r.pick([GUEST_BYTES, 1n << 40n, U64_MAX - 7n]), 1n);
  } else if (choice === "badValue") {
    guestWriteU64(s, cm, BigInt(HOSTILE_FIRST) * PAGE, r.pick<unknown>([-1n, 1n << 64n, "7", -1, 1.5]) as bigint);
  } else {
    // 16 bytes across a chunk boundary (table chunk 1 into data chunk 2): all or nothing.
    const gpa = CHUNK_BYTES * 2n - 8n;
    const out = s.guard.run(`${cm.name}.gpa.write(0x${gpa.toString(16)}, 16 bytes)`, guestMemoryVerdict(s, cm, gpa, 16),
      () => cm.c.gpa.write(gpa, new Uint8Array(16).fill(0xa5)), true);
    if (out.ok) retagData(s, cm, CHUNK_BYTES * 2n);
  }
}

function guestMemoryVerdict(s: Session, cm: ContainerModel, gpa: bigint, len: number): Verdict {
  if (cm.closed || !cm.iommu) return refused(`guest memory access in ${cm.name}, which has no IOMMU`);
  for (let at = gpa & ~0xfffn; at < gpa + BigInt(len); at += PAGE) {
    if (!cm.s2(s.w, at)) return refused(`guest memory access at unmapped gpa 0x${at.toString(16)}`);
  }
  return OK;
}

function guestWriteU64(s: Session, cm: ContainerModel, gpa: bigint, value: bigint): void {
  const badValue = typeof value !== "bigint" || value < 0n || value > U64_MAX;
  const verdict = badValue && !(cm.closed || !cm.iommu) ? refused(`writeU64 of ${show(value)}`) : guestMemoryVerdict(s, cm, gpa, 8);
  const out = s.guard.run(`${cm.name}.gpa.writeU64(0x${gpa.toString(16)}, ${show(value)})`, verdict, () => cm.c.gpa.writeU64(gpa, value), true);
  if (!out.ok) return;
  // Raw writes into a builder's table: its model no longer holds.
  for (const t of s.model.liveTables()) if (t.container.owner === cm.owner && t.pages.has(gpa & ~0xfffn)) t.tainted = true;
  if (gpa >= BigInt(DATA_FIRST) * PAGE && gpa < GUEST_BYTES) retagData(s, cm, gpa);
}

/** The guest wrote over one of its data words: put the tag back (wherever stage 2 sends that GPA), as it would restore its data. */
function retagData(s: Session, cm: ContainerModel, gpa: bigint): void {
  const s2 = cm.s2(s.w, gpa);
  if (s2) tagWord(s.w, s2.frame, Number(gpa & 0xff8n));
}
