// Guest memory at GPAs (c.gpa): reads and writes through the container's
// mappings (stage 2), as a guest, or a test acting as one, writes its
// stage-1 tables. EFAULT where nothing is mapped; EINVAL before SET_IOMMU.
import { toU64, toLength, hex, PAGE_SIZE, type Address } from "../addr.js";
import { fail } from "../errors.js";
import { bytes as checkBytes } from "../args.js";
import { requireIommu, type ContainerCore } from "./core.js";
import type { GuestPageTable, GuestPageTableOptions } from "./guest.js";

/** Guest memory as the guest sees it: GPAs, through the container's stage 2. */
export interface GuestMemory {
  read(gpa: Address, len: number): Uint8Array;
  write(gpa: Address, bytes: Uint8Array): void;
  readU64(gpa: Address): bigint;
  writeU64(gpa: Address, value: Address): void;
  /** A page table the guest builds in its memory (the builder, over stage 2). */
  pageTable(options: GuestPageTableOptions): GuestPageTable;
}

/** Each page of [gpa, gpa + len) through stage 2 (a probe: no IOTLB, no A/D); EFAULT where nothing is mapped. */
export function guestPieces(core: ContainerCore, gpa: Address, len: number): { hpa: bigint; offset: number; bytes: number }[] {
  const domain = requireIommu(core);
  const start = toU64(gpa, "gpa");
  const out: { hpa: bigint; offset: number; bytes: number }[] = [];
  for (let done = 0; done < len;) {
    const at = start + BigInt(done);
    const hpa = domain.pageTable.iovaToPhys(at);
    if (hpa === undefined) fail("EFAULT", `GPA ${hex(at)} is not mapped in the container`);
    const bytes = Math.min(len - done, Number(PAGE_SIZE - (at & (PAGE_SIZE - 1n))));
    out.push({ hpa, offset: done, bytes });
    done += bytes;
  }
  return out;
}

/** c.gpa; `pageTable` makes a guest table (nesting.ts) given the writer it zeroes new roots with. */
export function guestMemory(core: ContainerCore, pageTable: (options: GuestPageTableOptions, write: (gpa: bigint, bytes: Uint8Array) => void) => GuestPageTable): GuestMemory {
  const ram = core.host.ram;
  const read = (gpa: Address, len: number): Uint8Array => {
    const n = toLength(len, "gpa read length");
    // Every page is resolved before anything is allocated for the copy.
    const list = guestPieces(core, gpa, n);
    const out = new Uint8Array(n);
    for (const p of list) out.set(ram.read(p.hpa, p.bytes), p.offset);
    return out;
  };
  const write = (gpa: Address, bytes: Uint8Array): void => {
    const data = checkBytes(bytes, "gpa write bytes");
    for (const p of guestPieces(core, gpa, data.length)) ram.write(p.hpa, data.subarray(p.offset, p.offset + p.bytes));
  };
  return {
    read,
    write,
    pageTable: (options) => pageTable(options, write),
    readU64: (gpa) => new DataView(read(gpa, 8).buffer).getBigUint64(0, true),
    writeU64: (gpa, value) => {
      const b = new Uint8Array(8);
      new DataView(b.buffer).setBigUint64(0, toU64(value, "value"), true);
      write(gpa, b);
    },
  };
}
