// The host's mediated devices: created on a parent its vendor driver drives
// (driver 'host'), each with a UUID unique on the host (EEXIST) and an
// emulated IOMMU group of its own.
import { fail } from "../errors.js";
import { options, show } from "../args.js";
import type { Topology } from "../vfio/topology.js";
import { Mdev, type MdevHost } from "./mdev.js";

export interface MdevSpec {
  /** The parent device's BDF; its vendor driver (driver 'host') makes the mdev. */
  parent: string;
  /** Default: the next of 00000000-0000-4000-8000-000000000001, … */
  uuid?: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class MdevRegistry {
  private readonly byUuid = new Map<string, Mdev>();
  private readonly byGroup = new Map<number, Mdev>();
  private made = 0;

  constructor(private readonly topology: Topology, private readonly host: Omit<MdevHost, "remove">) {}

  create(given: MdevSpec): Mdev {
    if (given === undefined) fail("EINVAL", "createMdev: give { parent }");
    const spec = options(given, "mdev spec", ["parent", "uuid"] as const) as MdevSpec;
    const parent = this.topology.device(spec.parent);
    if (parent.driver !== "host") fail("ENODEV", `${parent.bdf} is not an mdev parent: no vendor driver is bound (driver ${show(parent.driver)})`);
    let uuid: string;
    if (spec.uuid === undefined) {
      do uuid = `00000000-0000-4000-8000-${(++this.made).toString(16).padStart(12, "0")}`; while (this.byUuid.has(uuid));
    } else {
      if (typeof spec.uuid !== "string" || !UUID.test(spec.uuid)) fail("EINVAL", `createMdev: uuid must be 8-4-4-4-12 hex digits, got ${show(spec.uuid)}`);
      uuid = spec.uuid.toLowerCase();
      if (this.byUuid.has(uuid)) fail("EEXIST", `an mdev ${uuid} already exists`);
    }
    const group = this.topology.addEmulatedGroup();
    const mdev = new Mdev({ ...this.host, remove: (m) => this.forget(m) }, uuid, parent.bdf, group);
    this.byUuid.set(uuid, mdev);
    this.byGroup.set(group, mdev);
    return mdev;
  }

  /** The mdevs, oldest first. */
  all(): Mdev[] { return [...this.byUuid.values()]; }

  /** The devices of an emulated group (one mdev each). */
  ofGroup(group: number): Mdev[] {
    const m = this.byGroup.get(group);
    return m ? [m] : [];
  }

  private forget(m: Mdev): void {
    this.byUuid.delete(m.uuid);
    this.byGroup.delete(m.group);
    this.topology.removeEmulatedGroup(m.group);
  }
}
