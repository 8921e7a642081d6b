// type1's "external" pins: the pages a vendor driver (an mdev's) pins through
// the container with vfio_pin_pages, reads and writes with vfio_dma_rw, and
// the dma_unmap notification that makes it let go before a mapping goes
// (docs/mediated-devices.md A3–A7, v6.18).
//
// A pin record belongs to the container's mapping, not to the device: one
// per IOVA page, reference-counted, shared by every mdev in the container.
// The frames are pinned in the data plane (one call per run of new pages);
// the records and the memlock accounting are kept here.
import { hex, PAGE_SIZE, U64_MAX, toU64, type Address } from "../addr.js";
import { fail, KernelBug } from "../errors.js";
import * as abi from "../engine/abi.js";
import { live, type ContainerCore } from "./core.js";
import type { DmaMapping } from "./mappings.js";
import { MAX_REFS, PinRecords } from "./pinrecords.js";

/** VFIO_PIN_PAGES_MAX_ENTRIES: PAGE_SIZE / sizeof(unsigned long). */
export const PIN_PAGES_MAX = 512;

/** type1's retry limit: a mapping whose pins survive this many rounds of callbacks is a BUG. */
const UNMAP_RETRIES = 10;

/** What a pin call took, undone if a later page fails: references, and runs of new records (first page, count) with their mappings. */
interface Taken { refs: number[]; runs: number[]; runMaps: DmaMapping[] }

export interface PinProtection { read: boolean; write: boolean }

export class ExternalPins {
  /** By IOVA page number (below 2^52, exact as a number). */
  private readonly records = new PinRecords();
  /** Records per mapping: the unmap walk notifies for a mapping that has any. */
  private readonly perMapping = new Map<DmaMapping, number>();
  /** Set while dma_unmap callbacks run: an unmap that must notify again would take the device-list lock twice. */
  private notifying = false;
  /**
   * A pin call's HPAs as they are gathered (PIN_PAGES_MAX of them), with a
   * view as 32-bit halves so frames are read and written with no BigInt, and
   * its undo log: reused by every call (a pin calls no one back).
   */
  private readonly hpas = new BigUint64Array(PIN_PAGES_MAX);
  private readonly halves = new Uint32Array(this.hpas.buffer);
  private readonly taken: Taken = { refs: [], runs: [], runMaps: [] };

  constructor(private readonly core: ContainerCore) {}

  /** The pin records a mapping holds. */
  count(m: DmaMapping): number { return this.perMapping.get(m) ?? 0; }

  /** Pin records in the container (every mapping). */
  get total(): number { return this.records.size; }

  /** The HPA a record pins for the IOVA page, if the page is pinned. */
  pinned(iova: bigint): { hpa: bigint; refs: number } | undefined {
    const page = Number(iova >> 12n), refs = this.records.refsOf(page);
    return refs === 0 ? undefined : { hpa: BigInt(this.records.frameOf(page)) << 12n, refs };
  }

  /**
   * vfio_pin_pages' type1 part, page by page in IOVA order: the mapping
   * (EINVAL), its protection (EPERM), an existing record (one more
   * reference), else the process page at the mapping's vaddr pinned with the
   * mapping's protection (ENODEV once the process is gone, EFAULT where it is
   * not mapped so, ENOMEM past RLIMIT_MEMLOCK when the container has no
   * IOMMU domain). All or nothing. The caller has checked the arguments.
   * `copy` false: the HPAs in this object's own array, good until the next
   * pin (for a caller that reads them at once).
   */
  pin(first: bigint, npage: number, prot: PinProtection, copy = true): BigUint64Array {
    live(this.core);
    const taken = this.taken;
    taken.refs.length = taken.runs.length = taken.runMaps.length = 0;
    try {
      let i = 0;
      while (i < npage) {
        const iova = first + BigInt(i) * PAGE_SIZE;
        const m = this.core.maps.containing(iova);
        if (!m) fail("EINVAL", `pin: ${hex(iova)} is in no DMA mapping`);
        if ((prot.read && !m.read) || (prot.write && !m.write)) fail("EPERM", `pin: the mapping at ${hex(m.iova)} is not ${prot.write ? "writable" : "readable"}`);
        const end = Math.min(npage, i + Number((m.last - iova + 1n) / PAGE_SIZE));
        this.pinIn(m, first, i, end, taken);
        i = end;
      }
    } catch (e) {
      this.undo(taken);
      throw e;
    }
    return copy ? this.hpas.slice(0, npage) : this.hpas;
  }

