// The engine's host and the twin's, driven in lock step by the same
// operations: after every step the results and the IOTLB counters must be
// equal, and at the end the fault records and the RAM image. An operation
// { t: "again", shift } repeats the last translation or DMA `shift` bytes
// on, which the facade's hit memo mostly replays without calling the engine
// (src/hitmemo.ts). What the engine's results met (a fault's reason:stage,
// or "translated") goes into `seen`, for the tests' coverage floors.
import { expect } from "vitest";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

export interface LockstepOptions<Op> {
  /** The last repeatable operation again, `shift` bytes on. */
  again(last: Op, shift: number): Op;
  /** Whether an operation is a translation or DMA that "again" may repeat. */
  repeatable(op: Op): boolean;
  seen: Set<string>;
  ramSize: number;
}

const show = (op: unknown): string => JSON.stringify(op, (_, v) => (typeof v === "bigint" ? `0x${v.toString(16)}` : v));

export function lockstep<Op extends { t: string }, S extends { host: Any }>(engine: S, twin: S, ops: readonly Op[], apply: (side: S, op: Op) => unknown, o: LockstepOptions<Op>): void {
  let last: Op | undefined;
  for (const [n, given] of ops.entries()) {
    let op = given;
    if (op.t === "again") {
      if (!last) continue;
      op = o.again(last, (given as unknown as { shift: number }).shift);
    }
    if (o.repeatable(op)) last = op;
    const a = apply(engine, op), b = apply(twin, op);
    expect(a, `step ${n} ${show(op)}`).toEqual(b);
    // A replayed hit is counted as the twin counts its hit.
    expect(engine.host.iotlb.stats(), `step ${n}: counters`).toEqual(twin.host.iotlb.stats());
    const f = (a as Any)?.fault;
    if (f) o.seen.add(`${f.reason}:${f.stage}`);
    else if ((a as Any)?.hpa !== undefined) o.seen.add("translated");
  }
  expect(engine.host.iotlb.stats()).toEqual(twin.host.iotlb.stats());
  expect(engine.host.faults.drain()).toEqual(twin.host.faults.drain());
  expect(Buffer.from(engine.host.ram.view(0n, o.ramSize)).equals(Buffer.from(twin.host.ram.view(0n, o.ramSize)))).toBe(true);
}
