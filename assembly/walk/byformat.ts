// Generated from assembly/fmt/index.ts by scripts/gen-dispatch.mjs (npm run build). Do not edit.
// One switch per operation over the registered formats (walk/dispatch.ts calls them).
import { ctxFormat } from "./context";
import { walk, walkIn, noWalk, walkStage } from "./walker";
import { buildMap, buildUnmap, buildGuestMap, buildGuestUnmap } from "./builder";
import { visitDirty } from "./leaves";
import { pinMapInto, unpinUnmapWith } from "./pinned";
import { walkPhys } from "./physs1";
import { mapListWith } from "./maplist";
import { ERR_EINVAL, FAULT_NO_CONTEXT } from "../abi";
import { X86Format } from "../fmt/x86_64";
import { Arm64S1Format, Arm64S2Format } from "../fmt/arm64";
import { VtdSlFormat } from "../fmt/vtd_sl";
import { GgttFormat } from "../fmt/ggtt";
import { FORMAT_X86_64, FORMAT_ARM64_S1, FORMAT_VTD_SL, FORMAT_ARM64_S2, FORMAT_GGTT } from "../fmt/index";

@inline export function walkSingle(ctx: usize, iova: u64, access: u32, mode: u32): u32 {
  switch (ctxFormat(ctx)) {
    case FORMAT_X86_64: return walk<X86Format>(ctx, iova, access, mode);
    case FORMAT_ARM64_S1: return walk<Arm64S1Format>(ctx, iova, access, mode);
    case FORMAT_VTD_SL: return walk<VtdSlFormat>(ctx, iova, access, mode);
    case FORMAT_ARM64_S2: return walk<Arm64S2Format>(ctx, iova, access, mode);
    case FORMAT_GGTT: return walk<GgttFormat>(ctx, iova, access, mode);
    default: return noWalk(FAULT_NO_CONTEXT);
  }
}

function walkNestedOver<F>(ctx: usize, s2: usize, iova: u64, access: u32, mode: u32): u32 {
  switch (ctxFormat(s2)) {
    case FORMAT_VTD_SL: return walkIn<F, VtdSlFormat>(ctx, iova, access, mode, s2);
    case FORMAT_ARM64_S2: return walkIn<F, Arm64S2Format>(ctx, iova, access, mode, s2);
    default: walkStage = 2; return noWalk(FAULT_NO_CONTEXT);
  }
}

export function walkNested(ctx: usize, s2: usize, iova: u64, access: u32, mode: u32): u32 {
  switch (ctxFormat(ctx)) {
    case FORMAT_X86_64: return walkNestedOver<X86Format>(ctx, s2, iova, access, mode);
    case FORMAT_ARM64_S1: return walkNestedOver<Arm64S1Format>(ctx, s2, iova, access, mode);
    default: return noWalk(FAULT_NO_CONTEXT);
  }
}

function walkPhysS1Over<F>(ctx: usize, s2: usize, iova: u64, access: u32, mode: u32): u32 {
  switch (ctxFormat(s2)) {
    case FORMAT_VTD_SL: return walkPhys<F, VtdSlFormat>(ctx, s2, iova, access, mode);
    case FORMAT_ARM64_S2: return walkPhys<F, Arm64S2Format>(ctx, s2, iova, access, mode);
    default: walkStage = 2; return noWalk(FAULT_NO_CONTEXT);
  }
}

export function walkPhysS1(ctx: usize, s2: usize, iova: u64, access: u32, mode: u32): u32 {
  switch (ctxFormat(ctx)) {
    case FORMAT_GGTT: return walkPhysS1Over<GgttFormat>(ctx, s2, iova, access, mode);
    default: return noWalk(FAULT_NO_CONTEXT);
  }
}

@inline export function mapIn(ctx: usize, iova: u64, last: u64, hpa: u64, prot: u32): u32 {
  switch (ctxFormat(ctx)) {
    case FORMAT_X86_64: return buildMap<X86Format>(ctx, iova, last, hpa, prot);
    case FORMAT_ARM64_S1: return buildMap<Arm64S1Format>(ctx, iova, last, hpa, prot);
    case FORMAT_VTD_SL: return buildMap<VtdSlFormat>(ctx, iova, last, hpa, prot);
    case FORMAT_ARM64_S2: return buildMap<Arm64S2Format>(ctx, iova, last, hpa, prot);
    case FORMAT_GGTT: return buildMap<GgttFormat>(ctx, iova, last, hpa, prot);
    default: return ERR_EINVAL;
  }
}

@inline export function mapListIn(ctx: usize, list: usize, count: u32, prot: u32): u32 {
  switch (ctxFormat(ctx)) {
    case FORMAT_X86_64: return mapListWith<X86Format>(ctx, list, count, prot);
    case FORMAT_ARM64_S1: return mapListWith<Arm64S1Format>(ctx, list, count, prot);
    case FORMAT_VTD_SL: return mapListWith<VtdSlFormat>(ctx, list, count, prot);
    case FORMAT_ARM64_S2: return mapListWith<Arm64S2Format>(ctx, list, count, prot);
    case FORMAT_GGTT: return mapListWith<GgttFormat>(ctx, list, count, prot);
    default: return ERR_EINVAL;
  }
}

