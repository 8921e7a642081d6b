// Buffers in engine memory, outside RAM. A DMA or a translation batch whose
// arrays live here moves with a single copy, no staging. First fit over a
// sorted free list; 64-byte granules keep typed arrays aligned.
import { fail } from "./errors.js";
import { integer, show } from "./args.js";
import type { Engine } from "./engine/engine.js";

const GRANULE = 64;

export class BufferArena {
  private free: { start: number; size: number }[];
  private readonly used = new Map<number, number>();

  constructor(private readonly engine: Engine) {
    this.free = engine.arenaSize > 0 ? [{ start: engine.arena, size: engine.arenaSize }] : [];
  }

  /** A zero-filled Uint8Array on engine memory; ENOMEM when the arena has no room. */
  alloc(byteLength: number): Uint8Array {
    integer(byteLength, "buffer length", 1, Number.MAX_SAFE_INTEGER);
    const size = Math.ceil(byteLength / GRANULE) * GRANULE;
    const i = this.free.findIndex((r) => r.size >= size);
    if (i < 0) fail("ENOMEM", `no ${size}-byte run left in the ${this.engine.arenaSize}-byte buffer arena`);
    const run = this.free[i];
    const start = run.start;
    if (run.size === size) this.free.splice(i, 1);
    else { run.start += size; run.size -= size; }
    this.used.set(start, size);
    const view = new Uint8Array(this.engine.buffer, start, byteLength);
    view.fill(0);
    return view;
  }

  /** Whether view is a buffer this arena handed out and still holds. */
  owns(view: unknown): boolean {
    return ArrayBuffer.isView(view) && this.used.has(this.engine.offsetOf(view));
  }

  release(view: ArrayBufferView): void {
    if (!ArrayBuffer.isView(view)) fail("EINVAL", `not a buffer from this host's allocBuffer(): ${show(view)}`);
    const start = this.engine.offsetOf(view);
    const size = this.used.get(start);
    if (size === undefined) fail("EINVAL", "not a buffer from this host's allocBuffer()");
    this.used.delete(start);
    let i = this.free.findIndex((r) => r.start > start);
    if (i < 0) i = this.free.length;
    this.free.splice(i, 0, { start, size });
    // Coalesce with neighbours.
    const merged: { start: number; size: number }[] = [];
    for (const r of this.free) {
      const last = merged[merged.length - 1];
      if (last && last.start + last.size === r.start) last.size += r.size;
      else merged.push({ ...r });
    }
    this.free = merged;
  }
}
