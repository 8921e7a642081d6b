// A shadow PPGTT (GVT-g's per-process GTT, gtt.c's ppgtt_* code): the guest's
// 4-level table lives in guest memory and maps GMA → GPA; the shadow the GPU
// walks is a tree of tables in frames the helper owns, each DMA-mapped for
// the GPU, whose table pointers and leaves are bus addresses (IOVAs of the
// parent's IOMMU domain). The GPU walks it through the IOMMU: every shadow
// table read and every output is translated again (docs Part B 7).
//
// Guest entries (x86-64 IA-32e format; the GPU's requests are privileged
// with write protect on, so U/S means nothing and R/W governs writes):
//
//   level: 3 PML4E   2 PDPTE (PS: 1 GiB)   1 PDE (PS: 2 MiB)   0 PTE (4 KiB)
//    63..52   51..12   11..8  7   6..3  2    1   0
//   [ ign  ][address][ ign ][PS][ign ][US][RW][P]
//
// What is shadowed:
// - every guest table reachable from the root is tracked (write-protected,
//   GVT's page tracking; here a pin through the mapper, so the VMM's unmap of
//   it is told) and has one shadow table per place it is reached from: a
//   guest table page serving two ranges (two PDEs naming it) has two shadow
//   tables, the reverse map gfn → shadow tables finds them all. (GVT shares
//   one shadow page between them; the translations are the same.)
// - 4 KiB leaves: the frame from the DMA cache (one pin and one map per guest
//   frame, reference-counted), or the scratch page when it cannot be mapped.
// - 2 MiB leaves (PS in a PDE): one 2 MiB shadow leaf when the GPU takes them
//   (pages2M) and the run maps as one (512 HPA-contiguous pins, one 2 MiB
//   dma_map_page); else a table of 512 4 KiB shadow entries (a split).
// - 1 GiB leaves (PS in a PDPTE) are not shadowed: GVT refuses them (EINVAL,
//   unsupported), and the model keeps the guest's value but leaves the shadow
//   entry not present, so the GPU faults at its own MMU anywhere in that GiB.
//   So are entries the GPU would refuse itself (PS in a PML4E, a 2 MiB leaf
//   with address bits 20:13 set) and table pointers to guest pages that cannot
//   be tracked or read (no mapping there).
import { IommuError } from "../errors.js";
import type { DmaCache } from "./cache.js";
import type { DeviceFrame, GuestTables } from "./mapper.js";

const PTE_P = 1n;
const PTE_RW = 2n;
const PTE_US = 4n;
const PTE_PS = 0x80n;
const ADDR = 0x000f_ffff_ffff_f000n;
/** Address bits 20:13 of a 2 MiB leaf (bit 12 is PAT): reserved. */
const RSVD_2M = 0x1f_e000n;
const ENTRIES = 512;
const TOP = 3;
const TABLE_BYTES = 4096;
const ENTRY_BYTES = new Uint8Array(8);
const ENTRY_U64 = new BigUint64Array(ENTRY_BYTES.buffer);

/** One entry of a shadow table: what it holds and the value the GPU reads. */
type Slot =
  /** A pointer to the shadow of a guest table. */
  | { kind: "table"; pte: bigint; child: Table }
  /** A 4 KiB leaf over guest frame gfn (undefined: the scratch page). */
  | { kind: "page"; pte: bigint; gfn: bigint | undefined }
  /** A 2 MiB leaf over guest frames gfn.. gfn + 511, mapped as one. */
  | { kind: "huge"; pte: bigint; gfn: bigint }
  /** A 2 MiB guest leaf as a table of 512 4 KiB entries. */
  | { kind: "split"; pte: bigint; child: Table };

interface Table {
  /** Its entries' cache slots are id * 512 + index. */
  id: number;
  level: number;
  /** The first GMA it covers (canonical). */
  gma: bigint;
  /** The guest table page it shadows (undefined: a split 2 MiB leaf's). */
  guest: bigint | undefined;
  frame: DeviceFrame;
  /** false for the top table: its frame is the GPU context's root and outlives it. */
  ownsFrame: boolean;
  slots: (Slot | undefined)[];
  parent: { table: Table; index: number } | undefined;
  dead: boolean;
}

