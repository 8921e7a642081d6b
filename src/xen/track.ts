// Write tracking of a VM's pages, as Xen gives it to an ioreq server (XenGT's
// backend): a tracked page's p2m type is p2m_ioreq_server, so the VM's stores
// to it trap and are handed to the server, which emulates them (here: the
// shadow of that page's GPU page table updates itself and writes the guest's
// memory). The VM's stores are 8-byte entries to the server; a store that
// covers part of an entry is merged with the entry's other bytes first, so
// the server always sees whole entries. Untracked pages are written directly.
//
// One ioreq server per VM at a time (Xen's p2m_set_ioreq_server: EBUSY for
// a second one): the first page tracked binds the VM to that backend, the
// last one untracked lets it go.
//
// A store the server cannot take (a shadow with no frame for a new table)
// still lands: a guest's store never fails. That server's entry is made not
// present first, so its GPU faults at its own MMU there until the guest
// writes the entry again (GVT logs the error and leaves its shadow as it was;
// the model never keeps a stale translation).
import { fail, IommuError } from "../errors.js";

/** An ioreq server's handler: emulates the VM's 8-byte store of value at gpa (writing guest memory itself); false when it no longer tracks that page. */
export type WriteSink = (gpa: bigint, value: bigint) => boolean;

/** The VM's memory, written directly (no tracking): its p2m. */
interface Memory {
  read(gpa: bigint, len: number): Uint8Array;
  write(gpa: bigint, bytes: Uint8Array): void;
}

const ENTRY = 8;
const PAGE = 4096;
/** One entry being merged (little-endian, as the guest's memory holds it). */
const SCRATCH = new Uint8Array(ENTRY);
const SCRATCH_U64 = new BigUint64Array(SCRATCH.buffer);

export class WriteTracks {
  private readonly pages = new Map<number, Set<WriteSink>>();
  /** The backend (ioreq server) whose sinks track pages now. */
  private server: { readonly id: number } | undefined;

  constructor(private readonly memory: Memory) {}

  /** Pages tracked now. */
  get size(): number { return this.pages.size; }

  /** Stores to page gfn go to sink too, one of server's (EBUSY while another server tracks pages of this VM). */
  add(gfn: number, sink: WriteSink, server: { readonly id: number }): void {
    if (this.server !== undefined && this.server !== server) fail("EBUSY", `track: VM pages are tracked by backend ${this.server.id} (one ioreq server per VM)`);
    this.server = server;
    let set = this.pages.get(gfn);
    if (!set) this.pages.set(gfn, set = new Set());
    set.add(sink);
  }

  remove(gfn: number, sink: WriteSink): void {
    const set = this.pages.get(gfn);
    if (set?.delete(sink) && set.size === 0) this.pages.delete(gfn);
    if (this.pages.size === 0) this.server = undefined;
  }

  /** Every page stops being tracked (the VM is gone). */
  clear(): void {
    this.pages.clear();
    this.server = undefined;
  }

  /** The VM stores bytes at gpa (checked to be within its memory): tracked entries through their sinks, the rest directly. */
  write(gpa: bigint, bytes: Uint8Array): void {
    if (this.pages.size === 0) { this.memory.write(gpa, bytes); return; }
    // A VM's memory lies far below 2^53: offsets are plain numbers.
    const base = Number(gpa);
    let done = 0;
    while (done < bytes.length) {
      const at = base + done;
      const sinks = this.pages.get(Math.floor(at / PAGE));
      if (sinks === undefined) {
        const n = Math.min(PAGE - (at % PAGE), bytes.length - done);
        this.memory.write(BigInt(at), bytes.subarray(done, done + n));
        done += n;
        continue;
      }
      // One entry at a time: a sink may track or untrack pages (this one too).
      const skip = at % ENTRY;
      const entry = BigInt(at - skip);
      const n = Math.min(ENTRY - skip, bytes.length - done);
      if (n < ENTRY) SCRATCH.set(this.memory.read(entry, ENTRY));
      SCRATCH.set(n === bytes.length ? bytes : bytes.subarray(done, done + n), skip);
      const value = SCRATCH_U64[0];
      // A sink that took the store wrote it to guest memory itself.
      let landed = false;
      if (sinks.size === 1) {
        for (const sink of sinks) landed = store(sink, entry, value);
      } else {
        for (const sink of [...sinks]) landed = store(sink, entry, value) || landed;
      }
      if (!landed) {
        SCRATCH_U64[0] = value;
        this.memory.write(entry, SCRATCH);
      }
      done += n;
    }
  }
}

/**
 * Hands the store to one sink; one that cannot take it gets the entry not
 * present instead (which needs nothing new). Whether guest memory now holds
 * the value.
 */
function store(sink: WriteSink, gpa: bigint, value: bigint): boolean {
  try {
    return sink(gpa, value);
  } catch (e) {
    if (!(e instanceof IommuError)) throw e;
    sink(gpa, value & ~1n);
    return false;
  }
}
