// The one definition of what crosses the JS <-> WASM boundary: status codes,
// access and permission bits, and the offsets of the control block (the
// format ids are the format registry's, fmt/index.ts). scripts/gen-abi.mjs
// turns every `export const NAME: T = literal;` line of this file and of
// fmt/index.ts into src/engine/abi.ts, so the facade never keeps a
// hand-written copy.

// ---- Translation status: 0 is success, anything else is a fault reason.
export const ST_OK: u32 = 0;
export const FAULT_NOT_PRESENT: u32 = 1;
export const FAULT_PERMISSION: u32 = 2;
export const FAULT_RESERVED_BIT: u32 = 3;
export const FAULT_NON_CANONICAL: u32 = 4;
export const FAULT_TABLE_OUTSIDE_RAM: u32 = 5;
export const FAULT_TABLE_CYCLE: u32 = 6;
export const FAULT_OUTPUT_OUTSIDE_RAM: u32 = 7;
export const FAULT_NO_CONTEXT: u32 = 8;
export const FAULT_ACCESS_FLAG: u32 = 9;
export const FAULT_ADDRESS_SIZE: u32 = 10;
export const FAULT_INPUT_RANGE: u32 = 11;
// Not a fault: a device write reached an MSI doorbell (see RES_FAULT_ADDR).
export const ST_INTERRUPT: u32 = 12;

// ---- Control-plane status from builder and allocator calls (errno names in the facade).
export const ERR_EINVAL: u32 = 100;
export const ERR_EEXIST: u32 = 101;
export const ERR_ENOMEM: u32 = 102;
export const ERR_EFAULT: u32 = 103;
export const ERR_EOVERFLOW: u32 = 104;

// ---- Access request bits (the iommufd fault `perm` encoding: R=1, W=2, X=4, PRIV=8).
export const ACCESS_READ: u32 = 1;
export const ACCESS_WRITE: u32 = 2;
export const ACCESS_EXEC: u32 = 4;
export const ACCESS_PRIV: u32 = 8;

// ---- Effective permissions of a translation (and IOTLB entry flags).
export const PERM_R: u32 = 1;
export const PERM_W: u32 = 2;
export const PERM_X: u32 = 4;
export const PERM_U: u32 = 8;
// The leaf's dirty bit was already set: a write may be served from the IOTLB.
export const PERM_DIRTY: u32 = 16;

// ---- What an entry is at a level (formats answer entryKind).
export const KIND_INVALID: u32 = 0;
export const KIND_TABLE: u32 = 1;
export const KIND_LEAF: u32 = 2;

// ---- Context flags (a context is a page table or a domain: root + format + config).
export const CTX_SRE: u32 = 1;
export const CTX_WPE: u32 = 2;
export const CTX_AD: u32 = 4;
export const CTX_NX: u32 = 8;
// VT-d first level, PASID-entry EAFE: a walk that sets A also sets the
// extended-accessed bit (10), so software can tell device use from CPU use.
export const CTX_EAFE: u32 = 16;
// Arm TCR.HD: a write to a writable-clean leaf (DBM set, AP[2] read-only)
// makes it writable-dirty (clears AP[2]) instead of faulting. Needs HA (CTX_AD).
export const CTX_HD: u32 = 32;
// A stage-1 context over a stage 2 whose tables are host-physical (the GPU's
// GGTT): table reads go straight to RAM, only the output goes through stage 2
// (walk/physs1.ts). Set with the stage-2 link (contextSetNested), kept by flag changes.
export const CTX_S1_PHYS_TABLES: u32 = 64;
export const CTX_LIVE: u32 = 128;

// ---- Context record (CTX_SIZE bytes each, MAX_CONTEXTS of them; slot 0 is never used).
export const CTX_SIZE: u32 = 64;
export const MAX_CONTEXTS: u32 = 4096;
export const CTX_ROOT: u32 = 0;
export const CTX_RSVD_MASK: u32 = 8;
export const CTX_TLB_SIZES: u32 = 16;
export const CTX_PGSIZES: u32 = 24;
export const CTX_FLUSH_EPOCH: u32 = 32;
export const CTX_FORMAT: u32 = 36;
export const CTX_LEVELS: u32 = 37;
export const CTX_FLAGS: u32 = 38;
export const CTX_PA_WIDTH: u32 = 39;
export const CTX_INPUT_BITS: u32 = 40;
// Nested translation: the stage-2 context a stage-1 context runs over (0: none, u16).
export const CTX_S2_ID: u32 = 42;
// On a stage-2 context: bumped by every invalidation of it, so combined
// (nested) IOTLB entries built over it die with any stage-2 change.
export const CTX_NEST_EPOCH: u32 = 44;
// An IOVA window (inclusive) where device writes are interrupt requests, untranslated (VT-d's 0xFEEx_xxxx).
export const CTX_MSI_START: u32 = 48;
export const CTX_MSI_END: u32 = 56;

// ---- IOTLB entry (TLB_ENTRY_SIZE bytes): page number, key (pasid, context, page size), output page, stamp, perms.
export const TLB_ENTRY_SIZE: u32 = 32;
export const TLB_VPN: u32 = 0;
export const TLB_KEY: u32 = 8;
export const TLB_OUT: u32 = 16;
export const TLB_STAMP: u32 = 24;
export const TLB_PERMS: u32 = 28;
export const PASID_FLUSH_SLOTS: u32 = 4096;