/** What the PPGTT shadow works with; the facade assembles it. */
export interface PpgttEnv {
  /** 4 KiB frames, and 2 MiB runs. */
  small: DmaCache;
  large: DmaCache;
  guest: GuestTables;
  /** A zeroed frame mapped for the GPU (ENOMEM when none is left). */
  frame(): DeviceFrame;
  /** The top shadow table's frame: the GPU context starts its walks there. */
  root: DeviceFrame;
  scratchBus: bigint;
  pages2M: boolean;
  /** Invalidates the GPU's cached translations of [gma, + pages), or all of them. */
  invalidate(gma?: bigint, pages?: bigint): void;
}

export interface PpgttStats { shadowEntries: number; scratch: number; tablePages: number; splits2M: number; guestTables: number }

export class PpgttShadow {
  private readonly tables = new Map<number, Table>();
  /** Guest table pages tracked, each with the shadow tables it is shadowed by. */
  private readonly tracked = new Map<bigint, Set<Table>>();
  private top: Table | undefined;
  private nextId = 1;
  private present = 0;
  private onScratch = 0;
  private splits = 0;
  private ownFrames = 0;

  constructor(private readonly env: PpgttEnv) {}

  /**
   * The guest's PML4 is at gpa (4 KiB aligned): every table reachable from it
   * is read and shadowed into the top shadow table, whose bus address the GPU
   * context was given; the GPU's cached translations go; then the previous
   * root's shadow is released. A root that cannot be tracked or read throws
   * the mapper's errno; ENOMEM (no frame for a shadow table) leaves all as it
   * was.
   */
  setRoot(gpa: bigint): bigint {
    const gfn = gpa >> 12n;
    const next = this.open(gfn, this.track(gfn), TOP, 0n, this.env.root);
    const old = this.top;
    this.top = next;
    this.env.invalidate();
    if (old) this.free(old);
    return this.env.root.bus;
  }

  /**
   * A trapped 8-byte guest write of `value` at gpa. false (nothing written)
   * when gpa is not in a tracked guest table. Else the value goes to guest
   * memory, and in every shadow table of that page the new translation is
   * built first, then the entry written and invalidated, then the old one
   * released (a table pointer's whole subtree). ENOMEM while building puts
   * the guest's old value back and changes nothing.
   */
  trapWrite(gpa: bigint, value: bigint): boolean {
    const tables = this.tracked.get(gpa >> 12n);
    if (!tables) return false;
    const index = Number((gpa & 0xfffn) >> 3n);
    const old = this.env.guest.read(gpa, 8);
    this.env.guest.write(gpa, u64Bytes(value));
    // Shadow tables made below may be of this very page: they read the new value.
    const targets = [...tables];
    const built: (Slot | undefined)[] = [];
    try {
      for (const t of targets) built.push(this.slotFor(t, index, value));
    } catch (e) {
      built.forEach((s, k) => { if (s) this.release(targets[k], index, s, targets[k].slots[index]); });
      this.env.guest.write(gpa, old);
      throw e;
    }
    targets.forEach((t, k) => {
      // A shadow table released with an earlier one's old subtree needs nothing new.
      if (t.dead) { if (built[k]) this.release(t, index, built[k]!, undefined); } else this.replace(t, index, built[k]);
    });
    return true;
  }

