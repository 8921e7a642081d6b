// A stage 1 whose tables are host-physical, over a stage 2: what a GPU does
// with its GGTT. The GPU reads the table straight from host memory, and what
// an entry holds is an IOVA that then goes through the system IOMMU's domain.
// So the stage-1 walk reads its tables at HPAs (no stage-2 translation of
// table reads or accessed/dirty stores), and only its output is translated
// through stage 2, with the access asked for.
//
// Otherwise it follows the nested walk's rules (walk/walker.ts): a fault says
// which stage it happened in (walkStage), the permissions are both stages'
// (an AND) and the page size the smaller of the two; the IOTLB tags the
// result with the combined context, whose stage-2 link makes its entries die
// with any stage-2 invalidation (the nest epoch, tlb/iotlb.ts liveFrom).
import { walkIn, combineStages, walkHpa, walkSizeLog, walkPerms, walkLevel, walkStage, NoStage2, WALK_UPDATE_AD } from "./walker";
import { ST_OK } from "../abi";

// ctx: the stage-1 context (format F, tables in RAM); s2: its stage 2 (format G).
export function walkPhys<F, G>(ctx: usize, s2: usize, iova: u64, access: u32, mode: u32): u32 {
  const st = walkIn<F, NoStage2>(ctx, iova, access, mode, 0);
  if (st != ST_OK) return st;
  const s1SizeLog = walkSizeLog, s1Perms = walkPerms, s1Level = walkLevel;
  // The stage-2 walk records no trace: a probe's steps are stage 1's, as for a nested walk.
  const st2 = walkIn<G, NoStage2>(s2, walkHpa, access, mode & WALK_UPDATE_AD, 0);
  if (st2 != ST_OK) { walkStage = 2; return st2; }
  combineStages(s1Perms, s1SizeLog, s1Level);
  return ST_OK;
}