  /** Pages [i, end) of one mapping: references on records, new records for runs of unpinned pages. */
  private pinIn(m: DmaMapping, first: bigint, i: number, end: number, taken: Taken): void {
    const base = Number(first >> 12n);
    const halves = this.halves;
    let j = i;
    while (j < end) {
      const refs = this.records.refsOf(base + j);
      if (refs !== 0) {
        if (refs === MAX_REFS) fail("ENOMEM", `pin: page ${hex(first + BigInt(j) * PAGE_SIZE)} is pinned 2^32 - 1 times`);
        this.records.ref(base + j);
        const frame = this.records.frameOf(base + j);
        halves[2 * j] = (frame % 2 ** 20) * 4096;
        halves[2 * j + 1] = Math.floor(frame / 2 ** 20);
        taken.refs.push(base + j);
        j++;
        continue;
      }
      let k = j + 1;
      while (k < end && this.records.refsOf(base + k) === 0) k++;
      // Only a container with no IOMMU domain counts external pins (MAP_DMA counted the rest).
      const counted = this.core.domain === undefined;
      const budget = counted && m.process.memlockLimit !== U64_MAX ? Math.max(0, Number((m.process.memlockLimit - m.process.lockedBytes) / PAGE_SIZE)) : Infinity;
      // Per page the kernel pins first (EFAULT), then counts (ENOMEM): the page
      // past the budget is pinned too, so a hole there still says EFAULT.
      const over = k - j > budget;
      this.pinRun(m, base + j, j, over ? budget + 1 : k - j, taken);
      if (over) fail("ENOMEM", `pin: ${hex(first + BigInt(j + budget) * PAGE_SIZE)} would exceed the locked-memory limit (${hex(m.process.memlockLimit)})`);
      j = k;
    }
  }

  private pinRun(m: DmaMapping, page: number, at: number, n: number, taken: Taken): void {
    if (m.process.exited) fail("ENODEV", `pin: the process that mapped ${hex(m.iova)} has exited`);
    const iova = BigInt(page) << 12n;
    const access = abi.ACCESS_READ | (m.write ? abi.ACCESS_WRITE : 0);
    const st = this.core.host.plane.pinPages(m.process.pageTable.contextId, m.vaddr + (iova - m.iova), n, access, this.halves, at);
    const halves = this.halves;
    if (st !== abi.ST_OK) fail("EFAULT", `pin: [${hex(iova)}, +${n} pages) is not mapped ${m.write ? "writable " : ""}in the process`);
    for (let k = 0; k < n; k++) {
      const frame = halves[2 * (at + k)] / 4096 + halves[2 * (at + k) + 1] * 2 ** 20;
      this.records.add(page + k, frame);
    }
    taken.runs.push(page, n);
    taken.runMaps.push(m);
    this.perMapping.set(m, this.count(m) + n);
    if (this.core.domain === undefined) m.process.lockedBytes += BigInt(n) * PAGE_SIZE;
  }

  private undo(taken: Taken): void {
    for (const page of taken.refs) this.records.unref(page);
    const frames: number[] = [];
    for (let r = 0; r < taken.runMaps.length; r++) {
      const m = taken.runMaps[r], page = taken.runs[2 * r], n = taken.runs[2 * r + 1];
      for (let k = 0; k < n; k++) {
        frames.push(this.records.frameOf(page + k));
        this.records.unref(page + k);
      }
      this.uncount(m, n);
    }
    if (frames.length > 0) this.core.host.plane.unpinFrames(frames);
    taken.runMaps.length = 0;
  }

  /** n records of m went; they are un-counted where they were counted. */
  private uncount(m: DmaMapping, n: number): void {
    const left = this.count(m) - n;
    if (left === 0) this.perMapping.delete(m);
    else this.perMapping.set(m, left);
    if (this.core.domain === undefined) m.process.lockedBytes -= BigInt(n) * PAGE_SIZE;
  }

  /**
   * vfio_unpin_pages: one reference less on each page's record, the frame
   * released at the last. Never refuses: a page with no record is skipped,
   * and the first page in no mapping ends the loop (a WARN; the pages before
   * it stay unpinned). Returns the pages processed.
   */
  unpin(first: bigint, npage: number): number {
    live(this.core);
    const frames: number[] = [];
    const base = Number(first >> 12n);
    let i = 0;
    while (i < npage) {
      const iova = first + BigInt(i) * PAGE_SIZE;
      const m = this.core.maps.containing(iova);
      if (!m) {
        this.core.host.warn({ where: "vfio_iommu_type1_unpin_pages", reason: `${hex(iova)} is in no DMA mapping: ${i} of ${npage} pages processed` });
        break;
      }
      const end = Math.min(npage, i + Number((m.last - iova + 1n) / PAGE_SIZE));
      let released = 0;
      for (; i < end; i++) {
        if (this.records.refsOf(base + i) === 0) continue;
        const frame = this.records.frameOf(base + i);
        if (this.records.unref(base + i) !== 0) continue;
        frames.push(frame);
        released++;
      }
      if (released > 0) this.uncount(m, released);
    }
    if (frames.length > 0) this.core.host.plane.unpinFrames(frames);
    return i;
  }

