// A VM's grant table: page-by-page consent for one other domain to map one
// of its frames. A grant cannot be revoked while mapped (EBUSY, as Xen's
// gnttab_end_foreign_access refuses an entry in use).
import type { Vm } from "./vm.js";

/** One grant entry. */
export interface Grant {
  readonly ref: number;
  /** The domain allowed to map it. */
  readonly to: Vm;
  readonly gfn: number;
  readonly readOnly: boolean;
  /** Backend table pages mapping it now. */
  maps: number;
}
