// The fuzz loop: pick a public member, pick a live object that has it, build
// its arguments (valid ones with one hostile), call it, and judge the outcome.
//
// A call may return, or refuse with an IommuError (a string errno code). It
// may not throw anything else, trap in WASM, or leave any trace when it
// refuses. Calls that succeed change state as they should; destroy, close,
// exit and friends kill objects, so the world is rebuilt every so often.
import { IommuError } from "../../../src/index.js";
import { changedKeys, facadeState, shadowRam, type FacadeState, type RamShadow } from "./fingerprint.js";
import { hostileValue, type HostileValue } from "./hostile.js";
import { Rng } from "./rng.js";
import { classMembers, objectMembers, type Member, type SourceFacts } from "./surface.js";
import { Tally, messageShape, type Example } from "./tally.js";
import { PREPARING, validArguments } from "./valid.js";
import { buildWorld, renewHost, type HostWorld, type Target, type World } from "./world.js";

export interface FuzzConfig {
  seed: number;
  calls: number;
  /** Calls between world rebuilds. */
  rebuildEvery: number;
  /** A call slower than this is a hang (sync code cannot be interrupted: it is only recorded). */
  hangMs: number;
  /** The package's exported functions (createHost), fuzzed as the target "module". */
  moduleFunctions: object;
}

/**
 * Most checks come after a liveness check, so hostile arguments to a dead
 * object test little. A host is rebuilt after a call that ends an object's
 * life, and the whole world after this many "it is gone" refusals (objects
 * that died another way: a closed container takes its guest tables along).
 */
const DEAD_LIMIT = 8;
/** Rounds of calling every member in turn before the weighted picks start. */
export const SWEEPS = 3;
const LIFE_ENDERS = new Set(["destroy", "close", "exit", "unsetContainer"]);

/**
 * How often a member is picked, in fifths: getters and methods without
 * parameters once, a method with parameters 2 + its arity times, since that
 * is where hostile values land. Ending an object's life costs a host rebuild
 * (tens of ms: most of a run's time), and destroy() or close() take no
 * argument to fuzz, so they get a fifth.
 */
function weight(m: Member): number {
  if (m.kind === "method" && LIFE_ENDERS.has(m.name)) return 1;
  return 5 * (m.kind === "getter" || m.arity === 0 ? 1 : 2 + Math.min(m.arity, 4));
}

/** The public members of every class in the world, enumerated on its first instance. */
export function enumerate(world: World, facts: SourceFacts): Map<string, Member[]> {
  const out = new Map<string, Member[]>();
  for (const [cls, targets] of world.byClass) {
    const obj = targets[0].obj;
    const plainApi = Object.getPrototypeOf(obj) === Object.prototype;
    out.set(cls, plainApi ? objectMembers(cls, obj) : classMembers(cls, obj, facts));
  }
  return out;
}

interface Plan {
  args: unknown[];
  /** The hostile argument's position, or -1 for a getter. */
  position: number;
  hostile: HostileValue | undefined;
  /** Whether the hostile argument replaced a valid options object (so accepting a misspelling there is a silent guess). */
  replacedOptions: boolean;
}

function isOptionsLike(value: unknown): boolean {
  if (Array.isArray(value)) return value.length > 0 && isOptionsLike(value[0]);
  return typeof value === "object" && value !== null && Object.getPrototypeOf(value) === Object.prototype;
}

/**
 * Arguments for one call: as many as the method declares (Function.length)
 * plus 0–2 extra; each position a valid value where the generator has one,
 * exactly one of them hostile. With no generator every argument is hostile.
 * Now and then the hostile value is a live object of another public class
 * (a group where a container is wanted), drawn from the same world.
 */
function plan(member: Member, target: Target, world: World, rng: Rng): Plan {
  if (member.kind === "getter") return { args: [], position: -1, hostile: undefined, replacedOptions: false };
  let valid: unknown[] | undefined;
  try {
    valid = validArguments(member.key, target, rng);
  } catch {
    valid = undefined; // the generator's own call was refused (a full arena, say): all hostile this time
  }
  const n = Math.max(1, member.arity) + (member.kind === "setter" ? 0 : rng.below(3));
  const position = rng.below(n);
  const args: unknown[] = [];
  let hostile: HostileValue | undefined;
  for (let k = 0; k < n; k++) {
    const here = valid !== undefined && k < valid.length ? valid[k] : undefined;
    const hasValid = valid !== undefined && k < valid.length;
    if (k === position || !hasValid) {
      const h = k === position && rng.chance(0.05) ? wrongObject(member, world, rng) : hostileValue(rng, here);
      if (k === position) hostile = h;
      args.push(h.value);
    } else {
      args.push(here);
    }
  }
  const replacedOptions = valid !== undefined && position < valid.length && isOptionsLike(valid[position]);
  return { args, position, hostile, replacedOptions };
}

