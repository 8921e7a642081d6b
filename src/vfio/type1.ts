// type1's MAP_DMA and UNMAP_DMA: the argument checks in the kernel's order
// (docs/vfio-type1.md, v6.18), the bisect rule, pinning through the
// process's page tables into the domain, iommufd's IOVA allocation and
// allowed ranges.
import { show, bool, isInstance, list as checkList, options } from "../args.js";
import { toU64, hex, PAGE_SIZE, U64_MAX, type Address } from "../addr.js";
import { fail } from "../errors.js";
import * as abi from "../engine/abi.js";
import { Process } from "./process.js";
import { overlaps, subtractRanges } from "./reserved.js";
import { allReservedHoles, withoutDoorbell } from "./attach.js";
import { MAX_DIRTY_BITMAP_BYTES, minPageSize, requireDriver, live, type ContainerCore, type ContainerDomain } from "./core.js";
import type { ExternalPins } from "./external.js";
import type { DmaMapping } from "./mappings.js";
import type { DirtyTracking } from "./dirty.js";

export interface MapDmaRequest {
  vaddr: Address;
  /** Where the device sees it; omitted: the container picks one (iommufd's IOAS_MAP without FIXED_IOVA). */
  iova?: Address;
  size: Address;
  read?: boolean;
  write?: boolean;
  /** Whose memory; default the process the container was opened by. */
  process?: Process;
}

export type UnmapDmaRequest = { iova: Address; size: Address } | { all: true };

/** UNMAP_DMA with VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: the pages of the range written since the last report, read as it is unmapped. */
export interface UnmapDirtyRequest { iova: Address; size: Address; dirtyBitmap: { pgsize: Address } }

/** What an unmap with dirtyBitmap returns: the bytes unmapped, and one bit per pgsize page of [iova, iova + size). */
export interface UnmapDirtyResult { size: bigint; bitmap: Uint8Array }

export class Type1Mappings {
  constructor(private readonly core: ContainerCore, private readonly dirty: () => DirtyTracking, private readonly external: ExternalPins) {}

  /** VFIO_IOMMU_MAP_DMA. Returns the IOVA (the one asked for, or the one picked). All or nothing. */
  map(given: MapDmaRequest): bigint {
    const core = this.core;
    const domain = requireDriver(core);
    const request = options(given, "mapDma request", ["vaddr", "iova", "size", "read", "write", "process"] as const) as MapDmaRequest;
    const size = toU64(request.size, "size");
    const vaddr = toU64(request.vaddr, "vaddr");
    const fixed = request.iova === undefined ? undefined : toU64(request.iova, "iova");
    if (size === 0n) fail("EINVAL", "map: size is zero");
    if (vaddr + size - 1n > U64_MAX) fail("EOVERFLOW", `map: vaddr ${hex(vaddr)} + ${hex(size)} wraps past 2^64`);
    if (fixed !== undefined && fixed + size - 1n > U64_MAX) fail("EOVERFLOW", `map: iova ${hex(fixed)} + ${hex(size)} wraps past 2^64`);
    const read = bool(request.read, "map read", false), write = bool(request.write, "map write", false);
    if (!read && !write) fail("EINVAL", "map: neither read nor write");
    const min = minPageSize(core);
    if (size % min !== 0n || vaddr % min !== 0n || (fixed !== undefined && fixed % min !== 0n)) {
      fail("EINVAL", `map: iova, vaddr and size must be multiples of ${hex(min)}`);
    }
    const iova = fixed ?? this.pickIova(size);
    const last = iova + size - 1n;
    if (core.maps.overlaps(iova, last)) fail("EEXIST", `map: [${hex(iova)}, ${hex(last)}] overlaps an existing mapping`);
    if (core.maps.size >= core.host.dmaEntryLimit) fail("ENOSPC", `map: all ${core.host.dmaEntryLimit} DMA entries are in use`);
    // With no IOMMU domain (emulated groups only) the list is empty and every IOVA is valid.
    if (core.iovas.length > 0 && !core.iovas.some((r) => iova >= r.start && last <= r.end)) fail("EINVAL", `map: [${hex(iova)}, ${hex(last)}] is not inside one valid IOVA range`);
    const process = request.process ?? core.process;
    if (!process) fail("EINVAL", "map: no process to pin from (open the container with one, or pass process)");
    if (!isInstance(process, Process)) fail("EINVAL", `map: process must be a Process (host.createProcess()), got ${show(process)}`);
    if (process.exited) fail("EFAULT", "map: the process has exited; its memory cannot be pinned");
    if (!domain) {
      // Nothing to pin into: the range is only recorded (vaddr unchecked, nothing
      // counted); a vendor pins its pages later, an IOMMU group's attach replays it.
      core.maps.insert({ iova, last, vaddr, process, read, write });
      return iova;
    }
    if (process.lockedBytes + size > process.memlockLimit) {
      fail("ENOMEM", `map: pinning ${hex(size)} bytes would exceed the locked-memory limit (${hex(process.memlockLimit)})`);
    }
    const access = abi.ACCESS_READ | (write ? abi.ACCESS_WRITE : 0);
    const prot = (read ? abi.PERM_R : 0) | (write ? abi.PERM_W : 0) | abi.PERM_U;
    const st = core.host.plane.pinMap(process.pageTable.contextId, domain.id, vaddr, vaddr + size - 1n, iova, access, prot);
    if (st === abi.ERR_EFAULT) fail("EFAULT", `map: [${hex(vaddr)}, +${hex(size)}) is not mapped ${write ? "writable " : ""}in the process`);
    if (st === abi.ERR_ENOMEM) fail("ENOMEM", "map: not enough free frames for the IOMMU page tables");
    if (st !== abi.ST_OK) fail("EINVAL", `map: the IOMMU page table refused the mapping (status ${st})`);
    process.lockedBytes += size;
    core.maps.insert({ iova, last, vaddr, process, read, write });
    return iova;
  }

