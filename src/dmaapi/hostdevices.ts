// Devices a host driver owns: each IOMMU group's default domain (the arch's
// stage-2 format, made when first needed, as the kernel gives every group
// one at probe), the DMA API on it (dma-iommu's cookie: the domain, its IOVA
// allocator, the live mappings), and each device's own DMA port through it.
// A device with no IOMMU in front has dma-direct instead, and its port goes
// through the identity context: one stage-2 context for the whole host that
// maps all of RAM 1:1 with the largest leaves, so its DMA takes the same walk,
// IOTLB and fast paths as any other and faults beyond RAM.
//
// Who owns a device's DMA: its group in a VFIO container → VFIO (EBUSY);
// bound to vfio-pci → VFIO too (EBUSY); no driver → nobody (ENODEV); bound to
// a host driver → that driver, through the DMA API. A host driver cannot let
// go of a device while its DMA API (the group's, through an IOMMU) still has
// live mappings (EBUSY): the mappings would outlive the driver that made them.
import { fail } from "../errors.js";
import { PAGE_SIZE } from "../addr.js";
import type { PageTableOptions } from "../format.js";
import { stage2Options } from "../vfio/arch.js";
import { requesterId } from "../vfio/group.js";
import type { HostDevice, Topology } from "../vfio/topology.js";
import type { DmaInterrupt } from "../dma.js";
import type { DataPlane } from "../vfio/plane.js";
import * as abi from "../engine/abi.js";
import { DmaApi, protOf } from "./dmaapi.js";
import { DmaCookie, IommuMapper, type DmaApiDomain, type IovaAllocator } from "./iommu.js";
import { DirectMapper } from "./direct.js";

export interface HostDmaEnv<Port> {
  topology: Topology;
  ramSize: bigint;
  /** A default domain, or the identity context (its id: the data plane maps, unmaps and flushes it). */
  createDomain(options: PageTableOptions): { readonly id: number; destroy(): void };
  plane: Pick<DataPlane, "mapRange" | "mapList" | "unmapRange" | "flushRange" | "setMsiWindow">;
  /** An IOVA allocator whose lowest page is `startPfn` (iova.c's, or the twin's). */
  makeIova(startPfn: bigint): IovaAllocator;
  makePort(domainId: () => number, sourceId: number, raise: (irq: DmaInterrupt) => void): Port;
  raise(device: string, irq: DmaInterrupt): void;
}

export class HostDma<Port> {
  private readonly cookies = new Map<number, DmaCookie>();
  private readonly apis = new Map<string, DmaApi>();
  private readonly ports = new Map<string, Port>();
  /** dma-direct of each device with no IOMMU (its live mappings are its own). */
  private readonly directs = new Map<string, DirectMapper>();
  /** The identity context of devices with no IOMMU (0 until the first such device). */
  private identityId = 0;
  /** The domains this made (default domains, the identity context), by context id: what a device's own MMU may translate over. */
  private readonly domains = new Map<number, object>();

  constructor(private readonly env: HostDmaEnv<Port>) {}

  /** host.dmaApi(bdf): the DMA API of a device a host driver owns. */
  dmaApi(bdf: string): DmaApi {
    const device = this.env.topology.device(bdf);
    this.checkOwned(device);
    let api = this.apis.get(device.bdf);
    if (api === undefined) {
      const group = device.group;
      const mapper = group === null ? this.direct(device.bdf) : new IommuMapper(this.cookie(group));
      api = new DmaApi(device.bdf, mapper, this.env.ramSize, device.dmaMask, () => this.checkOwned(device));
      this.apis.set(device.bdf, api);
    }
    return api;
  }

  /**
   * The device's DMA as it issues it: through its group's default domain
   * while a host driver owns it, nowhere (faults) otherwise; with no IOMMU,
   * through the identity context whoever owns it.
   */
  port(device: HostDevice): Port {
    let port = this.ports.get(device.bdf);
    if (port === undefined) {
      const topology = this.env.topology;
      const group = device.group;
      port = this.env.makePort(
        group === null ? () => this.identityId
          : () => (device.driver === "host" && !topology.isClaimed(group) ? this.cookie(group).domain.id : 0),
        requesterId(device.bdf),
        (irq) => this.env.raise(device.bdf, irq),
      );
      this.ports.set(device.bdf, port);
    }
    return port;
  }