  /**
   * vfio_dma_rw: copies between `data` and container memory by IOVA, through
   * each mapping's process page tables (nothing pinned). Every chunk is
   * checked before a byte moves: the mapping (EINVAL), its protection (EPERM:
   * a write needs WRITE, any access READ), the process (EPERM once it has
   * exited), its pages (EFAULT). The kernel copies chunk by chunk and leaves
   * earlier chunks done when a later one fails; here a refused call moves
   * nothing (docs/mediated-devices.md, Part B 2).
   */
  rw(first: bigint, data: Uint8Array, write: boolean): void {
    live(this.core);
    const chunks: { m: DmaMapping; vaddr: bigint; at: number; len: number }[] = [];
    let at = 0;
    while (at < data.length) {
      const iova = first + BigInt(at);
      const m = this.core.maps.containing(iova);
      if (!m) fail("EINVAL", `dma_rw: ${hex(iova)} is in no DMA mapping`);
      if (!m.read || (write && !m.write)) fail("EPERM", `dma_rw: the mapping at ${hex(m.iova)} is not ${write ? "writable" : "readable"}`);
      if (m.process.exited) fail("EPERM", `dma_rw: the process that mapped ${hex(m.iova)} has exited`);
      const room = m.last - iova + 1n;
      const len = room < BigInt(data.length - at) ? Number(room) : data.length - at;
      chunks.push({ m, vaddr: m.vaddr + (iova - m.iova), at, len });
      at += len;
    }
    for (const c of chunks) c.m.process.checkAccess(c.vaddr, c.len, write);
    for (const c of chunks) {
      if (write) c.m.process.write(c.vaddr, data.subarray(c.at, c.at + c.len));
      else data.set(c.m.process.read(c.vaddr, c.len), c.at);
    }
  }

  /**
   * The unmap walk reached a mapping that holds pin records: every
   * registered device's dma_unmap op is called with the mapping's range,
   * most recently opened first, and the walk starts again. `round` counts
   * the visits to this same mapping in a row: past UNMAP_RETRIES the kernel
   * BUGs (the container is then wedged).
   */
  notify(m: DmaMapping, round: number): void {
    const where = "vfio_dma_do_unmap";
    if (round > UNMAP_RETRIES) this.wedge(where, `pages of [${hex(m.iova)}, ${hex(m.last)}] stay pinned after ${UNMAP_RETRIES + 1} rounds of dma_unmap`);
    // An unmap called from a callback that must notify in turn takes the device-list lock again.
    if (this.notifying) this.wedge("vfio_notify_dma_unmap", "dma_unmap callback unmapped pinned pages: the device-list lock is taken twice (self-deadlock)");
    this.notifying = true;
    try {
      for (const d of this.core.devices) {
        const cb = d.dmaUnmap;
        if (!cb) continue;
        try {
          cb(m.iova, m.last - m.iova + 1n);
        } catch (e) {
          if (e instanceof KernelBug) throw e;
          // A kernel callback cannot fail: what it threw is only a warning.
          this.core.host.warn({ where: "vfio_notify_dma_unmap", reason: `dma_unmap of mdev ${d.uuid} threw: ${e instanceof Error ? e.message : String(e)}` });
        }
      }
    } finally {
      this.notifying = false;
    }
  }

  private wedge(where: string, message: string): never {
    const bug = new KernelBug(where, message);
    this.core.wedged = bug;
    throw bug;
  }

  /**
   * A mapping goes with records left (its groups left the container:
   * vfio_remove_dma WARNs). The records go; their frames stay pinned for
   * ever, as the kernel leaks them, and stay counted. Returns how many.
   */
  forget(m: DmaMapping): number {
    const n = this.count(m);
    if (n === 0) return 0;
    this.core.host.warn({ where: "vfio_remove_dma", reason: `${n} pinned pages of [${hex(m.iova)}, ${hex(m.last)}] leak: the mapping goes while a vendor holds them` });
    this.records.dropRange(Number(m.iova >> 12n), Number(m.last >> 12n));
    this.perMapping.delete(m);
    return n;
  }
}

/** pin/unpin/dma_rw's arguments (vfio_pin_pages order: npage, then E2BIG, then the wrap). */
export function pinRange(iova: Address, npage: number, what: string): bigint {
  const first = toU64(iova, "iova");
  if (first % PAGE_SIZE !== 0n) fail("EINVAL", `${what}: iova ${hex(first)} is not page aligned`);
  if (npage > PIN_PAGES_MAX) fail("E2BIG", `${what}: ${npage} pages is more than ${PIN_PAGES_MAX}`);
  if (first + BigInt(npage) * PAGE_SIZE - 1n > U64_MAX) fail("EOVERFLOW", `${what}: ${hex(first)} + ${npage} pages wraps past 2^64`);
  return first;
}