  /**
   * VFIO_IOMMU_UNMAP_DMA (v2). Returns the bytes unmapped; with dirtyBitmap
   * (GET_DIRTY_BITMAP), also the pages of the range written since the last
   * report, read (and cleared) before anything is unmapped, so none is lost.
   */
  unmap(given: UnmapDmaRequest | UnmapDirtyRequest): bigint | UnmapDirtyResult {
    const domain = requireDriver(this.core);
    if (given === undefined) fail("EINVAL", "unmap: give { iova, size } or { all: true }");
    const request = options(given, "unmapDma request", ["iova", "size", "all", "dirtyBitmap"] as const) as { iova?: Address; size?: Address; all?: unknown; dirtyBitmap?: unknown };
    const wantDirty = request.dirtyBitmap !== undefined;
    // The ioctl refuses the flag with ALL before anything else (vfio_iommu_type1_unmap_dma).
    if (wantDirty && request.all !== undefined) fail("EINVAL", "unmap: dirtyBitmap cannot be asked with all");
    let first: bigint, last: bigint;
    if (request.all !== undefined) {
      if (request.all !== true) fail("EINVAL", `unmap: all must be true, got ${show(request.all)}`);
      const r = request;
      if ((r.iova !== undefined && toU64(r.iova, "iova") !== 0n) || (r.size !== undefined && toU64(r.size, "size") !== 0n)) {
        fail("EINVAL", "unmap: with all, iova and size must be 0");
      }
      first = 0n; last = U64_MAX;
    } else {
      const iova = toU64(request.iova as Address, "iova"), size = toU64(request.size as Address, "size");
      // verify_bitmap_size, before the range checks: some pages, and a bitmap of at most 256 MiB.
      const pgsize = wantDirty ? toU64(options(request.dirtyBitmap, "dirtyBitmap", ["pgsize"] as const).pgsize as Address, "unmap dirtyBitmap.pgsize") : 0n;
      if (wantDirty) {
        const pages = pgsize === 0n ? 0n : size / pgsize;
        if (pages === 0n || (pages + 7n) / 8n > MAX_DIRTY_BITMAP_BYTES) fail("EINVAL", `unmap: a dirty bitmap of ${hex(size)} bytes in ${hex(pgsize)} pages is empty or over 256 MiB`);
      }
      const min = minPageSize(this.core);
      if (iova % min !== 0n) fail("EINVAL", `unmap: iova ${hex(iova)} is not a multiple of ${hex(min)}`);
      if (size === 0n || size % min !== 0n) fail("EINVAL", `unmap: size ${hex(size)} is zero or not a multiple of ${hex(min)}`);
      if (iova + size - 1n > U64_MAX) fail("EOVERFLOW", `unmap: ${hex(iova)} + ${hex(size)} wraps past 2^64`);
      first = iova; last = iova + size - 1n;
      // vfio_dma_do_unmap: after the range checks, before the bisect checks.
      if (wantDirty) this.dirty().checkPgsize(pgsize, "unmap");
      this.checkNoBisect(first, last, "unmap");
    }
    // Read before any mapping goes: a page written up to this call is in the bitmap.
    const bitmap = wantDirty && domain ? this.dirty().mappedDirty(domain, first, last) : undefined;
    const bytes = this.removeRange(first, last, request.all !== undefined);
    return bitmap ? { size: bytes, bitmap } : bytes;
  }