  /** The guest's own 8 bytes at gpa, or undefined when gpa is in no tracked guest table. */
  read(gpa: bigint): bigint | undefined {
    if (!this.tracked.has(gpa >> 12n)) return undefined;
    const b = this.env.guest.read(gpa, 8);
    return new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true);
  }

  /**
   * Guest frames [first, last] go (the VMM unmapped them). Guest tables there
   * stop being tracked and their shadow subtrees go (the guest's tables are
   * gone from the GPU's view); then every shadow leaf over a frame there is
   * cleared and invalidated before the frame is unmapped. `cacheOnly`
   * (kvmgt): the tables are only untracked and the frames starting there
   * unmapped; shadow entries keep the dead bus addresses.
   */
  revoke(first: bigint, last: bigint, cacheOnly: boolean): void {
    const gone: Table[] = [];
    for (const [gfn, tables] of [...this.tracked]) {
      if (gfn < first || gfn > last) continue;
      this.tracked.delete(gfn);
      gone.push(...tables);
      this.env.guest.unprotect(gfn);
    }
    if (!cacheOnly) for (const t of gone) if (!t.dead) this.cut(t);
    for (const cache of [this.env.small, this.env.large]) {
      for (const { gfn, slots } of cache.within(first, last, cacheOnly)) {
        if (!cacheOnly) {
          for (const slot of slots) {
            const t = this.tables.get(Math.floor(slot / ENTRIES));
            if (t) this.replace(t, slot % ENTRIES, undefined);
          }
        }
        cache.drop(gfn);
      }
    }
  }

  stats(): PpgttStats {
    return { shadowEntries: this.present, scratch: this.onScratch, tablePages: this.ownFrames + 1, splits2M: this.splits, guestTables: this.tracked.size };
  }

  /** Releases every shadow table and leaf (the GPU context is gone already). */
  destroy(): void {
    if (this.top) this.free(this.top);
    this.top = undefined;
  }

  /**
   * Tracks the guest table at gfn and reads it (GVT's write protection, then
   * the read). Throws what tracking or reading threw, with nothing kept.
   */
  private track(gfn: bigint): DataView {
    const fresh = !this.tracked.has(gfn);
    if (fresh) this.env.guest.protect(gfn);
    try {
      const entries = this.env.guest.read(gfn << 12n, TABLE_BYTES);
      return new DataView(entries.buffer, entries.byteOffset, TABLE_BYTES);
    } catch (e) {
      if (fresh) this.env.guest.unprotect(gfn);
      throw e;
    }
  }

  /**
   * The shadow table of the guest table at gfn, which track() just read:
   * filled and its frame written whole, in `frame` (the top table's) or a
   * new one. ENOMEM (no frame) keeps nothing.
   */
  private open(gfn: bigint, entries: DataView, level: number, gma: bigint, frame?: DeviceFrame): Table {
    let own: DeviceFrame;
    try {
      own = frame ?? this.env.frame();
    } catch (e) {
      if (!this.tracked.has(gfn)) this.env.guest.unprotect(gfn);
      throw e;
    }
    const t = this.table(level, gma, gfn, own, frame === undefined);
    let set = this.tracked.get(gfn);
    if (!set) this.tracked.set(gfn, set = new Set());
    set.add(t);
    this.fill(t, (i) => this.slotFor(t, i, entries.getBigUint64(i * 8, true)));
    return t;
  }

  /** A shadow table's slots from `make` (index → slot), then its frame written whole; on a throw it is freed. */
  private fill(t: Table, make: (i: number) => Slot | undefined): void {
    const out = new BigUint64Array(ENTRIES);
    try {
      for (let i = 0; i < ENTRIES; i++) {
        const s = make(i);
        if (s) { this.attach(t, i, s); out[i] = s.pte; }
      }
    } catch (e) {
      this.free(t);
      throw e;
    }
    t.frame.write(0, new Uint8Array(out.buffer));
  }

  private table(level: number, gma: bigint, guest: bigint | undefined, frame: DeviceFrame, ownsFrame: boolean): Table {
    const t: Table = { id: this.nextId++, level, gma, guest, frame, ownsFrame, slots: new Array(ENTRIES), parent: undefined, dead: false };
    this.tables.set(t.id, t);
    if (ownsFrame) this.ownFrames++;
    return t;
  }

  /** The shadow of guest entry `pte` at t[i], built but not yet in t. */
  private slotFor(t: Table, i: number, pte: bigint): Slot | undefined {
    if ((pte & PTE_P) === 0n) return undefined;
    const rw = pte & PTE_RW;
    const gma = gmaOf(t, i);
    if (t.level === 0) return this.page(slotOf(t, i), (pte & ADDR) >> 12n, rw);
    if ((pte & PTE_PS) === 0n) {
      const gfn = (pte & ADDR) >> 12n;
      let entries: DataView;
      try {
        entries = this.track(gfn);
      } catch (e) {
        // A guest table that cannot be tracked or read (no mapping there) is not shadowed.
        if (e instanceof IommuError) return undefined;
        throw e;
      }
      const child = this.open(gfn, entries, t.level - 1, gma);
      return { kind: "table", pte: child.frame.bus | PTE_P | PTE_US | rw, child };
    }
    // PS: a 2 MiB leaf in a PDE; 1 GiB (PDPTE) and PS in a PML4E are not shadowed.
    if (t.level !== 1 || (pte & RSVD_2M) !== 0n) return undefined;
    const gfn = (pte & ADDR) >> 12n;
    if (this.env.pages2M) {
      const bus = this.env.large.get(gfn, slotOf(t, i));
      if (bus !== undefined) return { kind: "huge", pte: bus | PTE_P | PTE_US | PTE_PS | rw, gfn };
    }
    const split = this.table(0, gma, undefined, this.env.frame(), true);
    this.fill(split, (k) => this.page(slotOf(split, k), gfn + BigInt(k), rw));
    return { kind: "split", pte: split.frame.bus | PTE_P | PTE_US | rw, child: split };
  }

  private page(slot: number, gfn: bigint, rw: bigint): Slot {
    const bus = this.env.small.get(gfn, slot);
    return { kind: "page", pte: (bus ?? this.env.scratchBus) | PTE_P | PTE_US | rw, gfn: bus === undefined ? undefined : gfn };
  }

  /** t[i] becomes `next`: written, invalidated, then the old one released. */
  private replace(t: Table, i: number, next: Slot | undefined): void {
    const old = t.slots[i];
    if (old) this.detach(t, i, old);
    if (next) this.attach(t, i, next);
    t.frame.write(i * 8, u64Bytes(next?.pte ?? 0n));
    this.env.invalidate(gmaOf(t, i), 1n << (9n * BigInt(t.level)));
    if (old) this.release(t, i, old, next);
  }

  /** Takes t out of the tree: its parent's entry (for the top table, every entry) is cleared, then it is freed. */
  private cut(t: Table): void {
    if (t.parent) { this.replace(t.parent.table, t.parent.index, undefined); return; }
    t.frame.write(0, new Uint8Array(TABLE_BYTES));
    this.env.invalidate();
    if (this.top === t) this.top = undefined;
    this.free(t);
  }

  private attach(t: Table, i: number, s: Slot): void {
    t.slots[i] = s;
    this.count(s, 1);
    if (s.kind === "table" || s.kind === "split") s.child.parent = { table: t, index: i };
  }

  private detach(t: Table, i: number, s: Slot): void {
    t.slots[i] = undefined;
    this.count(s, -1);
  }

  private count(s: Slot, d: number): void {
    this.present += d;
    if (s.kind === "page" && s.gfn === undefined) this.onScratch += d;
    if (s.kind === "split") this.splits += d;
  }

  /** What slot s of t[i] holds goes: a frame reference (kept when `keep` holds the same frame there), or a subtree. */
  private release(t: Table, i: number, s: Slot, keep: Slot | undefined): void {
    if (s.kind === "table" || s.kind === "split") { this.free(s.child); return; }
    if (s.gfn === undefined || (keep?.kind === s.kind && keep.gfn === s.gfn)) return;
    (s.kind === "huge" ? this.env.large : this.env.small).put(s.gfn, slotOf(t, i));
  }

  /** A shadow table goes with everything under it; its guest page is untracked when no other shadow table has it. */
  private free(t: Table): void {
    t.dead = true;
    for (let i = 0; i < ENTRIES; i++) {
      const s = t.slots[i];
      if (!s) continue;
      this.detach(t, i, s);
      this.release(t, i, s, undefined);
    }
    this.tables.delete(t.id);
    if (t.guest !== undefined) {
      const set = this.tracked.get(t.guest);
      if (set?.delete(t) && set.size === 0) {
        this.tracked.delete(t.guest);
        this.env.guest.unprotect(t.guest);
      }
    }
    if (t.ownsFrame) { t.frame.release(); this.ownFrames--; }
  }
}

const slotOf = (t: Table, i: number): number => t.id * ENTRIES + i;

/** The first GMA entry i of t covers: canonical (bits 63:48 copy bit 47). */
function gmaOf(t: Table, i: number): bigint {
  const gma = t.gma + (BigInt(i) << BigInt(12 + 9 * t.level));
  return t.level === TOP && i >= 256 ? gma | 0xffff_0000_0000_0000n : gma;
}

/** value's 8 bytes, little-endian, in a buffer reused by the next call (every caller copies them at once). */
function u64Bytes(value: bigint): Uint8Array {
  ENTRY_U64[0] = value;
  return ENTRY_BYTES;
}
