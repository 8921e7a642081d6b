// One adversarial run: a world, the model, and weighted random operations
// (ops-*.ts), each with hostile variants, each judged: control calls by
// guard.ts, DMA by oracle.ts. An operation chooses its operands, asks the
// model what the call must do, runs it, and on success moves the model on.
import type { VfioGroup } from "../../../src/index.js";
import { GuestAllocator } from "./allocator.js";
import { Guard } from "./guard.js";
import { Model, type BuilderTable } from "./model.js";
import { Oracle } from "./oracle.js";
import { randomDma, randomSg, randomStaleProbe } from "./ops-dma.js";
import {
  randomBuilderDestroy, randomBuilderMap, randomBuilderTable, randomBuilderUnmap, randomGuestWrite, randomHostileChain,
} from "./ops-guest.js";
import { randomBind, randomInvalidate, randomPasidAlloc, randomPasidFree, randomUnbind } from "./ops-pasid.js";
import {
  attach, openContainer, randomAttach, randomClose, randomDetach, randomReopen, randomSetIommu, randomStage2Map, randomStage2Unmap, setIommu,
} from "./ops-vmm.js";
import { Rng } from "./rng.js";
import { Tally } from "./tally.js";
import { CHUNK_BYTES, GROUPS, type World } from "./world.js";

type Operation = (s: Session) => void;

// The attack runs over a VMM that keeps doing its job (attaching groups, setting nesting up, binding
// the guest's tables), so there is always something live to attack and to judge exactly.
const OPERATIONS: readonly (readonly [number, Operation])[] = [
  [26, randomDma],
  [6, randomSg],
  [5, randomPasidAlloc],
  [2, randomPasidFree],
  [10, randomBind],
  [2, randomUnbind],
  [2, randomBuilderTable],
  [9, randomBuilderMap],
  [4, randomBuilderUnmap],
  [0.15, randomBuilderDestroy],
  [4, randomHostileChain],
  [1.5, randomGuestWrite],
  [7, randomInvalidate],
  [3, randomStaleProbe],
  [1.5, randomStage2Unmap],
  [5, randomStage2Map],
  [2, randomSetIommu],
  [3, randomAttach],
  [0.8, randomDetach],
  [0.1, randomClose],
  [1, randomReopen],
];

export class Session {
  readonly tally = new Tally();
  readonly model = new Model(GROUPS);
  readonly rng: Rng;
  readonly oracle: Oracle;
  readonly guard: Guard;
  readonly alloc: GuestAllocator;
  /** GVA pages PASID DMAs used lately through a builder table. */
  readonly touched: { table: BuilderTable; gva: bigint }[] = [];
  /** State divergences already reported (each once per run). */
  private readonly diverged = new Set<string>();

  constructor(readonly w: World, seed: number) {
    this.rng = new Rng(seed);
    this.oracle = new Oracle(w, this.model, this.tally);
    this.guard = new Guard(w, this.model, this.tally);
    this.alloc = new GuestAllocator(w, this.model, this.tally, this.rng);
  }

  /** The VMMs start as a VMM does: a container each, groups 0 and 1 in A's, group 2 in B's, nesting, stage 2, a guest table bound. */
  boot(): void {
    for (const owner of [0, 1]) openContainer(this, owner);
    const [cA, cB] = this.model.current;
    attach(this, 0, cA);
    attach(this, 1, cA);
    attach(this, 2, cB);
    for (const cm of [cA, cB]) setIommu(this, cm, "nesting");
  }

  step(): void {
    this.rng.weighted(OPERATIONS)(this);
    this.checkVisibleState();
  }

  /** After every step: groups, IOMMU types, mappings and held PASIDs are what the model says. */
  private checkVisibleState(): void {
    this.w.groups.forEach((g: VfioGroup, i) => {
      const cm = this.model.groupIn[i];
      if (g.container !== cm?.c) this.divergence(`group ${i}`, `group ${i} is in ${g.container ? "another container" : "no container"}, the model says ${cm?.name ?? "none"}`);
    });
    for (const cm of this.model.live()) {
      if (cm.c.iommuType !== cm.iommu) this.divergence(`${cm.name} type`, `${cm.name} has IOMMU ${String(cm.c.iommuType)}, the model says ${String(cm.iommu)}`);
      const maps = cm.c.mappings().map((m) => Number(m.iova / CHUNK_BYTES)).join();
      const want = cm.chunks.map((ch, i) => (ch ? i : -1)).filter((i) => i >= 0).join();
      if (maps !== want) this.divergence(`${cm.name} mappings`, `${cm.name} maps chunks [${maps}], the model says [${want}]`);
      const held = cm.c.pasid.held().join();
      const wantHeld = [...cm.pasids].sort((a, b) => a - b).join();
      if (held !== wantHeld) this.divergence(`${cm.name} PASIDs`, `${cm.name} holds PASIDs [${held}], the model says [${wantHeld}]`);
    }
  }

  /** Reports a state the model disagrees with, once per kind per run (it would repeat after every step). */
  divergence(key: string, what: string): void {
    if (this.diverged.has(key)) return;
    this.diverged.add(key);
    this.tally.note("wrongResult", "visible state", what);
  }
}