  /**
   * vfio_dma_do_unmap's walk, lowest IOVA first: a mapping a vendor still
   * holds pins in is not removed; every registered device is told to let go
   * (its dma_unmap), and the walk starts again, bisect checks included, the
   * bytes unmapped so far kept. The same mapping visited again and again
   * wedges the container (ExternalPins.notify).
   */
  private removeRange(first: bigint, last: bigint, all: boolean): bigint {
    let bytes = 0n;
    let stuck: DmaMapping | undefined;
    let round = 0;
    again: for (;;) {
      for (const m of this.core.maps.inside(first, last)) {
        if (this.external.count(m) > 0) {
          round = m === stuck ? round + 1 : 0;
          stuck = m;
          this.external.notify(m, round);
          // The callbacks ran unlocked: the walk starts again, the range checked anew (unmap checked it first).
          if (!all) this.checkNoBisect(first, last, "unmap");
          continue again;
        }
        bytes += this.remove(this.core.domain, m);
      }
      return bytes;
    }
  }

  /** The range may not cut a mapping: the one holding its first byte starts there, the one holding its last byte ends there. */
  checkNoBisect(first: bigint, last: bigint, what: string): void {
    const head = this.core.maps.containing(first);
    if (head && head.iova !== first) fail("EINVAL", `${what}: [${hex(first)}, ${hex(last)}] would split the mapping at ${hex(head.iova)}`);
    const tail = this.core.maps.containing(last);
    if (tail && tail.last !== last) fail("EINVAL", `${what}: [${hex(first)}, ${hex(last)}] would split the mapping at ${hex(tail.iova)}`);
  }

  /**
   * Unpins and unmaps one mapping; no device may use its range afterwards.
   * Pin records still there leak (ExternalPins.forget) and stay counted.
   * Returns its size.
   */
  remove(domain: ContainerDomain | undefined, m: DmaMapping): bigint {
    const size = m.last - m.iova + 1n;
    const leaked = BigInt(this.external.forget(m)) * PAGE_SIZE;
    if (domain) {
      this.core.host.plane.unpinUnmap(domain.id, m.iova, m.last);
      domain.invalidate({ iova: m.iova, npages: size / PAGE_SIZE });
      m.process.lockedBytes -= size - leaked;
    }
    this.core.maps.remove(m);
    return size;
  }

  /** Every mapping goes (the container lets go of its driver). */
  removeAll(): void {
    for (const m of [...this.core.maps.all()]) this.remove(this.core.domain, m);
  }