  /**
   * The domain a DMA API's addresses go through (the group's default domain,
   * or the identity context of a device with no IOMMU): a device's own MMU
   * (a GPU's GTT) translates into it.
   */
  domainOf(api: DmaApi): object | undefined { return this.domains.get(api.domainId === 0 ? this.identityId : api.domainId); }

  /** Whether the device's DMA API (its group's, through an IOMMU) holds live mappings: a host driver may not let go of the device then. */
  busy(device: HostDevice): boolean {
    const records = device.group === null ? this.directs.get(device.bdf)?.records : this.cookies.get(device.group)?.records;
    return (records?.size ?? 0) > 0;
  }

  /**
   * The identity context, made with the first device that has no IOMMU: all
   * of RAM mapped 1:1, readable and writable, with the largest leaves that
   * fit (1 GiB where RAM allows). Its tables take frames of RAM as any page
   * table does (ENOMEM, nothing changed, when there are none). VT-d's
   * interrupt window is decoded as on a domain: without an IOMMU a write to
   * 0xfeexxxxx is still an interrupt request, not memory.
   */
  prepareDirect(): void {
    if (this.identityId !== 0) return;
    const preset = this.env.topology.preset;
    const domain = this.env.createDomain(stage2Options(preset));
    if (this.env.plane.mapRange(domain.id, 0n, this.env.ramSize - 1n, 0n, protOf("bidirectional")) !== abi.ST_OK) {
      domain.destroy();
      fail("ENOMEM", "no frame is left for the identity page table of a device with no IOMMU");
    }
    this.domains.set(domain.id, domain);
    const msi = preset.hardwareReserved.find((r) => r.type === "msi");
    if (msi) this.env.plane.setMsiWindow(domain.id, msi.start, msi.end);
    this.identityId = domain.id;
  }

  private direct(bdf: string): DirectMapper {
    const mapper = new DirectMapper();
    this.directs.set(bdf, mapper);
    return mapper;
  }

  private checkOwned(device: HostDevice): void {
    if (device.group !== null && this.env.topology.isHeld(device.group)) fail("EBUSY", `${device.bdf}: group ${device.group} is assigned to a VM; its DMA is that VM's`);
    if (device.group !== null && this.env.topology.isClaimed(device.group)) fail("EBUSY", `${device.bdf}: group ${device.group} is in a VFIO container; its DMA is VFIO's`);
    if (device.driver === "vfio-pci") fail("EBUSY", `${device.bdf}: bound to vfio-pci; its DMA is VFIO's (bind it to a host driver for the DMA API)`);
    if (device.driver !== "host") fail("ENODEV", `${device.bdf}: no driver is bound, so it has no DMA API`);
  }

  /**
   * The group's default domain and its IOVA allocator: every reserved region
   * but sw-msi is kept out of the allocator (iova_reserve_iommu_regions;
   * sw-msi is the DMA layer's own to manage), and VT-d's interrupt window is
   * decoded by the domain.
   */
  private cookie(group: number): DmaCookie {
    let cookie = this.cookies.get(group);
    if (cookie === undefined) {
      const { topology } = this.env;
      const preset = topology.preset;
      const made = this.env.createDomain(stage2Options(preset));
      const id = made.id;
      this.domains.set(id, made);
      const plane = this.env.plane;
      const domain: DmaApiDomain = {
        id,
        map: (iova, last, hpa, prot) => plane.mapRange(id, iova, last, hpa, prot),
        mapList: (entries, prot) => plane.mapList(id, entries, prot),
        unmap: (iova, last) => plane.unmapRange(id, iova, last),
        flush: (iova, last) => plane.flushRange(id, iova, last),
      };
      const iova = this.env.makeIova(preset.aperture.start / PAGE_SIZE > 1n ? preset.aperture.start / PAGE_SIZE : 1n);
      for (const r of topology.reservedRegions(group)) {
        if (r.type !== "sw-msi") iova.reserve(r.start / PAGE_SIZE, r.end / PAGE_SIZE);
      }
      const msi = preset.hardwareReserved.find((r) => r.type === "msi");
      if (msi) plane.setMsiWindow(id, msi.start, msi.end);
      cookie = new DmaCookie(domain, iova, preset.aperture.end);
      this.cookies.set(group, cookie);
    }
    return cookie;
  }
}