@inline export function unmapIn(ctx: usize, iova: u64, last: u64): u64 {
  switch (ctxFormat(ctx)) {
    case FORMAT_X86_64: return buildUnmap<X86Format>(ctx, iova, last);
    case FORMAT_ARM64_S1: return buildUnmap<Arm64S1Format>(ctx, iova, last);
    case FORMAT_VTD_SL: return buildUnmap<VtdSlFormat>(ctx, iova, last);
    case FORMAT_ARM64_S2: return buildUnmap<Arm64S2Format>(ctx, iova, last);
    case FORMAT_GGTT: return buildUnmap<GgttFormat>(ctx, iova, last);
    default: return 0;
  }
}

function guestMapInOver<F>(ctx: usize, s2: usize, iova: u64, last: u64, gpa: u64, prot: u32, pool: usize, count: u32, released: usize, cap: u32): u32 {
  switch (ctxFormat(s2)) {
    case FORMAT_VTD_SL: return buildGuestMap<F, VtdSlFormat>(ctx, s2, iova, last, gpa, prot, pool, count, released, cap);
    case FORMAT_ARM64_S2: return buildGuestMap<F, Arm64S2Format>(ctx, s2, iova, last, gpa, prot, pool, count, released, cap);
    default: return ERR_EINVAL;
  }
}

export function guestMapIn(ctx: usize, s2: usize, iova: u64, last: u64, gpa: u64, prot: u32, pool: usize, count: u32, released: usize, cap: u32): u32 {
  switch (ctxFormat(ctx)) {
    case FORMAT_X86_64: return guestMapInOver<X86Format>(ctx, s2, iova, last, gpa, prot, pool, count, released, cap);
    case FORMAT_ARM64_S1: return guestMapInOver<Arm64S1Format>(ctx, s2, iova, last, gpa, prot, pool, count, released, cap);
    default: return ERR_EINVAL;
  }
}

function guestUnmapInOver<F>(ctx: usize, s2: usize, iova: u64, last: u64, released: usize, cap: u32): u64 {
  switch (ctxFormat(s2)) {
    case FORMAT_VTD_SL: return buildGuestUnmap<F, VtdSlFormat>(ctx, s2, iova, last, released, cap);
    case FORMAT_ARM64_S2: return buildGuestUnmap<F, Arm64S2Format>(ctx, s2, iova, last, released, cap);
    default: return 0;
  }
}

export function guestUnmapIn(ctx: usize, s2: usize, iova: u64, last: u64, released: usize, cap: u32): u64 {
  switch (ctxFormat(ctx)) {
    case FORMAT_X86_64: return guestUnmapInOver<X86Format>(ctx, s2, iova, last, released, cap);
    case FORMAT_ARM64_S1: return guestUnmapInOver<Arm64S1Format>(ctx, s2, iova, last, released, cap);
    default: return 0;
  }
}

@inline export function pinMapIn(proc: usize, dom: usize, vaddr: u64, last: u64, iova: u64, prot: u32): u32 {
  switch (ctxFormat(dom)) {
    case FORMAT_X86_64: return pinMapInto<X86Format>(proc, dom, vaddr, last, iova, prot);
    case FORMAT_ARM64_S1: return pinMapInto<Arm64S1Format>(proc, dom, vaddr, last, iova, prot);
    case FORMAT_VTD_SL: return pinMapInto<VtdSlFormat>(proc, dom, vaddr, last, iova, prot);
    case FORMAT_ARM64_S2: return pinMapInto<Arm64S2Format>(proc, dom, vaddr, last, iova, prot);
    case FORMAT_GGTT: return pinMapInto<GgttFormat>(proc, dom, vaddr, last, iova, prot);
    default: return ERR_EINVAL;
  }
}

@inline export function unpinUnmapIn(dom: usize, iova: u64, last: u64): u64 {
  switch (ctxFormat(dom)) {
    case FORMAT_X86_64: return unpinUnmapWith<X86Format>(dom, iova, last);
    case FORMAT_ARM64_S1: return unpinUnmapWith<Arm64S1Format>(dom, iova, last);
    case FORMAT_VTD_SL: return unpinUnmapWith<VtdSlFormat>(dom, iova, last);
    case FORMAT_ARM64_S2: return unpinUnmapWith<Arm64S2Format>(dom, iova, last);
    case FORMAT_GGTT: return unpinUnmapWith<GgttFormat>(dom, iova, last);
    default: return 0;
  }
}

@inline export function dirtyScanIn(dom: usize, iova: u64, last: u64): u32 {
  switch (ctxFormat(dom)) {
    case FORMAT_X86_64: return visitDirty<X86Format>(dom, iova, last);
    case FORMAT_ARM64_S1: return visitDirty<Arm64S1Format>(dom, iova, last);
    case FORMAT_VTD_SL: return visitDirty<VtdSlFormat>(dom, iova, last);
    case FORMAT_ARM64_S2: return visitDirty<Arm64S2Format>(dom, iova, last);
    case FORMAT_GGTT: return visitDirty<GgttFormat>(dom, iova, last);
    default: return 0;
  }
}
