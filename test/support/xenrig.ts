// A Xen rig for the shadow tests: a host (engine or twin) whose hypervisor
// runs a GPU backend (dom0, a driver domain) serving one guest VM.
import { createHost, type DmaPort, type Host, type Vm } from "../../src/index.js";
import { createNaiveHost } from "../../bench/naive/index.js";

export const XEN_GPU = "0000:00:02.0";

export interface XenWorld { host: Host; hv: ReturnType<Host["hypervisor"]>; backend: Vm<DmaPort>; guest: Vm<DmaPort> }

export async function xenWorld(opts: { twin?: boolean; ram: number; backendPages: number; guestPages: number }): Promise<XenWorld> {
  const make = opts.twin ? createNaiveHost : createHost;
  const host = (await make({ ramSize: opts.ram })) as unknown as Host;
  host.addDevice({ bdf: XEN_GPU, driver: null });
  const hv = host.hypervisor();
  const backend = hv.createVm({ name: "dom0", memory: opts.backendPages * 4096, devices: [XEN_GPU] });
  const guest = hv.createVm({ name: "guest", memory: opts.guestPages * 4096 });
  return { host, hv, backend, guest };
}