  /**
   * The first IOMMU group joined a container that had none (vfio_iommu_replay):
   * every mapping is pinned and mapped into the new domain; pages a vendor
   * has pinned already are not counted again. All or nothing (EFAULT,
   * ENOMEM, nothing pinned, nothing counted).
   */
  replay(domain: ContainerDomain): void {
    const plane = this.core.host.plane;
    const done: DmaMapping[] = [];
    try {
      for (const m of this.core.maps.all()) {
        const size = m.last - m.iova + 1n;
        // The pinned pages were counted when pinned; they move to MAP_DMA's count.
        const more = size - BigInt(this.external.count(m)) * PAGE_SIZE;
        if (m.process.exited) fail("EFAULT", `attach: the process that mapped ${hex(m.iova)} has exited`);
        if (m.process.lockedBytes + more > m.process.memlockLimit) fail("ENOMEM", `attach: replaying [${hex(m.iova)}, ${hex(m.last)}] would exceed the locked-memory limit`);
        const access = abi.ACCESS_READ | (m.write ? abi.ACCESS_WRITE : 0);
        const prot = (m.read ? abi.PERM_R : 0) | (m.write ? abi.PERM_W : 0) | abi.PERM_U;
        const st = plane.pinMap(m.process.pageTable.contextId, domain.id, m.vaddr, m.vaddr + size - 1n, m.iova, access, prot);
        if (st === abi.ERR_EFAULT) fail("EFAULT", `attach: [${hex(m.vaddr)}, +${hex(size)}) is not mapped ${m.write ? "writable " : ""}in the process`);
        if (st !== abi.ST_OK) fail("ENOMEM", `attach: the IOMMU page table could not map [${hex(m.iova)}, ${hex(m.last)}] (status ${st})`);
        m.process.lockedBytes += more;
        done.push(m);
      }
    } catch (e) {
      this.unreplay(domain, done);
      throw e;
    }
  }

  /**
   * The last IOMMU group left while emulated ones stay
   * (vfio_iommu_unmap_unpin_reaccount): the mappings are unmapped and
   * unpinned from the domain but kept; what stays counted is what vendors pin.
   */
  unreplay(domain: ContainerDomain, maps: readonly DmaMapping[] = this.core.maps.all()): void {
    for (const m of maps) {
      const size = m.last - m.iova + 1n;
      this.core.host.plane.unpinUnmap(domain.id, m.iova, m.last);
      domain.invalidate({ iova: m.iova, npages: size / PAGE_SIZE });
      m.process.lockedBytes -= size - BigInt(this.external.count(m)) * PAGE_SIZE;
    }
  }

  /**
   * iommufd's IOVA allocation: aligned to the smallest power of two holding
   * the size, never 0, inside the allowed ranges when set, else the valid
   * list, clear of every mapping; ENOSPC when nothing fits.
   */
  private pickIova(size: bigint): bigint {
    const core = this.core;
    let align = PAGE_SIZE;
    while (align < size && align < 1n << 62n) align <<= 1n;
    const taken = core.maps.all().map((m) => ({ start: m.iova, end: m.last }));
    // No domain (emulated groups only): no IOVA list, the aperture.
    const valid = core.iovas.length > 0 ? core.iovas : [core.host.topology.preset.aperture];
    const space = core.allowed ? withoutDoorbell(core, subtractRanges(core.allowed, allReservedHoles(core))) : valid;
    for (const hole of subtractRanges(space, taken)) {
      let at = (hole.start + align - 1n) & ~(align - 1n);
      if (at === 0n) at = align;
      if (at >= hole.start && at + size - 1n <= hole.end) return at;
    }
    fail("ENOSPC", `map: no free ${hex(size)}-byte IOVA range`);
  }

  /**
   * iommufd's IOAS_ALLOW_IOVAS: restricts where IOVAs are picked. Ranges need
   * start < end and may not overlap each other (EINVAL) or a reserved region
   * of an attached group (EADDRINUSE); the old list stays on error.
   */
  allowIovas(ranges: readonly { start: Address; end: Address }[]): void {
    live(this.core);
    const list = checkList(ranges, "allowed IOVA ranges").map((given, i) => {
      const r = options(given, `range ${i}`, ["start", "end"] as const) as { start: Address; end: Address };
      const start = toU64(r.start, `range ${i} start`), end = toU64(r.end, `range ${i} end`);
      if (start >= end) fail("EINVAL", `range ${i}: start ${hex(start)} is not below end ${hex(end)}`);
      return { start, end };
    }).sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    for (let i = 1; i < list.length; i++) {
      if (list[i].start <= list[i - 1].end) fail("EINVAL", `allowed ranges overlap at ${hex(list[i].start)}`);
    }
    for (const hole of allReservedHoles(this.core)) {
      if (list.some((a) => overlaps(a, hole))) fail("EADDRINUSE", `an allowed range overlaps reserved [${hex(hole.start)}, ${hex(hole.end)}]`);
    }
    this.core.allowed = list.length > 0 ? list : undefined;
  }
}