function wrongObject(member: Member, world: World, rng: Rng): HostileValue {
  const other = rng.pick(world.targets.filter((t) => t.cls !== member.cls && t.cls !== "module"));
  return { value: other.obj, description: `a ${other.cls} (${other.label})`, kind: "plain" };
}

type Outcome =
  | { kind: "returned"; value: unknown }
  | { kind: "refused"; error: IommuError }
  | { kind: "threw"; error: unknown };

async function invoke(member: Member, target: Target, args: unknown[]): Promise<Outcome> {
  try {
    let value: unknown;
    const obj = target.obj as Record<string, unknown>;
    if (member.kind === "getter") value = obj[member.name];
    else if (member.kind === "setter") obj[member.name] = args[0];
    else value = (obj[member.name] as (...a: unknown[]) => unknown).apply(obj, args);
    // createHost is async: its refusals arrive as rejections.
    if (value instanceof Promise) value = await value;
    return { kind: "returned", value };
  } catch (error) {
    return isIommuError(error) ? { kind: "refused", error } : { kind: "threw", error };
  }
}

function isIommuError(e: unknown): e is IommuError {
  return e instanceof IommuError && typeof e.code === "string" && /^E[A-Z]+$/.test(e.code);
}

/** Reading an error must not throw either: a revoked proxy or a symbol could be what was thrown. */
function errorParts(e: unknown): { name: string; message: string; frame?: string } {
  try {
    const name = (e as { constructor?: { name?: string } })?.constructor?.name ?? typeof e;
    const message = e instanceof Error ? e.message : String(e);
    const stack = e instanceof Error ? e.stack ?? "" : "";
    const frame = stack.split("\n").map((l) => /(src\/[^\s():]+:\d+)/.exec(l)?.[1]).find((f) => f !== undefined);
    return { name, message: message.split("\n")[0], frame };
  } catch {
    return { name: "unreadable", message: "a thrown value that cannot be read" };
  }
}

/** One seed's run. */
export class FuzzRun {
  readonly tally = new Tally();
  private readonly rng: Rng;
  private world!: World;
  private shadows = new Map<HostWorld, RamShadow>();
  private dead = 0;
  /** Whether the last refusal left RAM as the shadow has it (then the shadow needs no resync). */
  private ramClean = false;
  /** A host on which a call just ended some object's life: rebuilt before the next call. */
  private spent: HostWorld | undefined;
  private readonly flat: Member[];
  /** Running sums of the members' weights, for a weighted pick. */
  private readonly cumulative: number[];

  constructor(private readonly config: FuzzConfig, members: Map<string, Member[]>) {
    this.rng = new Rng(config.seed);
    this.flat = [...members.values()].flat();
    let sum = 0;
    this.cumulative = this.flat.map((m) => (sum += weight(m)));
  }

  /**
   * The first SWEEPS × (members) calls go through every member in turn, so
   * each is called a few times whatever the size of the run; after that the
   * pick is weighted.
   */
  private pickMember(call: number): Member {
    if (call < SWEEPS * this.flat.length) return this.flat[call % this.flat.length];
    const total = this.cumulative[this.cumulative.length - 1];
    const x = this.rng.below(total);
    let lo = 0;
    while (this.cumulative[lo] <= x) lo++;
    return this.flat[lo];
  }

  private async rebuild(): Promise<void> {
    const started = performance.now();
    this.world = await buildWorld(this.config.moduleFunctions);
    this.shadows = new Map(this.world.hosts.map((h) => [h, shadowRam(h)]));
    this.dead = 0;
    this.tally.rebuilds += this.world.hosts.length;
    this.tally.rebuildMs += performance.now() - started;
  }

  private async renew(home: HostWorld): Promise<void> {
    const started = performance.now();
    this.world = await renewHost(this.world, home, this.config.moduleFunctions);
    const fresh = this.world.hosts.find((h) => h.arch === home.arch)!;
    this.shadows.delete(home);
    this.shadows.set(fresh, shadowRam(fresh));
    this.tally.rebuilds++;
    this.tally.rebuildMs += performance.now() - started;
  }

