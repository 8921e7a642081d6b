// Generated from assembly/abi.ts and assembly/fmt/index.ts by scripts/gen-abi.mjs (npm run build). Do not edit.


// ---- Translation status: 0 is success, anything else is a fault reason.
export const ST_OK = 0;
export const FAULT_NOT_PRESENT = 1;
export const FAULT_PERMISSION = 2;
export const FAULT_RESERVED_BIT = 3;
export const FAULT_NON_CANONICAL = 4;
export const FAULT_TABLE_OUTSIDE_RAM = 5;
export const FAULT_TABLE_CYCLE = 6;
export const FAULT_OUTPUT_OUTSIDE_RAM = 7;
export const FAULT_NO_CONTEXT = 8;
export const FAULT_ACCESS_FLAG = 9;
export const FAULT_ADDRESS_SIZE = 10;
export const FAULT_INPUT_RANGE = 11;
export const ST_INTERRUPT = 12;

// ---- Control-plane status from builder and allocator calls (errno names in the facade).
export const ERR_EINVAL = 100;
export const ERR_EEXIST = 101;
export const ERR_ENOMEM = 102;
export const ERR_EFAULT = 103;
export const ERR_EOVERFLOW = 104;

// ---- Access request bits (the iommufd fault `perm` encoding: R=1, W=2, X=4, PRIV=8).
export const ACCESS_READ = 1;
export const ACCESS_WRITE = 2;
export const ACCESS_EXEC = 4;
export const ACCESS_PRIV = 8;

// ---- Effective permissions of a translation (and IOTLB entry flags).
export const PERM_R = 1;
export const PERM_W = 2;
export const PERM_X = 4;
export const PERM_U = 8;
export const PERM_DIRTY = 16;

// ---- What an entry is at a level (formats answer entryKind).
export const KIND_INVALID = 0;
export const KIND_TABLE = 1;
export const KIND_LEAF = 2;

// ---- Context flags (a context is a page table or a domain: root + format + config).
export const CTX_SRE = 1;
export const CTX_WPE = 2;
export const CTX_AD = 4;
export const CTX_NX = 8;
export const CTX_EAFE = 16;
export const CTX_HD = 32;
export const CTX_S1_PHYS_TABLES = 64;
export const CTX_LIVE = 128;

// ---- Context record (CTX_SIZE bytes each, MAX_CONTEXTS of them; slot 0 is never used).
export const CTX_SIZE = 64;
export const MAX_CONTEXTS = 4096;
export const CTX_ROOT = 0;
export const CTX_RSVD_MASK = 8;
export const CTX_TLB_SIZES = 16;
export const CTX_PGSIZES = 24;
export const CTX_FLUSH_EPOCH = 32;
export const CTX_FORMAT = 36;
export const CTX_LEVELS = 37;
export const CTX_FLAGS = 38;
export const CTX_PA_WIDTH = 39;
export const CTX_INPUT_BITS = 40;
export const CTX_S2_ID = 42;
export const CTX_NEST_EPOCH = 44;
export const CTX_MSI_START = 48;
export const CTX_MSI_END = 56;

// ---- IOTLB entry (TLB_ENTRY_SIZE bytes): page number, key (pasid, context, page size), output page, stamp, perms.
export const TLB_ENTRY_SIZE = 32;
export const TLB_VPN = 0;
export const TLB_KEY = 8;
export const TLB_OUT = 16;
export const TLB_STAMP = 24;
export const TLB_PERMS = 28;
export const PASID_FLUSH_SLOTS = 4096;

// ---- Fault record (FAULT_SIZE bytes) in the fault ring.
export const FAULT_SIZE = 32;
export const FAULT_ADDR = 0;
export const FAULT_CONTEXT = 8;
export const FAULT_PASID = 12;
export const FAULT_SOURCE = 16;
export const FAULT_ACCESS = 20;
export const FAULT_REASON = 21;
export const FAULT_LEVEL = 22;
export const FAULT_STAGE = 23;

// ---- Scatter-gather segment (SEG_SIZE bytes): iova u64, length u64 (below 2^32):
export const SEG_SIZE = 16;
export const SEG_IOVA = 0;
export const SEG_LEN = 8;

// ---- Control block: results of the last call, layout, counters, walk trace.
export const CTRL_SIZE = 512;
export const RES_STATUS = 0;
export const RES_LEVEL = 4;
export const RES_HPA = 8;
export const RES_SIZE_LOG = 16;
export const RES_PERMS = 20;
export const RES_BYTES = 24;
export const RES_FAULT_ADDR = 32;
export const RES_SEGMENT = 40;
export const RES_TRACE_COUNT = 44;
export const RES_STAGE = 48;
export const RES_PIECE_LEN = 52;
export const RES_PIECE_PAGE = 56;
export const PIECE_STATUS_LIMIT = 256;
export const LAYOUT_RAM_BASE = 64;
export const LAYOUT_RAM_SIZE = 72;
export const LAYOUT_STAGING = 80;
export const LAYOUT_STAGING_SIZE = 84;
export const LAYOUT_ARENA = 88;
export const LAYOUT_ARENA_SIZE = 92;
export const LAYOUT_FAULTS = 96;
export const LAYOUT_FAULT_CAPACITY = 100;
export const LAYOUT_TLB_SETS = 104;
export const LAYOUT_TLB_WAYS = 108;
export const LAYOUT_CONTEXTS = 112;
export const LAYOUT_TLB = 116;
export const CNT_HITS = 128;
export const CNT_MISSES = 136;
export const CNT_EVICTIONS = 144;
export const CNT_INVALIDATIONS = 152;
export const CNT_WALKS = 160;
export const TLB_GENERATION = 168;
export const FAULT_HEAD = 192;
export const FAULT_TAIL = 196;
export const FAULT_OVERFLOW = 200;
export const FRAMES_FREE = 208;
export const TRACE = 256;
export const TRACE_MAX = 8;
export const TRACE_RECORD_SIZE = 16;

// ---- A device with no PASID table: its PASID-tagged requests find no context.
export const PASID_TABLE_NONE = 0xFFFFFFFF;

// ---- Fixed sizes.
export const PAGE_SHIFT = 12;
export const STAGING_SIZE = 1048576;
export const UNDO_LOG_ENTRIES = 16384;
export const MAP_LIST_ENTRY_SIZE = 24;
export const MAP_LIST_MAX = 43690;

// ---- PASIDs: 20 bits, 0 means "no PASID". PASID tables and the allocator are
export const PASID_MAX = 0xFFFFF;
export const PASID_ALLOC_FULL = 0;
export const PASID_ALLOC_NOMEM = 0xFFFFFFFF;
export const XA_NONE = 0xFFFFFFFF;
export const PASID_NODES_DEFAULT = 16384;
export const PASID_NODES_MAX = 1048576;

// ---- Page-table formats.
export const FORMAT_X86_64 = 1;
export const FORMAT_ARM64_S1 = 2;
export const FORMAT_VTD_SL = 3;
export const FORMAT_ARM64_S2 = 4;
export const FORMAT_GGTT = 5;
