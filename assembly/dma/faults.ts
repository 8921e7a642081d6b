// The fault ring: a bounded queue of fault records in engine memory. When it
// is full a new record is dropped and counted (like VT-d's fault-overflow
// bit), so overflow is never silent. The facade drains it.
import { ctrl, faultRing, faultMask } from "../layout";
import {
  FAULT_SIZE, FAULT_ADDR, FAULT_CONTEXT, FAULT_PASID, FAULT_SOURCE, FAULT_ACCESS, FAULT_REASON,
  FAULT_LEVEL, FAULT_STAGE, FAULT_HEAD, FAULT_TAIL, FAULT_OVERFLOW,
} from "../abi";

export function recordFault(ctxId: u32, pasid: u32, sourceId: u32, addr: u64, access: u32, reason: u32, level: u32, stage: u32): void {
  const head = load<u32>(ctrl + FAULT_HEAD);
  const tail = load<u32>(ctrl + FAULT_TAIL);
  if (head - tail > faultMask) {
    store<u32>(ctrl + FAULT_OVERFLOW, load<u32>(ctrl + FAULT_OVERFLOW) + 1);
    return;
  }
  const r = faultRing + <usize>(head & faultMask) * FAULT_SIZE;
  store<u64>(r + FAULT_ADDR, addr);
  store<u32>(r + FAULT_CONTEXT, ctxId);
  store<u32>(r + FAULT_PASID, pasid);
  store<u32>(r + FAULT_SOURCE, sourceId);
  store<u8>(r + FAULT_ACCESS, <u8>access);
  store<u8>(r + FAULT_REASON, <u8>reason);
  store<u8>(r + FAULT_LEVEL, <u8>level);
  store<u8>(r + FAULT_STAGE, <u8>stage);
  store<u32>(ctrl + FAULT_HEAD, head + 1);
}
