// The facade side of the engine's fault ring: typed records, drained in order.
import * as abi from "./engine/abi.js";
import { accessFlags, reasonName, type AccessFlags, type FaultReason } from "./access.js";
import type { Engine } from "./engine/engine.js";

export interface FaultRecord {
  /** Domain (context) id the request went through. */
  domain: number;
  pasid: number;
  /** Requester id of the device, 0 for domain-level requests. */
  source: number;
  address: bigint;
  access: Required<AccessFlags>;
  reason: FaultReason;
  /** Page-table level the walk failed at (leaf = 0). */
  level: number;
  stage: 1 | 2;
}

export class FaultLog {
  private readonly ring: number;
  private readonly capacity: number;

  /** @internal */
  constructor(private readonly engine: Engine) {
    this.ring = engine.u32(abi.LAYOUT_FAULTS);
    this.capacity = engine.u32(abi.LAYOUT_FAULT_CAPACITY);
  }

  /** Records waiting to be drained. */
  get pending(): number {
    return (this.engine.u32(abi.FAULT_HEAD) - this.engine.u32(abi.FAULT_TAIL)) >>> 0;
  }

  /** Records dropped because the ring was full, since the host was created. */
  get overflow(): number { return this.engine.u32(abi.FAULT_OVERFLOW); }

  get size(): number { return this.capacity; }

  /** Every pending record, oldest first; the ring is then empty. */
  drain(): FaultRecord[] {
    const e = this.engine;
    const head = e.u32(abi.FAULT_HEAD);
    let tail = e.u32(abi.FAULT_TAIL);
    const out: FaultRecord[] = [];
    while (tail !== head) {
      const r = this.ring + (tail & (this.capacity - 1)) * abi.FAULT_SIZE;
      out.push({
        domain: e.data.getUint32(r + abi.FAULT_CONTEXT, true),
        pasid: e.data.getUint32(r + abi.FAULT_PASID, true),
        source: e.data.getUint32(r + abi.FAULT_SOURCE, true),
        address: e.data.getBigUint64(r + abi.FAULT_ADDR, true),
        access: accessFlags(e.data.getUint8(r + abi.FAULT_ACCESS)),
        reason: reasonName(e.data.getUint8(r + abi.FAULT_REASON)),
        level: e.data.getUint8(r + abi.FAULT_LEVEL),
        stage: e.data.getUint8(r + abi.FAULT_STAGE) === 2 ? 2 : 1,
      });
      tail = (tail + 1) >>> 0;
    }
    e.setU32(abi.FAULT_TAIL, tail);
    return out;
  }
}
