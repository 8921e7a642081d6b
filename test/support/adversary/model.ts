// The model of who may reach what. A DMA may reach only frames of the process
// that owns the device's current container, mapped in that container's stage
// 2 now (writable, for a write); a PASID-tagged DMA also needs a live binding
// of (device, PASID) made in that container. For stage-1 tables built only
// with the builder the model knows gva → gpa exactly, and which stale
// translations the IOTLB may still serve until the guest invalidates them.
import type { Container, GuestPageTable, IommuType } from "../../../src/index.js";
import {
  CHUNK_BYTES, CHUNKS, DEVICE_SPECS, GUEST_PAGES, HOSTILE_FIRST, MiB, PAGE, PAGES_PER_CHUNK, POOL_FIRST,
  type Stage1Format, type World,
} from "./world.js";

/** The builder's rule: the largest page that fits (1 GiB, 2 MiB, 4 KiB). */
const LEAF_SIZES = [1024n * MiB, 2n * MiB, PAGE];

export interface Chunk { src: number; write: boolean }
export interface Leaf { gva: bigint; size: bigint; gpa: bigint; write: boolean }
/** A translation the IOTLB may still hold: gva in [first, last] → gpa + (gva - first). */
export interface Stale { first: bigint; last: bigint; gpa: bigint; write: boolean }

/** What an allocator handed out and did not get back: a multiset (a sloppy allocator may hand out a page twice). */
export class HandedOut {
  private readonly list: bigint[] = [];
  get size(): number { return this.list.length; }
  add(gpa: bigint): void { this.list.push(gpa); }
  has(gpa: bigint): boolean { return this.list.includes(gpa); }
  delete(gpa: bigint): boolean {
    const i = this.list.indexOf(gpa);
    if (i >= 0) this.list.splice(i, 1);
    return i >= 0;
  }
  [Symbol.iterator](): Iterator<bigint> { return this.list[Symbol.iterator](); }
}

/** A table built with c.gpa.pageTable: its leaves, and the guest pages it holds. */
export class BuilderTable {
  leaves: Leaf[] = [];
  /**
   * Something the model cannot follow touched it (pages offered twice, two
   * builders over one root, raw writes, a refused call that wrote guest
   * memory): it expects nothing exact of it any more; isolation still holds.
   */
  tainted = false;
  /** Destroyed, or its container let go of the stage 2 it was built over. */
  dead = false;
  /** Its pages went back to the guest's pool (once dead). */
  reclaimed = false;
  /** Built over another table's root, or had one built over it: its pages never go back to the pool (the other may still walk them). */
  shared = false;
  /** GPAs its allocator handed out and it has not handed back (the root among them). */
  readonly pages = new HandedOut();
  gpt: GuestPageTable | undefined;
  root = 0n;

  constructor(readonly id: number, readonly container: ContainerModel, readonly format: Stage1Format) {}

  lookup(gva: bigint): { gpa: bigint; write: boolean } | undefined {
    const l = this.leaves.find((x) => gva >= x.gva && gva < x.gva + x.size);
    return l && { gpa: l.gpa + (gva - l.gva), write: l.write };
  }

  overlaps(gva: bigint, size: bigint): boolean {
    const last = gva + size - 1n;
    return this.leaves.some((l) => l.gva <= last && gva <= l.gva + l.size - 1n);
  }

  map(gva: bigint, gpa: bigint, size: bigint, write: boolean): void {
    for (let done = 0n; done < size;) {
      const s = LEAF_SIZES.find((p) => (gva + done) % p === 0n && (gpa + done) % p === 0n && size - done >= p)!;
      this.leaves.push({ gva: gva + done, size: s, gpa: gpa + done, write });
      done += s;
    }
  }

  /** Removes the leaves wholly inside [gva, gva + size) and returns them. */
  unmap(gva: bigint, size: bigint): Leaf[] {
    const inside = (l: Leaf) => l.gva >= gva && l.gva + l.size <= gva + size;
    const gone = this.leaves.filter(inside);
    this.leaves = this.leaves.filter((l) => !inside(l));
    return gone;
  }

  get name(): string { return `table #${this.id} (root 0x${this.root.toString(16)})`; }
}

export interface Binding {
  device: number;
  pasid: number;
  root: bigint;
  /** The builder table the model follows exactly, when the bind described it as it was built. */
  exact: BuilderTable | undefined;
  /** Translations removed since the last invalidation that covered them. */
  stale: Stale[];
  /** The last few translations removed, invalidated or not (where a stale IOTLB entry would show). */
  recent: Stale[];
}

export class ContainerModel {
  closed = false;
  iommu: IommuType | undefined;
  readonly groups: number[] = [];
  chunks: (Chunk | undefined)[] = new Array(CHUNKS).fill(undefined);
  readonly pasids = new Set<number>();
  bindings: Binding[] = [];
  tables: BuilderTable[] = [];

  constructor(readonly id: number, readonly c: Container, readonly owner: number, readonly quota: number,
    private readonly dropped: (b: Binding) => void) {}

  get name(): string { return `c${"AB"[this.owner]}#${this.id}`; }

