// Instantiates the engine. The WASM bytes are inlined in the bundle (base64),
// so Node and browsers load it the same way; the module is compiled once and
// every host gets its own instance and memory.
import { ENGINE_WASM_BASE64, ENGINE_FINGERPRINT } from "./wasm-bytes.generated.js";

export interface EngineExports {
  memory: WebAssembly.Memory;
  init(ramBytes: bigint, tlbSetsLog: number, tlbWays: number, faultLog: number, arenaBytes: number, pasidNodes: number): number;
  controlBlock(): number;
  stagingArea(): number;
  framesAlloc(count: number): bigint;
  framesRelease(hpa: bigint, count: number): number;
  framesClaim(hpa: bigint): number;
  contextSet(id: number, format: number, levels: number, inputBits: number, flags: number, paWidth: number, root: bigint, pgsizes: bigint): void;
  contextDestroy(id: number): void;
  contextSetFlags(id: number, flags: number): void;
  contextSetNested(id: number, s2: number, physTables?: number): void;
  contextSetMsiWindow(id: number, start: bigint, end: bigint): void;
  setMsiDoorbell(start: bigint, end: bigint): void;
  ptMap(id: number, iova: bigint, last: bigint, hpa: bigint, prot: number): number;
  ptMapList(id: number, list: number, count: number, prot: number): number;
  procMap(id: number, vaddr: bigint, last: bigint, prot: number): number;
  ptGuestMap(id: number, iova: bigint, last: bigint, gpa: bigint, prot: number, pool: number, count: number, released: number, cap: number): number;
  ptGuestUnmap(id: number, iova: bigint, last: bigint, released: number, cap: number): bigint;
  guestTablesNeeded(): number;
  guestTablesReleased(): number;
  guestUnmapStatus(): number;
  procUnmap(id: number, vaddr: bigint, last: bigint): bigint;
  dmaPinMap(procId: number, domId: number, vaddr: bigint, last: bigint, iova: bigint, access: number, prot: number): number;
  dmaUnpinUnmap(domId: number, iova: bigint, last: bigint): bigint;
  framePins(hpa: bigint): number;
  extPin(procId: number, vaddr: bigint, npage: number, access: number, out: number): number;
  extUnpin(list: number, count: number): void;
  dirtyBitmap(id: number, iova: bigint, last: bigint, pgShift: number, bitmap: number, clear: number): number;
  ptUnmap(id: number, iova: bigint, last: bigint): bigint;
  probe(id: number, iova: bigint, access: number, trace: number): number;
  translate(id: number, pasid: number, iova: bigint, access: number, sourceId: number): number;
  translateBatch(id: number, pasid: number, access: number, sourceId: number, iovas: number, hpas: number, status: number, count: number): number;
  iotlbOccupancy(out: number): void;
  iotlbFlushAll(): void;
  iotlbFlushContext(id: number): void;
  iotlbFlushPasid(id: number, pasid: number): void;
  iotlbFlushRange(id: number, pasid: number, anyPasid: number, first: bigint, last: bigint): void;
  dmaStep(id: number, pasid: number, access: number, sourceId: number, iova: number, want: number, table: number): number;
  translateNumber(id: number, pasid: number, iova: number, access: number, sourceId: number): number;
  dma(id: number, pasid: number, access: number, sourceId: number, iova: bigint, len: number, buf: number, table: number): number;
  dmaSg(id: number, pasid: number, access: number, sourceId: number, segs: number, count: number, buf: number, bufLen: number, table: number): number;
  iotlbCounters(): void;
  iotlbAddHits(n: number): void;
  memcpyGather(dst: number, srcs: number, count: number, len: number): void;
  // PASIDs (assembly/pasid/exports.ts)
  pasidOwnerCreate(): number;
  pasidOwnerDestroy(owner: number): number;
  pasidAlloc(owner: number, min: number, max: number): number;
  pasidFree(owner: number, min: number, max: number): number;
  pasidHeld(owner: number, from: number, out: number, cap: number): number;
  pasidTableCreate(): number;
  pasidTableDestroy(table: number): void;
  pasidTableSet(table: number, pasid: number, ctxId: number): number;
  pasidTableClear(table: number, pasid: number): number;
  pasidTableLookup(table: number, pasid: number): number;
  pasidTableLookupBatch(table: number, pasids: number, contexts: number, count: number): number;
  pasidTableNext(table: number, from: number): number;
  pasidNodesFree(): number;
  pasidNodesTotal(): number;
  pasidNodeVisits(): bigint;
}

export { ENGINE_FINGERPRINT };

let compiled: Promise<WebAssembly.Module> | undefined;

function decodeBase64(text: string): Uint8Array<ArrayBuffer> {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

export async function instantiateEngine(): Promise<EngineExports> {
  compiled ??= WebAssembly.compile(decodeBase64(ENGINE_WASM_BASE64));
  const instance = await WebAssembly.instantiate(await compiled, {});
  return instance.exports as unknown as EngineExports;
}