  async run(): Promise<Tally> {
    for (let call = 0; call < this.config.calls; call++) {
      if (call % this.config.rebuildEvery === 0 || this.dead >= DEAD_LIMIT) await this.rebuild();
      else if (this.spent) await this.renew(this.spent);
      this.spent = undefined;
      await this.one(call);
    }
    return this.tally;
  }

  private async one(call: number): Promise<void> {
    const member = this.pickMember(call);
    const target = this.rng.pick(this.world.byClass.get(member.cls)!);
    const p = plan(member, target, this.world, this.rng);
    const home = target.home;
    const shadow = home ? this.shadows.get(home) : undefined;
    if (shadow && PREPARING.has(member.key)) shadow.resync();
    const before = home ? facadeState(home) : undefined;

    const started = performance.now();
    const outcome = await invoke(member, target, p.args);
    const ms = performance.now() - started;

    this.tally.called(member.key);
    if (ms > this.tally.slowest.ms) this.tally.slowest = { ms, method: member.key };
    const example = (detail: string, frame?: string): Example => ({
      seed: this.config.seed, call, target: target.label, method: member.key, position: p.position,
      argument: p.hostile?.description ?? "(getter)", detail, frame,
    });
    if (ms > this.config.hangMs) this.tally.finding("hang", member.key, example(`took ${ms.toFixed(0)} ms`));

    switch (outcome.kind) {
      case "returned":
        this.tally.count("returned");
        this.judgeAcceptance(member, p, example);
        // Mostly rebuilt at once; now and then the dead object stays, so calls on dead objects are fuzzed too.
        if (home && LIFE_ENDERS.has(member.name) && this.rng.chance(0.75)) this.spent = home;
        break;
      case "refused":
        this.tally.count("refused");
        this.tally.errno(outcome.error.code);
        if (outcome.error.code === "ENODEV") this.dead++;
        if (home && shadow && before) this.judgeRefusal(member, outcome.error, home, shadow, before, example);
        break;
      case "threw":
        this.judgeThrow(member, outcome.error, example);
        break;
    }
    // Whatever happened is now the state the next call starts from (a no-op after a clean refusal, already compared).
    if (outcome.kind !== "refused" || !this.ramClean) shadow?.resync();
  }

  /** A refusal must leave everything as it was; a batch that says how many entries it processed may keep those. */
  private judgeRefusal(member: Member, error: IommuError, home: HostWorld, shadow: RamShadow, before: FacadeState,
    example: (detail: string) => Example): void {
    const changed = changedKeys(before, facadeState(home));
    this.ramClean = shadow.same();
    const ram = this.ramClean ? -1 : shadow.firstDifference();
    if (ram >= 0) changed.unshift(`RAM`);
    if (changed.length === 0) return;
    if ((error.processed ?? 0) > 0) {
      this.tally.count("partial batch (documented)");
      return;
    }
    const where = ram >= 0 ? ` (first changed byte at HPA 0x${ram.toString(16)})` : "";
    this.tally.finding("state change after refusal", `${member.key} | ${error.code} | changed: ${changed.join(", ")}`,
      example(`${error.code} after changing ${changed.join(", ")}${where}: ${error.message}`));
  }

  private judgeThrow(member: Member, error: unknown, example: (detail: string, frame?: string) => Example): void {
    const { name, message, frame } = errorParts(error);
    if (error instanceof WebAssembly.RuntimeError) {
      this.tally.finding("trap", `${member.key} | ${messageShape(message)}`, example(`${name}: ${message}`, frame));
      this.dead = DEAD_LIMIT; // the engine may be inconsistent after a trap: start afresh
      return;
    }
    this.tally.finding("raw exception", `${member.key} | ${name}: ${messageShape(message)}`, example(`${name}: ${message}`, frame));
  }

  /** A misspelled key or wrong-typed value in an options object should be refused, not ignored or coerced. */
  private judgeAcceptance(member: Member, p: Plan, example: (detail: string) => Example): void {
    if (!p.hostile || !p.replacedOptions) return;
    const shape = messageShape(p.hostile.description);
    if (p.hostile.kind === "misspelled") this.tally.finding("accepted a misspelled option", `${member.key} | ${shape}`, example("returned normally"));
    if (p.hostile.kind === "wrong-type") this.tally.finding("accepted a wrong-typed option", `${member.key} | ${shape}`, example("returned normally"));
  }
}
