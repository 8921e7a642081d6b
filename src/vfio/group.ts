// VFIO groups and their devices, as a user of /dev/vfio/N sees them. A group
// joins a container (SET_CONTAINER) only when viable; its devices DMA
// through the container's domain with their requester id, and a device of a
// group in no container (or a container with no IOMMU set) cannot DMA: the
// transfer faults with no data moved.
import { fail } from "../errors.js";
import { isInstance, show } from "../args.js";
import { PASID_TABLE_NONE } from "../engine/abi.js";
import type { DmaPort, DmaInterrupt } from "../dma.js";
import { Container, type BindPgtblOptions } from "./container.js";
import type { PasidTable } from "./pasid.js";
import type { Topology } from "./topology.js";

export interface Interrupt {
  /** The device's BDF. */
  device: string;
  /** The MSI address the device wrote (an IOVA). */
  address: bigint;
  /** The 32-bit MSI data. */
  data: number;
}

/** PCI requester id: bus << 8 | device << 3 | function (the segment is not part of it). */
export function requesterId(bdf: string): number {
  const [, bus, devfn] = bdf.split(":");
  const [dev, fn] = devfn.split(".");
  return (parseInt(bus, 16) << 8) | (parseInt(dev, 16) << 3) | parseInt(fn, 16);
}

/**
 * Builds a device's DMA port: DMA through the context `domainId()` names at
 * the time of each transfer (0: none), tagged with `sourceId`, calling
 * `raise` for each MSI. The host supplies it (the engine's DmaPort, or the
 * naive twin's port), so the group logic is written once.
 */
export type DmaPortFactory<Port = DmaPort> = (domainId: () => number, sourceId: number, raise: (interrupt: DmaInterrupt) => void,
  pasidTable: () => number) => Port;

export class VfioDevice<Port = DmaPort> {
  readonly requesterId: number;
  readonly dma: Port;
  /** @internal PASID → stage-1 context, made at the first bindPgtbl; a PASID-tagged DMA goes through it. */
  pasidTable: PasidTable | undefined;

  /** @internal */
  constructor(makePort: DmaPortFactory<Port>, readonly bdf: string, readonly group: VfioGroup<Port>, raise: (interrupt: Interrupt) => void) {
    this.requesterId = requesterId(bdf);
    this.dma = makePort(() => group.domainId(), this.requesterId,
      (irq: DmaInterrupt) => raise({ device: bdf, address: irq.address, data: irq.data }),
      // Only while the group is in a container with an IOMMU set: a device's PASID table never outlives its owner.
      () => (group.domainId() !== 0 ? this.pasidTable?.id : undefined) ?? PASID_TABLE_NONE);
  }

  /**
   * Binds a guest's stage-1 table to one PASID of this device (nesting
   * containers): only this device's requests with that PASID use it, walked
   * over the container's mappings as stage 2.
   */
  bindPgtbl(options: BindPgtblOptions): void {
    const c = this.group.container;
    if (!c) fail("EINVAL", `${this.bdf}: the group is not in a container`);
    c.bindStage1(this, options);
  }

  unbindPgtbl(pasid: number): void {
    const c = this.group.container;
    if (!c) fail("EINVAL", `${this.bdf}: the group is not in a container`);
    c.unbindStage1(this, pasid);
  }

  /** The IOVA the device writes to raise an MSI: VT-d's fixed window, or the doorbell mapped for sw-msi. */
  get msiAddress(): bigint | undefined {
    const c = this.group.container;
    if (!c || !c.domain) return undefined;
    return c.msiDoorbellIova ?? this.group.msiWindowStart;
  }
}

export class VfioGroup<Port = DmaPort> {
  private containerRef: Container | undefined;
  private readonly devices = new Map<string, VfioDevice<Port>>();
  private closed = false;

  /** @internal */
  constructor(private readonly makePort: DmaPortFactory<Port>, private readonly topology: Topology, readonly id: number,
    private readonly raise: (interrupt: Interrupt) => void, private readonly onClose: () => void) {}

  get container(): Container | undefined { return this.containerRef; }

  /** VFIO_GROUP_GET_STATUS: viable when every device is bound to vfio-pci or to nothing. */
  get viable(): boolean { return this.topology.viable(this.id); }

  /** @internal The domain a device's DMA goes through, or 0 (no context: the DMA faults). */
  domainId(): number {
    if (this.closed) fail("ENODEV", `group ${this.id} is closed`);
    return this.containerRef?.domain?.id ?? 0;
  }

  /** @internal */
  get msiWindowStart(): bigint | undefined {
    return this.topology.preset.hardwareReserved.find((r) => r.type === "msi")?.start;
  }

  private live(): void {
    if (this.closed) fail("ENODEV", `group ${this.id} is closed`);
  }

  /** VFIO_GROUP_SET_CONTAINER. */
  setContainer(container: Container): void {
    this.live();
    if (!isInstance(container, Container)) fail("EINVAL", `setContainer needs a Container (host.openContainer()), got ${show(container)}`);
    if (this.containerRef) fail("EINVAL", `group ${this.id} is already in a container`);
    if (this.topology.isHeld(this.id)) fail("EBUSY", `group ${this.id} is held by another owner (assigned to a VM)`);
    if (!this.viable) fail("EPERM", `group ${this.id} is not viable: a device is bound to a host driver`);
    container.attachGroup(this.id, { forget: () => this.leave() });
    this.containerRef = container;
    this.topology.claim(this.id, true);
  }

  /** VFIO_GROUP_UNSET_CONTAINER: the last group out releases every mapping. */
  unsetContainer(): void {
    this.live();
    const c = this.containerRef;
    if (!c) fail("EINVAL", `group ${this.id} is not in a container`);
    this.leave();
    c.detachGroup(this.id);
  }

  private leave(): void {
    this.containerRef = undefined;
    this.topology.claim(this.id, false);
  }

  /**
   * A device of this group (ENODEV for another). Unlike GET_DEVICE_FD it is
   * available before the group joins a container, so a model can show that
   * such a device's DMA is blocked: it faults with no data moved.
   */
  device(bdf: string): VfioDevice<Port> {
    this.live();
    const dev = this.topology.device(bdf);
    if (dev.group !== this.id) fail("ENODEV", `${dev.bdf} is not in group ${this.id}`);
    let d = this.devices.get(dev.bdf);
    if (!d) {
      d = new VfioDevice(this.makePort, dev.bdf, this, this.raise);
      this.devices.set(dev.bdf, d);
    }
    return d;
  }

  /** Closing the group fd leaves its container. */
  close(): void {
    if (this.closed) return;
    if (this.containerRef) this.unsetContainer();
    this.closed = true;
    this.onClose();
  }
}