// ---- Fault record (FAULT_SIZE bytes) in the fault ring.
export const FAULT_SIZE: u32 = 32;
export const FAULT_ADDR: u32 = 0;
export const FAULT_CONTEXT: u32 = 8;
export const FAULT_PASID: u32 = 12;
export const FAULT_SOURCE: u32 = 16;
export const FAULT_ACCESS: u32 = 20;
export const FAULT_REASON: u32 = 21;
export const FAULT_LEVEL: u32 = 22;
export const FAULT_STAGE: u32 = 23;

// ---- Scatter-gather segment (SEG_SIZE bytes): iova u64, length u64 (below 2^32):
// the layout of a BigUint64Array of (iova, length) pairs.
export const SEG_SIZE: u32 = 16;
export const SEG_IOVA: u32 = 0;
export const SEG_LEN: u32 = 8;

// ---- Control block: results of the last call, layout, counters, walk trace.
export const CTRL_SIZE: u32 = 512;
export const RES_STATUS: u32 = 0;
export const RES_LEVEL: u32 = 4;
export const RES_HPA: u32 = 8;
export const RES_SIZE_LOG: u32 = 16;
export const RES_PERMS: u32 = 20;
export const RES_BYTES: u32 = 24;
export const RES_FAULT_ADDR: u32 = 32;
export const RES_SEGMENT: u32 = 40;
export const RES_TRACE_COUNT: u32 = 44;
// Which stage a fault happened in (1, or 2 for a nested walk's stage 2).
export const RES_STAGE: u32 = 48;
// dmaPiece: the bytes of the piece whose linear-memory offset it returned.
export const RES_PIECE_LEN: u32 = 52;
// dmaPiece: 0, or, when the piece was an IOTLB hit the facade may replay
// (src/hitmemo.ts) from anywhere in its 4 KiB IOVA page while TLB_GENERATION
// holds, log2 of its translation page's size.
export const RES_PIECE_PAGE: u32 = 56;
// dmaPiece returns a status below this, or the piece's offset in linear memory (RAM lies far above it).
export const PIECE_STATUS_LIMIT: u32 = 256;
export const LAYOUT_RAM_BASE: u32 = 64;
export const LAYOUT_RAM_SIZE: u32 = 72;
export const LAYOUT_STAGING: u32 = 80;
export const LAYOUT_STAGING_SIZE: u32 = 84;
export const LAYOUT_ARENA: u32 = 88;
export const LAYOUT_ARENA_SIZE: u32 = 92;
export const LAYOUT_FAULTS: u32 = 96;
export const LAYOUT_FAULT_CAPACITY: u32 = 100;
export const LAYOUT_TLB_SETS: u32 = 104;
export const LAYOUT_TLB_WAYS: u32 = 108;
export const LAYOUT_CONTEXTS: u32 = 112;
export const LAYOUT_TLB: u32 = 116;
export const CNT_HITS: u32 = 128;
export const CNT_MISSES: u32 = 136;
export const CNT_EVICTIONS: u32 = 144;
export const CNT_INVALIDATIONS: u32 = 152;
export const CNT_WALKS: u32 = 160;
// The TLB generation, an f64 that only counts up: bumped by everything that
// could change the outcome of an IOTLB lookup (every fill, so every eviction;
// every flush of any scope; context and doorbell changes). A hit leaves it
// alone, so while it holds the same lookup is the same hit again.
export const TLB_GENERATION: u32 = 168;
export const FAULT_HEAD: u32 = 192;
export const FAULT_TAIL: u32 = 196;
export const FAULT_OVERFLOW: u32 = 200;
export const FRAMES_FREE: u32 = 208;
// Probe walks record every entry they read: TRACE_MAX records of (entry address u64, entry u64).
export const TRACE: u32 = 256;
export const TRACE_MAX: u32 = 8;
export const TRACE_RECORD_SIZE: u32 = 16;

// ---- A device with no PASID table: its PASID-tagged requests find no context.
// (Table 0 means "no table at all": the PASID is then only an IOTLB tag.)
export const PASID_TABLE_NONE: u32 = 0xFFFFFFFF;

// ---- Fixed sizes.
export const PAGE_SHIFT: u32 = 12;
export const STAGING_SIZE: u32 = 1048576;
// Page tables one pinned map (or map of a list) may create (each logged so a failure can undo them).
export const UNDO_LOG_ENTRIES: u32 = 16384;
// A map of a list (ptMapList) reads (iova, last, hpa) u64 triples from staging:
// at most STAGING_SIZE / MAP_LIST_ENTRY_SIZE of them in one call.
export const MAP_LIST_ENTRY_SIZE: u32 = 24;
export const MAP_LIST_MAX: u32 = 43690;

// ---- PASIDs: 20 bits, 0 means "no PASID". PASID tables and the allocator are
// radix trees of 64-slot nodes from a pool of `pasidNodes` (createHost) nodes.
export const PASID_MAX: u32 = 0xFFFFF;
// pasidAlloc's answers besides a PASID: nothing free in [min, max]; no nodes left.
export const PASID_ALLOC_FULL: u32 = 0;
export const PASID_ALLOC_NOMEM: u32 = 0xFFFFFFFF;
// A search found nothing (pasidTableNext).
export const XA_NONE: u32 = 0xFFFFFFFF;
export const PASID_NODES_DEFAULT: u32 = 16384;
export const PASID_NODES_MAX: u32 = 1048576;
