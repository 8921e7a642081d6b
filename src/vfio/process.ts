// A user process (the VMM): its own x86-64 page tables in RAM, mmap() backed
// by frames that need not be contiguous, and a locked-memory limit that
// MAP_DMA pins count against (RLIMIT_MEMLOCK). Reads and writes go through
// its tables as a CPU access would.
import { toU64, toLength, lastOf, requireAligned, hex, PAGE_SIZE, type Address } from "../addr.js";
import { bool, bytes as checkBytes, options } from "../args.js";
import { fail } from "../errors.js";
import * as abi from "../engine/abi.js";
import type { DataPlane } from "./plane.js";
import type { WalkResult } from "../pagetable.js";
import type { Access } from "../access.js";

/** The process's page table (the engine's PageTable, or the twin's). */
export interface ProcessPageTable {
  readonly contextId: number;
  walk(vaddr: bigint, access: Access): WalkResult;
  destroy(): void;
}

/** Physical RAM as the process's CPU accesses reach it. */
export interface ProcessRam {
  read(hpa: bigint, len: number): Uint8Array;
  write(hpa: bigint, bytes: Uint8Array): void;
  view(hpa: bigint, len: number): Uint8Array;
}

export interface ProcessOptions {
  /** Bytes the process may have pinned (RLIMIT_MEMLOCK). Default: unlimited (as with CAP_IPC_LOCK). */
  memlockLimit?: Address;
}

export interface MmapOptions {
  /** Writable by the process. Default true. */
  write?: boolean;
}

/** Where mmap() places areas: above the first 256 MiB, below the 47-bit user limit. */
const MMAP_BASE = 0x10000000n;
const USER_TOP = 1n << 47n;

export class Process {
  readonly id: number;
  readonly memlockLimit: bigint;
  /** Bytes currently pinned for DMA on behalf of this process. */
  lockedBytes = 0n;
  /** Mapped areas [start, end) sorted by start. */
  private areas: { start: bigint; end: bigint }[] = [];
  private hasExited = false;

  /** @internal */
  constructor(private readonly plane: DataPlane, private readonly ram: ProcessRam, readonly pageTable: ProcessPageTable, id: number, options: ProcessOptions) {
    this.id = id;
    this.memlockLimit = processLimit(options);
  }

  private live(): void {
    if (this.hasExited) fail("ENODEV", "process has exited");
  }

  get exited(): boolean { return this.hasExited; }

  /** Maps size bytes of fresh, zeroed memory; returns the vaddr. ENOMEM when RAM (or address space) runs out. */
  mmap(size: Address, given?: MmapOptions): bigint {
    this.live();
    const writable = bool(options(given, "mmap options", ["write"] as const).write, "mmap write", true);
    const s = toU64(size, "size");
    if (s === 0n) fail("EINVAL", "mmap: size is zero");
    const length = (s + PAGE_SIZE - 1n) & ~(PAGE_SIZE - 1n);
    let start = MMAP_BASE;
    let at = 0;
    for (; at < this.areas.length; at++) {
      if (this.areas[at].start - start >= length) break;
      start = this.areas[at].end;
    }
    if (start + length > USER_TOP) fail("ENOMEM", `mmap: no ${hex(length)}-byte hole in the address space`);
    const prot = abi.PERM_R | abi.PERM_U | (writable ? abi.PERM_W : 0);
    const st = this.plane.processMap(this.pageTable.contextId, start, start + length - 1n, prot);
    if (st === abi.ERR_ENOMEM) fail("ENOMEM", `mmap: not enough free frames for ${hex(length)} bytes`);
    if (st !== abi.ST_OK) fail("EFAULT", `mmap: the process page tables refused the mapping (status ${st})`);
    this.areas.splice(at, 0, { start, end: start + length });
    return start;
  }

