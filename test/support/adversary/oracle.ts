// Judges each DMA against the model. A read's bytes say where they came from
// (the tags); a write puts a unique marker in every word, and the oracle
// finds the host frame each marker landed in, checks it, and puts back what
// was there. Every 4 KiB page of an access is judged on its own rule.
import type { Violation, Tally } from "./tally.js";
import { deviceGroup, type ContainerModel, type Model } from "./model.js";
import { describeFrame, marker, tagFrame, type Device, type World } from "./world.js";

const PAGE_MASK = 0xfffn;
/** Bits a walker may set or clear in an entry (x86 A, D, EA; Arm AF, AP[2] under HD): ignored when raw bytes are compared. */
const WALKER_BITS = ~((1 << 5) | (1 << 6) | (1 << 7) | (1 << 10));

export interface Access { device: Device; pasid: number; privileged: boolean; write: boolean }

/** What one page of an access may reach. */
export type Rule =
  | { k: "nothing"; why: string }
  | {
    k: "reach";
    cm: ContainerModel;
    /** When the model knows the answer: the only frames allowed ([]: it must fault). */
    expected?: number[];
    /** The count a frame outside `expected` (but inside the container's stage 2) goes to. */
    mismatch: Violation;
    /** A PASID DMA through a builder table with nothing stale: the model's answer is the only one. */
    exact?: boolean;
    why: string;
  };

export class Oracle {
  /** A write landed where the oracle cannot put the old bytes back: the run must stop. */
  corrupt = false;
  private seq = 1;

  constructor(private readonly w: World, private readonly model: Model, private readonly tally: Tally) {}

  // ------------------------------------------------------------------ the rules

  rule(a: Access, address: bigint): Rule {
    const page = address & ~PAGE_MASK;
    const cm = this.model.groupIn[deviceGroup(a.device.index)];
    if (!cm) return { k: "nothing", why: "the device's group is in no container" };
    if (cm.closed || !cm.iommu) return { k: "nothing", why: `${cm.name} has no IOMMU set` };
    if (a.pasid === 0) return this.stage2Rule(cm, page, a.write);
    const b = cm.binding(a.device.index, a.pasid);
    if (!b) return { k: "nothing", why: `no live binding of ${a.device.bdf} PASID ${a.pasid} in ${cm.name}` };
    const t = b.exact;
    if (!t || t.tainted || t.dead || a.privileged) return { k: "reach", cm, mismatch: "breach", why: `PASID ${a.pasid} bound to a table the model does not follow` };
    // The builder's table: the current leaf, or a removed one not yet invalidated.
    const gpas: bigint[] = [];
    const now = t.lookup(page);
    if (now && (!a.write || now.write)) gpas.push(now.gpa);
    const stale = b.stale.filter((s) => page >= s.first && page <= s.last);
    for (const s of stale) if (!a.write || s.write) gpas.push(s.gpa + (page - s.first));
    const expected = gpas.map((gpa) => cm.s2(this.w, gpa)).filter((x) => x !== undefined && (!a.write || x.write)).map((x) => x!.frame);
    const why = `${t.name} maps gva 0x${page.toString(16)} to ${now ? `gpa 0x${now.gpa.toString(16)}${now.write ? "" : " (read-only)"}` : "nothing"}` +
      (stale.length ? `, ${stale.length} stale candidates` : ", nothing stale");
    return { k: "reach", cm, expected, mismatch: "stale", why, exact: stale.length === 0 };
  }

  /** A DMA without PASID: stage 2 alone, exactly. MSI windows are interrupts, never memory. */
  private stage2Rule(cm: ContainerModel, page: bigint, write: boolean): Rule {
    const s2 = cm.s2(this.w, page);
    const expected = s2 && (!write || s2.write) ? [s2.frame] : [];
    return { k: "reach", cm, expected, mismatch: "breach", why: s2 ? `stage 2 maps gpa 0x${page.toString(16)}${s2.write ? "" : " read-only"}` : `stage 2 maps nothing at 0x${page.toString(16)}` };
  }

  // ------------------------------------------------------------------ reads