  /** Where stage 2 sends a GPA now. */
  s2(w: World, gpa: bigint): { frame: number; write: boolean } | undefined {
    if (gpa < 0n || gpa >= CHUNK_BYTES * BigInt(CHUNKS)) return undefined;
    const i = Number(gpa / CHUNK_BYTES);
    const ch = this.chunks[i];
    if (!ch) return undefined;
    const page = ch.src * PAGES_PER_CHUNK + Number((gpa % CHUNK_BYTES) / PAGE);
    return { frame: w.guests[this.owner].frames[page], write: ch.write };
  }

  /** Whether stage 2 maps this host frame now (writable, for a write). */
  reaches(w: World, frame: number, write: boolean): boolean {
    const o = w.frameOwner[frame];
    if (o < 0 || Math.floor(o / GUEST_PAGES) !== this.owner) return false;
    const src = Math.floor((o % GUEST_PAGES) / PAGES_PER_CHUNK);
    return this.chunks.some((ch) => ch !== undefined && ch.src === src && (!write || ch.write));
  }

  binding(device: number, pasid: number): Binding | undefined {
    return this.bindings.find((b) => b.device === device && b.pasid === pasid);
  }

  dropBindings(which: (b: Binding) => boolean): void {
    for (const b of this.bindings) if (which(b)) this.dropped(b);
    this.bindings = this.bindings.filter((b) => !which(b));
  }

  /** The last group left, or the container closed: no driver, no mappings, no bindings, no live guest table. */
  release(): void {
    this.dropBindings(() => true);
    this.chunks = new Array(CHUNKS).fill(undefined);
    this.iommu = undefined;
    for (const t of this.tables) t.dead = true;
    this.tables = [];
  }

  /** Whether both table chunks are mapped writable (the builder needs to write there). */
  tablesWritable(): boolean {
    return this.chunks[0]?.write === true && this.chunks[1]?.write === true;
  }
}

/** A guest's pool of pages for builder tables (one per process, shared by its containers over time). */
export class GuestPool {
  free: bigint[] = [];

  constructor(readonly owner: number) {
    for (let p = HOSTILE_FIRST - 1; p >= POOL_FIRST; p--) this.free.push(BigInt(p) * PAGE);
  }

  static isPoolPage(gpa: bigint): boolean {
    return gpa % PAGE === 0n && gpa >= BigInt(POOL_FIRST) * PAGE && gpa < BigInt(HOSTILE_FIRST) * PAGE;
  }
}

export class Model {
  readonly containers: ContainerModel[] = [];
  /** Each process's newest container (it may be closed). */
  readonly current: ContainerModel[] = [];
  readonly groupIn: (ContainerModel | undefined)[];
  readonly pools = [new GuestPool(0), new GuestPool(1)];
  /** Bindings that ended lately: an attacker keeps trying their PASIDs. */
  readonly former: Binding[] = [];
  /** Every builder table ever asked for, live or not (their handed-out pages are part of every snapshot). */
  readonly tables: BuilderTable[] = [];

  constructor(groups: number) {
    this.groupIn = new Array(groups).fill(undefined);
  }

  addContainer(c: Container, owner: number, quota: number): ContainerModel {
    const cm = new ContainerModel(this.containers.length, c, owner, quota, (b) => {
      this.former.push(b);
      if (this.former.length > 16) this.former.shift();
    });
    this.containers.push(cm);
    this.current[owner] = cm;
    return cm;
  }

  newTable(cm: ContainerModel, format: Stage1Format): BuilderTable {
    const t = new BuilderTable(this.tables.length, cm, format);
    this.tables.push(t);
    return t;
  }

  liveTables(): BuilderTable[] {
    return this.tables.filter((t) => !t.dead);
  }

  live(): ContainerModel[] {
    return this.containers.filter((c) => !c.closed);
  }

  /** Whether any live container holds the PASID (the space is host-wide). */
  held(pasid: number): boolean {
    return this.containers.some((c) => !c.closed && c.pasids.has(pasid));
  }

  /** UNSET_CONTAINER: the group's devices lose their bindings there; the last group out releases the container. */
  detach(g: number): void {
    const cm = this.groupIn[g];
    if (!cm) return;
    this.groupIn[g] = undefined;
    cm.groups.splice(cm.groups.indexOf(g), 1);
    // A group that leaves takes its devices' bindings with it.
    cm.dropBindings((b) => deviceGroup(b.device) === g);
    if (cm.groups.length === 0 && cm.iommu) cm.release();
  }

  /** close(): every group leaves, everything is released, the PASIDs go back to the host. */
  close(cm: ContainerModel): void {
    for (const g of cm.groups) this.groupIn[g] = undefined;
    cm.groups.length = 0;
    cm.release();
    cm.pasids.clear();
    cm.closed = true;
  }
}

/** The group of device index i (DEVICE_SPECS order). */
export function deviceGroup(i: number): number {
  return DEVICE_SPECS[i].group;
}

/** Removes [first, last] from the stale list (an invalidation covered it). */
export function invalidateStale(list: Stale[], first: bigint, last: bigint): Stale[] {
  const out: Stale[] = [];
  for (const s of list) {
    if (s.last < first || s.first > last) { out.push(s); continue; }
    if (s.first < first) out.push({ ...s, last: first - 1n });
    if (s.last > last) out.push({ first: last + 1n, last: s.last, gpa: s.gpa + (last + 1n - s.first), write: s.write });
  }
  return out;
}