  /**
   * Unmaps [vaddr, vaddr + size) (whole pages; holes are fine). Frames go back
   * to the host unless a device still has them pinned: those stay until the
   * DMA mapping goes, as pinned pages do in Linux.
   */
  munmap(vaddr: Address, size: Address): void {
    this.live();
    const v = toU64(vaddr, "vaddr"), s = toU64(size, "size");
    requireAligned(v, PAGE_SIZE, "munmap vaddr");
    const length = (s + PAGE_SIZE - 1n) & ~(PAGE_SIZE - 1n);
    const last = lastOf(v, length, "munmap");
    if (last >= USER_TOP) fail("EINVAL", `munmap: [${hex(v)}, ${hex(last)}] is beyond the user address space`);
    this.plane.processUnmap(this.pageTable.contextId, v, last);
    const end = last + 1n;
    const kept: { start: bigint; end: bigint }[] = [];
    for (const a of this.areas) {
      if (a.end <= v || a.start >= end) { kept.push(a); continue; }
      if (a.start < v) kept.push({ start: a.start, end: v });
      if (a.end > end) kept.push({ start: end, end: a.end });
    }
    this.areas = kept;
  }

  /** The HPA behind each page of [vaddr, vaddr + len), checking it is mapped. */
  private pages(vaddr: Address, len: number, write: boolean): { hpa: bigint; offset: number; bytes: number }[] {
    this.live();
    const v = toU64(vaddr, "vaddr");
    if (v + BigInt(len) > USER_TOP) fail("EFAULT", `[${hex(v)}, +${len}) is beyond the user address space`);
    const out: { hpa: bigint; offset: number; bytes: number }[] = [];
    let done = 0;
    while (done < len) {
      const at = v + BigInt(done);
      const walk = this.pageTable.walk(at, write ? { write: true } : "read");
      if (walk.fault) fail("EFAULT", `${hex(at)} is not mapped ${write ? "writable " : ""}in the process`);
      const bytes = Math.min(len - done, Number(PAGE_SIZE - (at & (PAGE_SIZE - 1n))));
      out.push({ hpa: walk.hpa!, offset: done, bytes });
      done += bytes;
    }
    return out;
  }

  /** @internal EFAULT unless every page of [vaddr, vaddr + len) is mapped (writable, for a write). */
  checkAccess(vaddr: bigint, len: number, write: boolean): void { this.pages(vaddr, len, write); }

  read(vaddr: Address, len: number): Uint8Array {
    const n = toLength(len, "read length");
    // Every page is resolved before anything is allocated for the copy.
    const pages = this.pages(vaddr, n, false);
    const out = new Uint8Array(n);
    for (const p of pages) out.set(this.ram.read(p.hpa, p.bytes), p.offset);
    return out;
  }

  write(vaddr: Address, bytes: Uint8Array): void {
    const data = checkBytes(bytes, "write bytes");
    const pages = this.pages(vaddr, data.length, true);
    for (const p of pages) this.ram.write(p.hpa, data.subarray(p.offset, p.offset + p.bytes));
  }

  /**
   * A zero-copy view of [vaddr, vaddr + len), for an emulator's guest RAM.
   * The range must be physically contiguous (EINVAL otherwise): mmap() hands
   * out frames in order, so a fresh host's areas usually are.
   */
  view(vaddr: Address, len: number): Uint8Array {
    len = toLength(len, "view length");
    const pages = this.pages(vaddr, len, false);
    if (pages.length === 0) return new Uint8Array(0);
    for (let i = 1; i < pages.length; i++) {
      if (pages[i].hpa !== pages[0].hpa + BigInt(pages[i].offset)) fail("EINVAL", `view: [${hex(toU64(vaddr, "vaddr"))}, +${len}) is not physically contiguous`);
    }
    return this.ram.view(pages[0].hpa, len);
  }

  /** The areas mmap() handed out, [start, end). */
  get mappings(): readonly { start: bigint; end: bigint }[] { return this.areas; }

  /** Unmaps everything and frees the page tables (pinned frames stay until unpinned). */
  exit(): void {
    if (this.hasExited) return;
    for (const a of [...this.areas]) this.munmap(a.start, a.end - a.start);
    this.pageTable.destroy();
    this.hasExited = true;
  }
}

/** createProcess's options, checked before anything is made for the process: its locked-memory limit. */
export function processLimit(given: ProcessOptions | undefined): bigint {
  const limit = options(given, "createProcess options", ["memlockLimit"] as const).memlockLimit;
  return limit === undefined ? (1n << 64n) - 1n : toU64(limit as Address, "memlockLimit");
}
