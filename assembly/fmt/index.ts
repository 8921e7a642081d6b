// ---- Page-table formats.
// The engine's page-table formats, one line each: the format's id (it crosses
// the boundary: scripts/gen-abi.mjs copies it into src/engine/abi.ts with the
// rest of abi.ts), its class and file here, and its role in a two-stage domain:
//   stage1       a nested domain's stage 1: tables at GPAs, read through stage 2
//   stage2       the stage 2 a two-stage domain runs over
//   phys-stage1  a stage 1 over a stage 2 whose tables are host-physical:
//                only its output goes through stage 2 (walk/physs1.ts)
//   -            single-stage only
// scripts/gen-dispatch.mjs turns these lines into walk/byformat.ts, the
// switches that pick the generic code's specialisation for a context's format.
export const FORMAT_X86_64: u32 = 1; // X86Format from x86_64: stage1
export const FORMAT_ARM64_S1: u32 = 2; // Arm64S1Format from arm64: stage1
export const FORMAT_VTD_SL: u32 = 3; // VtdSlFormat from vtd_sl: stage2
export const FORMAT_ARM64_S2: u32 = 4; // Arm64S2Format from arm64: stage2
export const FORMAT_GGTT: u32 = 5; // GgttFormat from ggtt: phys-stage1
