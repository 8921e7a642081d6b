// The twin's fault ring: a bounded queue of fault records. A record that does
// not fit is dropped and counted, as in the engine's ring.
import type { FaultRecord } from "../../src/index.js";
import { accessFlags, reasonName } from "./args.js";

export class NaiveFaultLog {
  private queue: FaultRecord[] = [];
  private dropped = 0;

  constructor(readonly size: number) {}

  /** Called by translation and DMA. */
  record(domain: number, pasid: number, source: number, address: bigint, access: number, reason: number, level: number, stage: 1 | 2 = 1): void {
    if (this.queue.length >= this.size) { this.dropped++; return; }
    this.queue.push({
      domain, pasid, source, address,
      access: accessFlags(access & 0xff),
      reason: reasonName(reason & 0xff),
      level: level & 0xff,
      stage,
    });
  }

  get pending(): number { return this.queue.length; }

  get overflow(): number { return this.dropped; }

  drain(): FaultRecord[] {
    const out = this.queue;
    this.queue = [];
    return out;
  }
}

