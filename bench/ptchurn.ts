// pt-churn (issue 17): a page table after churn against a fresh one. Map
// 1 GiB with 4 KiB pages, unmap it (in pieces, as a DMA-API user does), map
// it again where 2 MiB pages fit: the
// large leaves must take the place of the tables the unmap emptied, so the
// churned table holds what a fresh 2 MiB map holds (leaves, table pages) and
// walks as fast. Timed: walks of the same addresses (IOTLB flushed each call)
// on the churned table, the twin's churned table, and a fresh table (variant).
import { createHost, PAGE_2M, PAGE_4K, type Domain, type Host } from "../src/index.js";
import { createNaiveHost } from "./naive/index.js";
import { RAM_SIZE, sparseIovas, type DomainLike } from "./fixtures.js";
import type { Case } from "./cases.js";

const SPAN = 1n << 30n;
const IOVA = 0x40000000n;
const HPA = 0x100000000n;

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`benchmark fixture is broken: ${what}`);
}

interface TableHost {
  ram: { framesFree: number };
  createDomain(options: Record<string, unknown>): DomainLike & { pageTable: { walk(iova: bigint): { pageSize?: bigint } } };
}

/** A domain whose range was mapped with 4 KiB pages, unmapped and mapped again in one call; the table frames it holds. */
function churned(host: TableHost): { domain: DomainLike; tables: number } {
  const free = host.ram.framesFree;
  const domain = host.createDomain({ format: "x86-64", levels: 4, pageSizes: [PAGE_4K, PAGE_2M] });
  // Pieces of 1 MiB: none covers a 2 MiB slot, so every leaf is 4 KiB.
  for (let o = 0n; o < SPAN; o += PAGE_2M / 2n) domain.pageTable.map(IOVA + o, HPA + o, PAGE_2M / 2n, { write: true });
  check(domain.pageTable.walk(IOVA).pageSize === PAGE_4K, "the first map made 4 KiB leaves");
  // Unmapped in the same pieces: no call covers a whole table, so every table stays, emptied.
  for (let o = 0n; o < SPAN; o += PAGE_2M / 2n) check(domain.pageTable.unmap(IOVA + o, PAGE_2M / 2n) === PAGE_2M / 2n, "unmap");
  domain.pageTable.map(IOVA, HPA, SPAN, { write: true });
  return { domain, tables: free - host.ram.framesFree };
}

function fresh(host: TableHost): { domain: DomainLike; tables: number } {
  const free = host.ram.framesFree;
  const domain = host.createDomain({ format: "x86-64", levels: 4, pageSizes: [PAGE_4K, PAGE_2M] });
  domain.pageTable.map(IOVA, HPA, SPAN, { write: true });
  return { domain, tables: free - host.ram.framesFree };
}

/** Leaves of the range, found by walking it a leaf at a time. */
function leaves(domain: DomainLike & { pageTable: { walk(iova: bigint): { pageSize?: bigint } } }): number {
  let n = 0;
  for (let iova = IOVA; iova < IOVA + SPAN; n++) iova += domain.pageTable.walk(iova).pageSize ?? PAGE_4K;
  return n;
}

export async function ptChurn(): Promise<Case> {
  const eh: Host = await createHost({ ramSize: RAM_SIZE });
  const nh = await createNaiveHost({ ramSize: RAM_SIZE });
  const e = churned(eh as unknown as TableHost), n = churned(nh as unknown as TableHost), f = fresh(eh as unknown as TableHost);
  const walkable = (d: DomainLike) => d as DomainLike & { pageTable: { walk(iova: bigint): { pageSize?: bigint } } };
  const facts = { churned_leaves: leaves(walkable(e.domain)), fresh_leaves: leaves(walkable(f.domain)), churned_tables: e.tables, fresh_tables: f.tables };
  check(n.tables === e.tables && leaves(walkable(n.domain)) === facts.churned_leaves, "engine and twin churn to different tables");
  // 512 addresses spread over the range.
  const iovas = sparseIovas(512, 17).map((a) => IOVA + (a % SPAN));
  const batch = eh.createTranslationBatch(iovas.length), freshBatch = eh.createTranslationBatch(iovas.length);
  batch.iovas.set(iovas);
  freshBatch.iovas.set(iovas);
  const nIovas = BigUint64Array.from(iovas), nOut = new BigUint64Array(iovas.length), nStatus = new Uint8Array(iovas.length);
  const ed = e.domain as unknown as Domain, fd = f.domain as unknown as Domain;
  check(ed.translateBatch(batch.iovas, "read", batch.hpas, batch.status) === 0, "pt-churn faults");
  check(fd.translateBatch(freshBatch.iovas, "read", freshBatch.hpas, freshBatch.status) === 0, "fresh faults");
  check(n.domain.translateBatch(nIovas, "read", nOut, nStatus) === 0, "naive pt-churn faults");
  check(batch.hpas.every((v, i) => v === freshBatch.hpas[i] && v === nOut[i]), "churned, fresh and twin translate differently");
  return {
    name: "pt-churn", unit: "walk", items: iovas.length, facts,
    engine: () => { ed.invalidate(); ed.translateBatch(batch.iovas, "read", batch.hpas, batch.status); },
    naive: () => { n.domain.invalidate(); n.domain.translateBatch(nIovas, "read", nOut, nStatus); },
    variant: { field: "fresh_ns", run: () => { fd.invalidate(); fd.translateBatch(freshBatch.iovas, "read", freshBatch.hpas, freshBatch.status); } },
  };
}
