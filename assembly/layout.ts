// Where everything lives in the one linear memory. Engine state sits below
// physical RAM, so no HPA (always checked against ramSize) can reach it:
//
//   [static data][ctrl][contexts][pasid flush stamps][IOTLB][victims][fault ring]
//   [frame bitmap][table visit stamps][frame pins][undo log][staging][PASID node slots][PASID node marks]
//   [arena] ...64 KiB align... [RAM: HPA 0 .. ramSize)
import {
  CTRL_SIZE, CTX_SIZE, MAX_CONTEXTS, PASID_FLUSH_SLOTS, TLB_ENTRY_SIZE, FAULT_SIZE, STAGING_SIZE,
  LAYOUT_RAM_BASE, LAYOUT_RAM_SIZE, LAYOUT_STAGING, LAYOUT_STAGING_SIZE, LAYOUT_ARENA, LAYOUT_ARENA_SIZE,
  LAYOUT_FAULTS, LAYOUT_FAULT_CAPACITY, LAYOUT_TLB_SETS, LAYOUT_TLB_WAYS, LAYOUT_CONTEXTS, LAYOUT_TLB, UNDO_LOG_ENTRIES,
  PASID_NODES_MAX,
} from "./abi";

export let ctrl: usize = 0;
export let contexts: usize = 0;
export let pasidFlush: usize = 0;
export let tlb: usize = 0;
export let tlbVictim: usize = 0;
export let tlbSetsLog: u32 = 0;
export let tlbSetMask: u32 = 0;
export let tlbWays: u32 = 0;
export let tlbSetStride: usize = 0;
export let faultRing: usize = 0;
export let faultMask: u32 = 0;
export let frameBitmap: usize = 0;
export let tableStamps: usize = 0;
export let framePins: usize = 0;
export let undoLog: usize = 0;
export let frameCount: u32 = 0;
export let staging: usize = 0;
export let arena: usize = 0;
export let ramBase: usize = 0;
export let ramSize: u64 = 0;
// The PASID trees' node pool (assembly/pasid/xarray.ts), node 0 included.
export let xaSlots: usize = 0;
export let xaMarks: usize = 0;
export let xaNodeCount: u32 = 0;

@inline function alignUp(x: usize, a: usize): usize { return (x + a - 1) & ~(a - 1); }

// Lays the memory out and grows it once. Returns 0, or 1 when the sizes are
// out of range or the memory cannot grow (the facade says ENOMEM / EINVAL).
export function layoutInit(ramBytes: u64, setsLog: u32, ways: u32, faultLog: u32, arenaBytes: u32, pasidNodes: u32): u32 {
  if (ramBytes == 0 || (ramBytes & 0xfff) != 0 || ramBytes > 0xE0000000) return 1;
  if (setsLog < 4 || setsLog > 16 || ways < 1 || ways > 16 || faultLog < 4 || faultLog > 16) return 1;
  if (pasidNodes < 1 || pasidNodes > PASID_NODES_MAX) return 1;
  let p = alignUp(__heap_base, 64);
  ctrl = p; p += CTRL_SIZE;
  contexts = p; p += <usize>CTX_SIZE * MAX_CONTEXTS;
  pasidFlush = p; p += <usize>4 * PASID_FLUSH_SLOTS;
  tlbSetsLog = setsLog; tlbSetMask = (1 << setsLog) - 1; tlbWays = ways; tlbSetStride = <usize>ways * TLB_ENTRY_SIZE;
  tlb = p; p += (<usize>TLB_ENTRY_SIZE * ways) << setsLog;
  tlbVictim = p; p += alignUp(<usize>1 << setsLog, 64);
  faultRing = p; faultMask = (1 << faultLog) - 1; p += <usize>FAULT_SIZE << faultLog;
  frameCount = <u32>(ramBytes >> 12);
  frameBitmap = p; p += alignUp((<usize>frameCount + 63) >> 3, 64);
  tableStamps = p; p += alignUp(<usize>frameCount << 2, 64);
  framePins = p; p += alignUp(<usize>frameCount << 2, 64);
  undoLog = p; p += <usize>UNDO_LOG_ENTRIES * 16;
  staging = p; p += STAGING_SIZE;
  // 256-byte nodes on 256-byte boundaries: each is four whole cache lines.
  xaNodeCount = pasidNodes + 1;
  xaSlots = alignUp(p, 256); p = xaSlots + (<usize>xaNodeCount << 8);
  xaMarks = p; p += <usize>xaNodeCount << 4;
  arena = alignUp(p, 4096); p = arena + alignUp(<usize>arenaBytes, 4096);
  ramBase = alignUp(p, 65536);
  ramSize = ramBytes;
  const total: u64 = <u64>ramBase + ramBytes;
  if (total > 0xFFFF0000) return 1;
  const needPages = <i32>((total + 65535) >> 16);
  const have = memory.size();
  if (needPages > have && memory.grow(needPages - have) < 0) return 1;
  // Engine state starts zeroed (fresh memory), RAM too.
  store<u32>(ctrl + LAYOUT_RAM_BASE, <u32>ramBase);
  store<u64>(ctrl + LAYOUT_RAM_SIZE, ramBytes);
  store<u32>(ctrl + LAYOUT_STAGING, <u32>staging);
  store<u32>(ctrl + LAYOUT_STAGING_SIZE, STAGING_SIZE);
  store<u32>(ctrl + LAYOUT_ARENA, <u32>arena);
  store<u32>(ctrl + LAYOUT_ARENA_SIZE, <u32>alignUp(<usize>arenaBytes, 4096));
  store<u32>(ctrl + LAYOUT_FAULTS, <u32>faultRing);
  store<u32>(ctrl + LAYOUT_FAULT_CAPACITY, 1 << faultLog);
  store<u32>(ctrl + LAYOUT_TLB_SETS, 1 << setsLog);
  store<u32>(ctrl + LAYOUT_TLB_WAYS, ways);
  store<u32>(ctrl + LAYOUT_CONTEXTS, <u32>contexts);
  store<u32>(ctrl + LAYOUT_TLB, <u32>tlb);
  return 0;
}
