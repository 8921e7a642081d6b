// A served VM's GPU page tables as its backend reaches them (XenGT's PPGTT
// shadow): read and written through the backend's foreign mapping of the
// VM's memory (privcmd, allowed while the toolstack lets it serve that VM),
// and write-tracked through the hypervisor (the page made p2m_ioreq_server
// for the backend: the VM's stores to it trap to the shadow). Once the VM is
// unserved or destroyed, nothing here works any more (EPERM).
import { fail } from "../errors.js";
import type { GuestTables } from "../shadow/mapper.js";
import type { XenCore } from "./backend.js";
import type { WriteSink } from "./track.js";
import type { Vm } from "./vm.js";

export class XenGuestTables implements GuestTables {
  /** The shadow's trapWrite, once the shadow is made. */
  sink: WriteSink | undefined;

  constructor(private readonly core: XenCore, private readonly backend: Vm, private readonly vm: Vm) {}

  read(gpa: bigint, length: number): Uint8Array {
    this.check(gpa, length, "read");
    return this.vm.p2m.read(gpa, length);
  }

  write(gpa: bigint, bytes: Uint8Array): void {
    this.check(gpa, bytes.length, "write");
    this.vm.p2m.write(gpa, bytes);
  }

  protect(gfn: bigint): void {
    this.check(gfn << 12n, 4096, "track");
    this.vm.tracks.add(Number(gfn), this.sink!, this.backend);
  }

  unprotect(gfn: bigint): void {
    this.vm.tracks.remove(Number(gfn), this.sink!);
  }

  private check(gpa: bigint, length: number, what: string): void {
    if (!this.vm.live || !this.core.isServed(this.backend, this.vm)) fail("EPERM", `${what}: backend ${this.backend.id} does not serve VM ${this.vm.id}`);
    if (gpa + BigInt(length) > BigInt(this.vm.gfnCount) * 4096n) fail("EINVAL", `${what}: GPA ${gpa} is beyond VM ${this.vm.id}'s memory`);
  }
}
