// The adversary's world: one host, two VMM processes A and B with 4 MiB of
// guest RAM each, three IOMMU groups with four devices, and every 8-byte word
// of guest RAM tagged with where it lives, so a DMA's bytes say which host
// frame they came from.
//
// Guest RAM, per process (GPA = offset in its mmap()ed area while stage 2
// maps it in place):
//
//   page 0           unused
//   pages 1..95      the guest's pool for builder tables (c.gpa.pageTable),
//                    zeroed while free, as a guest keeps its free table pages
//   pages 96..127    hostile tables, written only with raw c.gpa writes
//   pages 128..1023  data, every word tagged
//
// A tag is MAGIC | owner << 40 | page << 12 | offset. Its bit 0 is clear, so
// a walker that reads a tag as a page-table entry (a hostile table may point
// into data) sees "not present" and never writes an accessed or dirty bit
// into it.
import { createHost, type Host, type Process, type VfioDevice, type VfioGroup } from "../../../src/index.js";

export const PAGE = 4096n;
export const GUEST_BYTES = 4n << 20n;
export const GUEST_PAGES = 1024;
/** Stage 2 maps guest RAM in 16 chunks of 256 KiB. */
export const CHUNK_BYTES = 256n << 10n;
export const CHUNKS = 16;
export const PAGES_PER_CHUNK = 64;
/** Chunks 0 and 1 hold every table page. */
export const TABLE_CHUNKS = 2;
export const POOL_FIRST = 1;
export const HOSTILE_FIRST = 96;
export const DATA_FIRST = 128;

/** A PASID's largest value; the largest u64. */
export const PASID_MAX = 0xfffff;
export const U64_MAX = (1n << 64n) - 1n;
export const MiB = 1n << 20n;

/** GVA windows the builder maps in: a low one, and a high one that needs tables of its own. */
export const GVA_WINDOWS = [0x40000000n, 0x7f0000000000n];
export const GVA_SPAN = 8n * MiB;
/** Most maps land in the first 512 KiB of a window, so pages are reused and IOTLB entries go stale. */
export const GVA_HOT = 512n * 1024n;
/** GVAs hostile tables map (each chain is written for one of them). */
export const HOSTILE_GVAS = [0x40000000n, 0x40001000n, 0x40002000n, 0x40003000n, 0x40200000n, 0x40400000n, 0x7f0000000000n, 0n];

const TAG_HI = 0x7a5e0000;
const MARK_HI = 0x5c3a0000;

export const DEVICE_SPECS = [
  { bdf: "0000:01:00.0", group: 0 },
  { bdf: "0000:01:00.1", group: 0 },
  { bdf: "0000:02:00.0", group: 1 },
  { bdf: "0000:03:00.0", group: 2 },
] as const;
export const GROUPS = 3;

export type Arch = "vtd" | "smmuv3";
export type Stage1Format = "x86-64" | "arm64";

export interface Guest {
  owner: number;
  process: Process;
  /** Where guest RAM starts in the process. */
  gram: bigint;
  /** Guest page → host frame number. */
  frames: Int32Array;
}

export interface Device {
  index: number;
  bdf: string;
  group: number;
  dev: VfioDevice;
}

export interface World {
  host: Host;
  arch: Arch;
  /** The stage-1 format the guests of this arch build. */
  format: Stage1Format;
  /** All of host RAM as 32-bit words (little-endian halves of the 8-byte words). */
  ram32: Uint32Array;
  frameCount: number;
  /** Host frame → owner * GUEST_PAGES + guest page, or -1 for a frame no guest owns. */
  frameOwner: Int32Array;
  guests: Guest[];
  groups: VfioGroup[];
  devices: Device[];
  /** The frames of both guests, in one list (the columns the write oracle snapshots). */
  guestFrames: Int32Array;
}

export async function createWorld(arch: Arch, ramBytes = 64 << 20): Promise<World> {
  const host = await createHost({ arch, ramSize: ramBytes });
  for (const d of DEVICE_SPECS) host.addDevice({ bdf: d.bdf, group: d.group });
  const view = host.ram.view(0n, ramBytes);
  const ram32 = new Uint32Array(view.buffer, view.byteOffset, ramBytes / 4);
  const frameCount = ramBytes / 4096;
  const frameOwner = new Int32Array(frameCount).fill(-1);
  const guests: Guest[] = [0, 1].map((owner) => {
    const process = host.createProcess();
    const gram = process.mmap(GUEST_BYTES);
    const frames = new Int32Array(GUEST_PAGES);
    for (let page = 0; page < GUEST_PAGES; page++) {
      const walk = process.pageTable.walk(gram + BigInt(page) * PAGE, "read");
      frames[page] = Number(walk.hpa! >> 12n);
      frameOwner[frames[page]] = owner * GUEST_PAGES + page;
    }
    return { owner, process, gram, frames };
  });
  const groups = Array.from({ length: GROUPS }, (_, g) => host.openGroup(g));
  const devices = DEVICE_SPECS.map((d, index) => ({ index, bdf: d.bdf, group: d.group, dev: groups[d.group].device(d.bdf) }));
  const guestFrames = Int32Array.from([...guests[0].frames, ...guests[1].frames]);
  const world: World = { host, arch, format: arch === "vtd" ? "x86-64" : "arm64", ram32, frameCount, frameOwner, guests, groups, devices, guestFrames };
  for (const g of guests) for (let page = DATA_FIRST; page < GUEST_PAGES; page++) tagPage(world, g.owner, page);
  return world;
}

