// A page table a guest builds in its own memory: the io-pgtable operations
// (the engine's one builder) on a stage-1 table whose pages are guest pages,
// reached through the container's stage 2. The guest's allocator hands out
// the pages for new tables and takes back those an unmap empties.
import { toU64, hex, PAGE_SIZE, type Address } from "../addr.js";
import { protBits, type Prot } from "../access.js";
import { fail } from "../errors.js";
import { func, options } from "../args.js";
import { mapSpans, unmapSpan } from "../mapargs.js";
import * as abi from "../engine/abi.js";
import type { ResolvedFormat } from "../format.js";
import type { DataPlane } from "./plane.js";

export interface GuestPageTableOptions {
  format: "x86-64" | "arm64";
  /** x86-64: 48 or 57; arm64: 25..48. Default 48. */
  addressWidth?: number;
  /** The root table's GPA; default: a page from allocTable. */
  root?: Address;
  /** The guest's allocator of 4 KiB pages for tables: returns a GPA. */
  allocTable: () => Address;
  /** Takes back a table page an unmap emptied. */
  freeTable?: (gpa: bigint) => void;
}

/** A nested context over the container's stage 2 (the facade's Domain, or the twin's). */
export interface GuestTableContext {
  readonly id: number;
  readonly format: ResolvedFormat;
  readonly root: bigint;
  /** ENODEV once destroyed: the container destroys it when it lets go of its stage 2 (the last group left). */
  liveId(): number;
  destroy(): void;
}

/** The options' shape, before anything is asked of the guest's allocator. */
export function checkGuestTableOptions(given: GuestPageTableOptions): GuestPageTableOptions {
  if (given === undefined) fail("EINVAL", "a guest page table needs options { format, allocTable, freeTable? }");
  const o = options(given, "guest page table options", ["format", "addressWidth", "root", "allocTable", "freeTable"] as const) as GuestPageTableOptions;
  func(o.allocTable, "allocTable");
  if (o.freeTable !== undefined) func(o.freeTable, "freeTable");
  return o;
}

/** A page from the guest's allocator, 4 KiB aligned; one that is not goes back to freeTable. */
export function takeGuestPage(options: GuestPageTableOptions): bigint {
  // A value that is no GPA at all cannot be handed back.
  const gpa = toU64(options.allocTable(), "allocTable() result");
  if (gpa % PAGE_SIZE !== 0n) {
    options.freeTable?.(gpa);
    fail("EINVAL", `allocTable() result ${hex(gpa)} is not 4 KiB aligned`);
  }
  return gpa;
}

export class GuestPageTable {
  private destroyed = false;

  /** @internal */
  constructor(private readonly plane: DataPlane, private readonly ctx: GuestTableContext,
    private readonly options: GuestPageTableOptions, private readonly forget: () => void) {}

  get root(): bigint { return this.ctx.root; }

  private live(): number {
    if (this.destroyed) fail("ENODEV", "guest page table was destroyed");
    try {
      this.ctx.liveId();
    } catch {
      fail("ENODEV", "guest page table: the container let go of its stage 2 (its last group left), so guest memory is out of reach");
    }
    return this.ctx.id;
  }

  /** A page for a new table from the guest's allocator; the builder zeroes it only once the map is sure to go ahead. */
  private page(): bigint {
    return takeGuestPage(this.options);
  }

  /**
   * Maps [gva, gva + size) to [gpa, gpa + size) with the largest pages that fit. All or nothing.
   * A large page may take the place of tables an unmap left empty; those go back to freeTable.
   */
  map(gva: Address, gpa: Address, size: Address, prot: Prot = {}): void {
    const id = this.live();
    // prot first: with several faults in one request, the errno reported stays the one the twin reports.
    const bits = protBits(prot);
    const { input: { first: v, last }, output: { first: p } } = mapSpans(this.ctx.format, gva, gpa, size, "gva", "gpa");
    // Ask first: the builder says how many new tables it needs; the guest allocates them.
    let r = this.plane.guestMap(id, v, last, p, bits, []);
    if (r.status === abi.ERR_ENOMEM && r.needed > 0) {
      const pool: bigint[] = [];
      try {
        for (let i = 0; i < r.needed; i++) pool.push(this.page());
      } catch (e) {
        // The allocator gave out, or gave a bad page: the pages it did give go back, the table is unchanged.
        for (const gpaPage of pool) this.options.freeTable?.(gpaPage);
        throw e;
      }
      r = this.plane.guestMap(id, v, last, p, bits, pool);
      for (const gpaPage of pool.slice(r.used)) this.options.freeTable?.(gpaPage);
    }
    if (r.status === abi.ST_OK) {
      // Emptied tables a large leaf took the place of go back to the guest.
      for (const gpaPage of r.released) this.options.freeTable?.(gpaPage);
      return;
    }
    if (r.status === abi.ERR_EEXIST) fail("EEXIST", `map: [${hex(v)}, ${hex(last)}] overlaps an existing mapping`);
    if (r.status === abi.ERR_EFAULT) fail("EFAULT", "map: a table of the guest's, or a page offered for one, is not guest RAM that stage 2 lets the IOMMU read and write");
    if (r.status === abi.ERR_ENOMEM) fail("ENOMEM", "map: the range needs more tables than a guest table may have");
    fail("EINVAL", `map: a table on the path of [${hex(v)}, ${hex(last)}] is reached twice (aliased, in a cycle, or offered again as a new table)`);
  }

  /** Removes every leaf wholly inside [gva, gva + size); emptied tables go back to freeTable. Returns the bytes unmapped. */
  unmap(gva: Address, size: Address): bigint {
    const id = this.live();
    const { first: v, last } = unmapSpan(this.ctx.format, gva, size, "gva");
    const r = this.plane.guestUnmap(id, v, last);
    if (r.status === abi.ERR_EFAULT) fail("EFAULT", `unmap: a table on the path of [${hex(v)}, ${hex(last)}] is not guest RAM that stage 2 lets the IOMMU read and write`);
    for (const gpaPage of r.released) this.options.freeTable?.(gpaPage);
    return r.bytes;
  }

  /** Forgets the table (its pages stay in guest memory, the guest's to reuse). */
  destroy(): void {
    if (this.destroyed) return;
    this.ctx.destroy();
    this.forget();
    this.destroyed = true;
  }
}
