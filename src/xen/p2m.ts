// A VM's physical-to-machine map: GFN → MFN, one stage-2 context per VM in
// the hypervisor's own frames (GFN << 12 → MFN << 12, one 4 KiB leaf per
// frame, as the frames are allocated one by one and need not be contiguous).
// The context is the only record of the VM's frames: lookups walk it. Its
// table frames are never mapped into any VM's view or IOMMU table (except by
// the exposeMfn baseline's 1:1 table over all RAM, which is the point of it).
import { fail } from "../errors.js";
import * as abi from "../engine/abi.js";
import type { XenContext, XenEnv } from "./env.js";

export const PAGE = 4096;
const ZERO_PAGE = new Uint8Array(PAGE);
export const RW = abi.PERM_R | abi.PERM_W | abi.PERM_U;
export const RO = abi.PERM_R | abi.PERM_U;

export class P2m {
  private constructor(private readonly env: XenEnv<unknown>, readonly context: XenContext, readonly gfnCount: number) {}

  /** gfnCount fresh zeroed frames behind GFNs 0..gfnCount-1; ENOMEM (nothing kept) when RAM or table frames run out. */
  static create(env: XenEnv<unknown>, gfnCount: number): P2m {
    const context = env.createContext();
    const taken: bigint[] = [];
    const undo = (why: string): never => {
      if (taken.length > 0) env.plane.unmapRange(context.id, 0n, BigInt(taken.length) * 4096n - 1n);
      for (const mfn of taken) env.ram.freeFrames(mfn, 1);
      context.destroy();
      return fail("ENOMEM", why);
    };
    for (let gfn = 0; gfn < gfnCount; gfn++) {
      let hpa: bigint;
      try {
        hpa = env.ram.allocFrames(1);
      } catch {
        return undo(`no free frame for GFN ${gfn} of ${gfnCount}`);
      }
      env.ram.write(hpa, ZERO_PAGE);
      const gpa = BigInt(gfn) * 4096n;
      if (env.plane.mapRange(context.id, gpa, gpa + 4095n, hpa, RW) !== abi.ST_OK) {
        env.ram.freeFrames(hpa, 1);
        return undo(`no frame left for the p2m's tables at GFN ${gfn}`);
      }
      taken.push(hpa);
    }
    return new P2m(env, context, gfnCount);
  }

  /** The HPA of the frame behind gfn (which the caller checked is below gfnCount). */
  mfnAddress(gfn: number): bigint {
    const hpa = this.context.pageTable.iovaToPhys(BigInt(gfn) * 4096n);
    if (hpa === undefined) fail("EFAULT", `p2m: GFN ${gfn} has no frame`);
    return hpa;
  }

  /** The VM's own view of its RAM: bytes at gpa (within its memory, checked by the caller). */
  read(gpa: bigint, len: number): Uint8Array {
    const out = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const at = gpa + BigInt(done);
      const off = Number(at % 4096n);
      const n = Math.min(PAGE - off, len - done);
      out.set(this.env.ram.read(this.mfnAddress(Number(at / 4096n)) + BigInt(off), n), done);
      done += n;
    }
    return out;
  }

  write(gpa: bigint, bytes: Uint8Array): void {
    let done = 0;
    while (done < bytes.length) {
      const at = gpa + BigInt(done);
      const off = Number(at % 4096n);
      const n = Math.min(PAGE - off, bytes.length - done);
      this.env.ram.write(this.mfnAddress(Number(at / 4096n)) + BigInt(off), bytes.subarray(done, done + n));
      done += n;
    }
  }

  /** Frees every frame and the p2m's tables (the caller revoked every mapping of them first). */
  destroy(): void {
    const frames: bigint[] = [];
    for (let gfn = 0; gfn < this.gfnCount; gfn++) frames.push(this.mfnAddress(gfn));
    this.env.plane.unmapRange(this.context.id, 0n, BigInt(this.gfnCount) * 4096n - 1n);
    this.env.plane.flushRange(this.context.id, 0n, BigInt(this.gfnCount) * 4096n - 1n);
    for (const hpa of frames) this.env.ram.freeFrames(hpa, 1);
    this.context.destroy();
  }
}