  /** Judges the first `bytes` bytes of data, read starting at address (8-byte aligned, whole words). */
  checkRead(a: Access, address: bigint, data: Uint8Array, bytes: number, where: string): void {
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    for (let off = 0; off < bytes;) {
      const at = address + BigInt(off);
      const inPage = Number(at & PAGE_MASK);
      const n = Math.min(bytes - off, 4096 - inPage);
      const words: [number, number][] = [];
      for (let k = 0; k + 8 <= n; k += 8) words.push([dv.getUint32(off + k, true), dv.getUint32(off + k + 4, true)]);
      this.checkReadPage(this.rule(a, at), inPage, words, `${where} read at 0x${at.toString(16)}`);
      off += n;
    }
  }

  private checkReadPage(rule: Rule, inPage: number, words: [number, number][], where: string): void {
    if (rule.k === "reach" && rule.exact) this.tally.exactPages++;
    const source = this.sourceFrame(rule, inPage, words);
    if (typeof source === "string") return this.tally.note("breach", where, `${source}; ${rule.why}`);
    if (rule.k === "nothing") {
      return this.tally.note("breach", where, `read ${words.length * 8} bytes${source >= 0 ? ` from ${describeFrame(this.w, source)}` : ""}, but ${rule.why}`);
    }
    if (source < 0) return this.tally.note("breach", where, `${words.length * 8} bytes match no frame ${rule.cm.name} reaches; ${rule.why}`);
    if (!rule.cm.reaches(this.w, source, false)) return this.tally.note("breach", where, `read ${describeFrame(this.w, source)}, outside ${rule.cm.name}'s stage 2; ${rule.why}`);
    if (rule.expected && !rule.expected.includes(source)) {
      this.tally.note(rule.mismatch, where, `read ${describeFrame(this.w, source)}, the model allows ${this.frames(rule.expected)}; ${rule.why}`);
    }
  }

  /**
   * The frame one page's words came from: the frame their tags name (every
   * other word must then equal that frame's), else a frame the rule allows
   * whose words they equal; -1 when none does; a string for bytes that
   * cannot have come from any single frame.
   */
  private sourceFrame(rule: Rule, inPage: number, words: [number, number][]): number | string {
    let frame = -1;
    for (let k = 0; k < words.length; k++) {
      const f = tagFrame(this.w, words[k][0], words[k][1], inPage + 8 * k);
      if (f === -1) continue;
      if (f === -2) return "a tag read at another page offset than the one it was written at";
      if (frame >= 0 && f !== frame) return "one page of the access read from two frames";
      frame = f;
    }
    if (frame >= 0) return this.matches(frame, inPage, words) ? frame : `bytes that are not all from ${describeFrame(this.w, frame)}`;
    if (rule.k === "nothing") return -1;
    const candidates = [...(rule.expected ?? []), ...this.reachable(rule.cm)];
    return candidates.find((f) => this.matches(f, inPage, words)) ?? -1;
  }

  private matches(frame: number, inPage: number, words: [number, number][]): boolean {
    const base = frame * 1024 + inPage / 4;
    return words.every(([lo, hi], k) => ((this.w.ram32[base + 2 * k] ^ lo) & WALKER_BITS) === 0 && this.w.ram32[base + 2 * k + 1] === hi);
  }

  private reachable(cm: ContainerModel): number[] {
    const out: number[] = [];
    for (const f of this.w.guests[cm.owner].frames) if (cm.reaches(this.w, f, false)) out.push(f);
    return out;
  }

  private frames(list: number[]): string {
    return list.length === 0 ? "none (it must fault)" : list.map((f) => describeFrame(this.w, f)).join(" or ");
  }

  // ------------------------------------------------------------------ writes

