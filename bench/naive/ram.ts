// Physical RAM of the twin: one ArrayBuffer, HPA 0 .. size. Page-table
// entries are read and written as little-endian u64 through a DataView; the
// caller checks the HPA against RAM first (inRam), as the engine does.
export class Ram {
  readonly size: bigint;
  readonly buffer: ArrayBuffer;
  readonly bytes: Uint8Array;
  private readonly data: DataView;

  constructor(size: bigint) {
    this.size = size;
    this.buffer = new ArrayBuffer(Number(size));
    this.bytes = new Uint8Array(this.buffer);
    this.data = new DataView(this.buffer);
  }

  /** [hpa, hpa + len) lies inside RAM (no wrap). */
  inRam(hpa: bigint, len: bigint): boolean {
    return hpa < this.size && len <= this.size - hpa;
  }

  loadPte(hpa: bigint): bigint {
    return this.data.getBigUint64(Number(hpa), true);
  }

  storePte(hpa: bigint, value: bigint): void {
    this.data.setBigUint64(Number(hpa), value, true);
  }

  zero(hpa: bigint, len: number): void {
    this.bytes.fill(0, Number(hpa), Number(hpa) + len);
  }
}