/** Writes the tags of one guest page (every word says owner, page, offset). */
export function tagPage(w: World, owner: number, page: number): void {
  for (let offset = 0; offset < 4096; offset += 8) tagWord(w, w.guests[owner].frames[page], offset);
}

/** Writes the tag of one word of a guest's frame. */
export function tagWord(w: World, frame: number, offset: number): void {
  const o = w.frameOwner[frame];
  const base = frame * 1024 + offset / 4;
  w.ram32[base] = ((o % GUEST_PAGES) << 12) | offset;
  w.ram32[base + 1] = (TAG_HI | (Math.floor(o / GUEST_PAGES) << 8)) >>> 0;
}

/** The frame a tag names, if (lo, hi) is a tag whose offset is `offset`; -1 if it is no tag; -2 for a tag at the wrong offset. */
export function tagFrame(w: World, lo: number, hi: number, offset: number): number {
  if ((hi & 0xffff00ff) !== TAG_HI) return -1;
  const owner = (hi >>> 8) & 0xff, page = lo >>> 12;
  if (owner > 1 || page >= GUEST_PAGES || (lo & 7) !== 0) return -1;
  return (lo & 0xfff) === offset ? w.guests[owner].frames[page] : -2;
}

/** A write marker: unique per sequence number, never a tag, bit 0 clear. */
export function marker(seq: number): [number, number] {
  return [(seq * 8) >>> 0, (MARK_HI | Math.floor(seq / 0x20000000)) >>> 0];
}

/** "owner A page 0x1a3 (frame 0x2345)" for messages. */
export function describeFrame(w: World, frame: number): string {
  const o = frame >= 0 && frame < w.frameCount ? w.frameOwner[frame] : -1;
  if (o < 0) return `host frame 0x${frame.toString(16)} (no guest's)`;
  return `guest ${"AB"[Math.floor(o / GUEST_PAGES)]} page 0x${(o % GUEST_PAGES).toString(16)} (frame 0x${frame.toString(16)})`;
}

/**
 * A copy of both guests' RAM, to tell whether a refused call wrote any of it.
 * Copied run by run of contiguous frames into one buffer made once (a fresh
 * 8 MiB allocation per call costs more than the copy).
 */
export class GuestImage {
  private readonly runs: { frame: number; pages: number; at: number }[] = [];
  private readonly copy: Buffer;
  private readonly ram: Buffer;

  constructor(private readonly w: World) {
    const f = w.guestFrames;
    for (let i = 0; i < f.length; i++) {
      const last = this.runs[this.runs.length - 1];
      if (last && f[i] === last.frame + last.pages) last.pages++;
      else this.runs.push({ frame: f[i], pages: 1, at: i * 4096 });
    }
    this.copy = Buffer.alloc(f.length * 4096);
    this.ram = Buffer.from(w.ram32.buffer, w.ram32.byteOffset, w.ram32.byteLength);
  }

  capture(): void {
    for (const r of this.runs) this.ram.copy(this.copy, r.at, r.frame * 4096, (r.frame + r.pages) * 4096);
  }

  /** Where guest RAM now differs from the capture, or undefined. */
  changed(): string | undefined {
    for (const r of this.runs) {
      const now = this.ram.subarray(r.frame * 4096, (r.frame + r.pages) * 4096);
      const then = this.copy.subarray(r.at, r.at + r.pages * 4096);
      if (now.equals(then)) continue;
      let i = 0;
      while (now[i] === then[i]) i++;
      return `${describeFrame(this.w, r.frame + Math.floor(i / 4096))} at offset 0x${(i % 4096).toString(16)}`;
    }
    return undefined;
  }
}

/** Zeroes one guest page directly (the guest's own CPU store, not through the library). */
export function zeroPage(w: World, owner: number, page: number): void {
  const base = w.guests[owner].frames[page] * 1024;
  w.ram32.fill(0, base, base + 1024);
}

/** Whether one guest page is all zero. */
export function pageIsZero(w: World, owner: number, page: number): boolean {
  const base = w.guests[owner].frames[page] * 1024;
  for (let i = base; i < base + 1024; i++) if (w.ram32[i] !== 0) return false;
  return true;
}