  /**
   * Markers for a write whose words go to `addresses` (one per word, in
   * buffer order), with a snapshot of what every guest frame holds at each
   * word's page offset, to put back wherever a marker lands.
   */
  prepareWrite(addresses: bigint[]): PendingWrite {
    const bytes = new Uint8Array(addresses.length * 8);
    const dv = new DataView(bytes.buffer);
    const markers: [number, number][] = [];
    const columns: Uint32Array[] = [];
    const gf = this.w.guestFrames;
    for (let k = 0; k < addresses.length; k++) {
      const m = marker(this.seq++);
      markers.push(m);
      dv.setUint32(8 * k, m[0], true);
      dv.setUint32(8 * k + 4, m[1], true);
      const word = Number(addresses[k] & PAGE_MASK) / 4;
      const col = new Uint32Array(gf.length * 2);
      for (let i = 0; i < gf.length; i++) {
        col[2 * i] = this.w.ram32[gf[i] * 1024 + word];
        col[2 * i + 1] = this.w.ram32[gf[i] * 1024 + word + 1];
      }
      columns.push(col);
    }
    return { addresses, bytes, markers, columns };
  }

  /** Finds where each marker landed, judges it, and restores the old bytes. `done` is the bytes that reached memory. */
  checkWrite(a: Access, p: PendingWrite, done: number, where: string): void {
    const rules = new Map<bigint, Rule>();
    const ruleAt = (at: bigint) => {
      const page = at & ~PAGE_MASK;
      if (!rules.has(page)) rules.set(page, this.rule(a, at));
      return rules.get(page)!;
    };
    const gf = this.w.guestFrames;
    for (let k = 0; k < p.addresses.length; k++) {
      const at = p.addresses[k];
      const here = `${where} write at 0x${at.toString(16)}`;
      const word = Number(at & PAGE_MASK) / 4;
      const [lo, hi] = p.markers[k];
      const landed: number[] = [];
      for (let i = 0; i < gf.length; i++) {
        const idx = gf[i] * 1024 + word;
        if (this.w.ram32[idx] === lo && this.w.ram32[idx + 1] === hi) {
          landed.push(gf[i]);
          this.w.ram32[idx] = p.columns[k][2 * i];
          this.w.ram32[idx + 1] = p.columns[k][2 * i + 1];
        }
      }
      const reported = 8 * k < done;
      if (landed.length === 0) {
        if (reported) this.lost(word, lo, hi, here);
        continue;
      }
      if (!reported) this.tally.note("wrongResult", here, `a word past the ${done} bytes reported landed in ${describeFrame(this.w, landed[0])}`);
      if (landed.length > 1) this.tally.note("breach", here, `one word landed in ${landed.length} frames`);
      for (const f of landed) this.judgeWrite(ruleAt(at), f, here);
    }
  }

  private judgeWrite(rule: Rule, frame: number, where: string): void {
    if (rule.k === "reach" && rule.exact) this.tally.exactPages++;
    if (rule.k === "nothing") return this.tally.note("breach", where, `wrote ${describeFrame(this.w, frame)}, but ${rule.why}`);
    if (!rule.cm.reaches(this.w, frame, true)) return this.tally.note("breach", where, `wrote ${describeFrame(this.w, frame)}, not writable in ${rule.cm.name}'s stage 2; ${rule.why}`);
    if (rule.expected && !rule.expected.includes(frame)) {
      this.tally.note(rule.mismatch, where, `wrote ${describeFrame(this.w, frame)}, the model allows ${this.frames(rule.expected)}; ${rule.why}`);
    }
  }

  /** A reported word is in no guest frame at its offset: look everywhere. Anything found there cannot be put back. */
  private lost(word: number, lo: number, hi: number, where: string): void {
    const ram = this.w.ram32;
    for (let f = 0; f < this.w.frameCount; f++) {
      const idx = f * 1024 + word;
      if (ram[idx] === lo && ram[idx + 1] === hi) {
        this.corrupt = true;
        return this.tally.note("breach", where, `landed in ${describeFrame(this.w, f)}`);
      }
    }
    for (let idx = 0; idx + 1 < ram.length; idx += 2) {
      if (ram[idx] === lo && ram[idx + 1] === hi) {
        this.corrupt = true;
        return this.tally.note("breach", where, `landed at hpa 0x${(idx * 4).toString(16)}, another page offset than asked`);
      }
    }
    this.tally.note("wrongResult", where, "reported as written, but is nowhere in RAM");
  }
}

export interface PendingWrite {
  addresses: bigint[];
  /** The markers, to write. */
  bytes: Uint8Array;
  markers: [number, number][];
  /** Per word: every guest frame's old bytes at that word's page offset. */
  columns: Uint32Array[];
}
