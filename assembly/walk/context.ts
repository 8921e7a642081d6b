// Contexts: a page-table root with its format and configuration. A domain is
// a context that the IOTLB tags entries with; a builder-only page table is a
// context too. Slot 0 is never handed out, so 0 means "none".
import { contexts } from "../layout";
import { CTX_SIZE, CTX_ROOT, CTX_RSVD_MASK, CTX_FORMAT, CTX_LEVELS, CTX_FLAGS, CTX_TLB_SIZES, CTX_PGSIZES, CTX_FLUSH_EPOCH, CTX_PA_WIDTH, CTX_INPUT_BITS, CTX_S2_ID, CTX_NEST_EPOCH, CTX_MSI_START, CTX_MSI_END, CTX_LIVE, CTX_NX, CTX_S1_PHYS_TABLES, MAX_CONTEXTS } from "../abi";

@inline export function ctxPtr(id: u32): usize { return contexts + <usize>id * CTX_SIZE; }
@inline export function ctxRoot(ctx: usize): u64 { return load<u64>(ctx + CTX_ROOT); }
@inline export function ctxRsvdMask(ctx: usize): u64 { return load<u64>(ctx + CTX_RSVD_MASK); }
@inline export function ctxFormat(ctx: usize): u32 { return load<u8>(ctx + CTX_FORMAT); }
@inline export function ctxLevels(ctx: usize): u32 { return load<u8>(ctx + CTX_LEVELS); }
@inline export function ctxFlags(ctx: usize): u32 { return load<u8>(ctx + CTX_FLAGS); }
@inline export function ctxPgsizes(ctx: usize): u64 { return load<u64>(ctx + CTX_PGSIZES); }
@inline export function ctxTlbSizes(ctx: usize): u64 { return load<u64>(ctx + CTX_TLB_SIZES); }
@inline export function ctxInputBits(ctx: usize): u32 { return load<u8>(ctx + CTX_INPUT_BITS); }
@inline export function ctxS2Id(ctx: usize): u32 { return load<u16>(ctx + CTX_S2_ID); }
@inline export function ctxNestEpoch(ctx: usize): u32 { return load<u32>(ctx + CTX_NEST_EPOCH); }
@inline export function ctxMsiStart(ctx: usize): u64 { return load<u64>(ctx + CTX_MSI_START); }
@inline export function ctxMsiEnd(ctx: usize): u64 { return load<u64>(ctx + CTX_MSI_END); }
@inline export function ctxFlushEpoch(ctx: usize): u32 { return load<u32>(ctx + CTX_FLUSH_EPOCH); }

export function ctxIsLive(id: u32): bool {
  return id > 0 && id < MAX_CONTEXTS && (ctxFlags(ctxPtr(id)) & CTX_LIVE) != 0;
}

// Reserved bits common to every entry: the address bits from paWidth up to
// bit 51, and XD when the format's NX is off.
function rsvdMaskFor(paWidth: u32, flags: u32): u64 {
  let mask: u64 = paWidth >= 52 ? 0 : (((<u64>1 << 52) - 1) & ~((<u64>1 << paWidth) - 1));
  if ((flags & CTX_NX) == 0) mask |= <u64>1 << 63;
  return mask;
}

export function ctxSet(id: u32, format: u32, levels: u32, inputBits: u32, flags: u32, paWidth: u32, root: u64, pgsizes: u64): void {
  const ctx = ctxPtr(id);
  store<u64>(ctx + CTX_ROOT, root);
  store<u64>(ctx + CTX_RSVD_MASK, rsvdMaskFor(paWidth, flags));
  store<u64>(ctx + CTX_PGSIZES, pgsizes);
  store<u64>(ctx + CTX_TLB_SIZES, 0);
  store<u8>(ctx + CTX_FORMAT, <u8>format);
  store<u8>(ctx + CTX_LEVELS, <u8>levels);
  store<u8>(ctx + CTX_FLAGS, <u8>(flags | CTX_LIVE));
  store<u8>(ctx + CTX_PA_WIDTH, <u8>paWidth);
  store<u8>(ctx + CTX_INPUT_BITS, <u8>inputBits);
  store<u16>(ctx + CTX_S2_ID, 0);
  // No MSI window until the facade sets one (start > end: empty).
  store<u64>(ctx + CTX_MSI_START, 1);
  store<u64>(ctx + CTX_MSI_END, 0);
}

// Keeps the flush epoch: the caller flushed the context first, and its old
// IOTLB entries must stay dead if the id is handed out again.
export function ctxClear(id: u32): void {
  const ctx = ctxPtr(id);
  const flushEpoch = ctxFlushEpoch(ctx), nestEpoch = ctxNestEpoch(ctx);
  memory.fill(ctx, 0, CTX_SIZE);
  store<u32>(ctx + CTX_FLUSH_EPOCH, flushEpoch);
  store<u32>(ctx + CTX_NEST_EPOCH, nestEpoch);
  // A zeroed window would be [0, 0]: an empty one is start > end.
  store<u64>(ctx + CTX_MSI_START, 1);
}

export function ctxSetMsiWindow(id: u32, start: u64, end: u64): void {
  const ctx = ctxPtr(id);
  store<u64>(ctx + CTX_MSI_START, start);
  store<u64>(ctx + CTX_MSI_END, end);
}

// The request switches; how the context is linked to its stage 2 stays.
export function ctxSetFlags(id: u32, flags: u32): void {
  const ctx = ctxPtr(id);
  store<u8>(ctx + CTX_FLAGS, <u8>(flags | CTX_LIVE | (ctxFlags(ctx) & CTX_S1_PHYS_TABLES)));
}

// Makes id a stage-1 context over stage-2 context s2 (0: single stage again),
// its tables read through stage 2 (at GPAs), or with physTables at HPAs.
export function ctxSetNested(id: u32, s2: u32, physTables: bool): void {
  const ctx = ctxPtr(id);
  store<u16>(ctx + CTX_S2_ID, <u16>s2);
  const flags = ctxFlags(ctx) & ~CTX_S1_PHYS_TABLES;
  store<u8>(ctx + CTX_FLAGS, <u8>(s2 != 0 && physTables ? flags | CTX_S1_PHYS_TABLES : flags));
}
