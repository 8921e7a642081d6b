// A list of (iova, last, hpa) mappings in one call (the DMA API's map_sg), all
// or nothing: when an entry fails, the leaves of the ones before it go and the
// undo log takes back the tables they created or replaced, as a pinned map's
// failure does.
import { buildMap, beginUndo, commitUndo, removeLeaves, undoTables } from "./builder";
import { ST_OK, MAP_LIST_ENTRY_SIZE } from "../abi";

export function mapListWith<F>(ctx: usize, list: usize, count: u32, prot: u32): u32 {
  beginUndo();
  for (let k: u32 = 0; k < count; k++) {
    const e = list + <usize>k * MAP_LIST_ENTRY_SIZE;
    const st = buildMap<F>(ctx, load<u64>(e), load<u64>(e, 8), load<u64>(e, 16), prot);
    if (st == ST_OK) continue;
    for (let j: u32 = 0; j < k; j++) {
      const d = list + <usize>j * MAP_LIST_ENTRY_SIZE;
      removeLeaves<F>(ctx, load<u64>(d), load<u64>(d, 8));
    }
    undoTables();
    return st;
  }
  commitUndo<F>();
  return ST_OK;
}
