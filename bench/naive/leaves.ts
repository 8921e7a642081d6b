// Visiting the leaves of a range in the twin, one recursive pass over the
// tables for every format: checking a process range before MAP_DMA, pinning
// it, unpinning on UNMAP_DMA, letting frames go on munmap, and reading dirty
// bits. Each leaf is seen as its part inside the range, [cur, chunkLast],
// starting at output address hpa. An entry that is not present, or has a
// bad reserved bit, is a hole (EFAULT for a check, skipped otherwise).
import * as abi from "../../src/engine/abi.js";
import type { Context } from "./context.js";
import { KIND_INVALID, KIND_LEAF, type Format } from "./formats.js";
import { permsAllow } from "./perms.js";
import type { Ram } from "./ram.js";

/** What a visit does at each leaf piece; a non-zero status stops the visit and is returned. */
export type LeafVisitor = (piece: { cur: bigint; chunkLast: bigint; hpa: bigint; pte: bigint; pteAddr: bigint; perms: number; fmt: Format }) => number;

export function visitLeaves(ram: Ram, ctx: Context, iova: bigint, last: bigint, onLeaf: LeafVisitor, onHole?: (cur: bigint) => number): number {
  const fmt = ctx.fmt;
  if (!fmt) return abi.ST_OK;
  return visit(ram, fmt, fmt.rootAddr(ctx.root), ctx.levels - 1, iova, last, fmt.fullPerms(), ctx.flags, onLeaf, onHole);
}

function visit(ram: Ram, fmt: Format, table: bigint, level: number, iova: bigint, last: bigint, perms: number, flags: number,
  onLeaf: LeafVisitor, onHole: ((cur: bigint) => number) | undefined): number {
  const shift = BigInt(fmt.levelShift(level));
  const mask = (1n << shift) - 1n;
  let cur = iova;
  for (;;) {
    const end = cur | mask;
    const chunkLast = end < last ? end : last;
    const pteAddr = table + (fmt.index(cur, level) << 3n);
    const pte = ram.inRam(table, 4096n) ? ram.loadPte(pteAddr) : 0n;
    const kind = fmt.entryKind(pte, level);
    if (kind === KIND_INVALID || fmt.check(pte, level, 0n) !== 0) {
      const st = onHole ? onHole(cur) : abi.ST_OK;
      if (st !== abi.ST_OK) return st;
    } else if (kind === KIND_LEAF) {
      const hpa = fmt.leafAddr(pte, level) | (cur & mask);
      const st = onLeaf({ cur, chunkLast, hpa, pte, pteAddr, perms: fmt.narrowLeaf(perms, pte, flags), fmt });
      if (st !== abi.ST_OK) return st;
    } else {
      const st = visit(ram, fmt, fmt.tableAddr(pte), level - 1, cur, chunkLast, fmt.narrowTable(perms, pte, flags), flags, onLeaf, onHole);
      if (st !== abi.ST_OK) return st;
    }
    if (chunkLast === last) return abi.ST_OK;
    cur = chunkLast + 1n;
  }
}

/** Every page of [vaddr, last] is present and allows `access` under the context's rules; else ERR_EFAULT. */
export function checkRange(ram: Ram, ctx: Context, vaddr: bigint, last: bigint, access: number): number {
  return visitLeaves(ram, ctx, vaddr, last,
    ({ pte, perms, fmt }) => (fmt.leafFault(pte, ctx.flags) !== 0 || !permsAllow(perms, access, ctx.flags) ? abi.ERR_EFAULT : abi.ST_OK),
    () => abi.ERR_EFAULT);
}

/** Calls fn for every 4 KiB frame of each leaf piece in [iova, last]. */
export function forEachFrame(ram: Ram, ctx: Context, iova: bigint, last: bigint, fn: (hpa: bigint) => void): void {
  visitLeaves(ram, ctx, iova, last, ({ cur, chunkLast, hpa }) => {
    const bytes = chunkLast - cur + 1n;
    for (let off = 0n; off < bytes; off += 4096n) fn(hpa + off);
    return abi.ST_OK;
  });
}
