// `reserved`: a host topology (IOMMU, devices, groups, firmware regions)
// from JSON, and what sysfs would show for it: each group's
// reserved_regions, and the IOVA ranges left for DMA.
import { readFileSync } from "node:fs";
import { createHost } from "../../dist/iommu-wasm.js";
import { CliError, fileError, parseAddress, parseCommand } from "./args.mjs";
import { hex, sizeText, toJson } from "./text.mjs";

export const RESERVED_HELP = `usage: iommu-wasm reserved TOPOLOGY.json [--json]

Reads a host topology (a file, or - for stdin) and prints each IOMMU group's
/sys/kernel/iommu_groups/N/reserved_regions, then the IOVA ranges a
container holding every group could map (the aperture minus every
non-relaxable reserved region).

  --json            print JSON instead of text

TOPOLOGY.json (addresses as "0x..." strings or numbers; end is inclusive):
  {
    "arch": "vtd",                       vtd (default) or smmuv3
    "addressWidth": 48,                  vtd: 39, 48 or 57; smmuv3: 32..48
    "devices": [
      { "bdf": "0000:01:00.0", "group": 0,
        "reserved": [{ "start": "0xe0000", "size": "0x20000", "type": "direct" }] }
    ],
    "platformReserved": [{ "start": "0xfed00000", "end": "0xfed003ff", "type": "reserved" }]
  }
  device keys: bdf, group (default: a group of its own), reserved, msiIsolated, driver
  region types: direct, direct-relaxable, reserved, msi, sw-msi`;

const TOP_KEYS = ["arch", "addressWidth", "devices", "platformReserved"];
const DEVICE_KEYS = ["bdf", "group", "reserved", "msiIsolated", "driver"];
const REGION_KEYS = ["start", "end", "size", "type"];

export async function reservedCommand(argv) {
  const { values, positionals } = parseCommand(argv, { json: { type: "boolean" }, help: { type: "boolean", short: "h" } });
  if (values.help) return RESERVED_HELP;
  const [path, ...extra] = positionals;
  if (path === undefined) throw new CliError("no topology file given (see --help)");
  if (extra.length > 0) throw new CliError(`unexpected argument ${JSON.stringify(extra[0])} (see --help)`);
  const topology = readTopology(path);

  const host = await createHost({
    // No RAM is used: the topology is all this command asks about.
    ramSize: 4096, iotlb: { sets: 16, ways: 1 }, faultRingSize: 16, bufferArenaSize: 0,
    arch: topology.arch, addressWidth: topology.addressWidth, platformReserved: topology.platformReserved,
  });
  for (const device of topology.devices) host.addDevice(device);

  const groups = host.iommuGroups().map((group) => ({
    group,
    devices: host.devicesOf(group).map((d) => d.bdf),
    reservedRegions: host.reservedRegions(group),
    reservedRegionsText: host.reservedRegionsText(group),
  }));
  const usableRanges = host.usableRanges();
  if (values.json) return toJson({ arch: host.arch, aperture: host.aperture, groups, usableRanges });
  return reservedText(host, groups, usableRanges);
}

function readTopology(path) {
  const name = path === "-" ? "on stdin" : path;
  let text;
  try {
    text = readFileSync(path === "-" ? 0 : path, "utf8");
  } catch (e) {
    throw fileError("topology", path, e);
  }
  let json;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new CliError(`topology ${name} is not valid JSON: ${e.message}`);
  }
  return topologySpec(json, name);
}

/** The JSON as createHost and addDevice take it, with addresses as bigints and unknown keys refused. */
function topologySpec(json, name) {
  if (json === null || typeof json !== "object" || Array.isArray(json)) throw new CliError(`topology ${name} must be a JSON object`);
  checkKeys(json, TOP_KEYS, "topology");
  const devices = json.devices ?? [];
  if (!Array.isArray(devices)) throw new CliError("topology: devices must be an array");
  return {
    arch: json.arch,
    addressWidth: json.addressWidth,
    platformReserved: regionList(json.platformReserved, "platformReserved"),
    devices: devices.map((d, i) => {
      const what = `device ${i}`;
      if (d === null || typeof d !== "object" || Array.isArray(d)) throw new CliError(`${what} must be an object with a bdf`);
      checkKeys(d, DEVICE_KEYS, what);
      return d.reserved === undefined ? d : { ...d, reserved: regionList(d.reserved, `${what} (${d.bdf}) reserved`) };
    }),
  };
}

function regionList(list, what) {
  if (list === undefined) return undefined;
  if (!Array.isArray(list)) throw new CliError(`${what} must be an array of regions`);
  return list.map((r, i) => {
    if (r === null || typeof r !== "object" || Array.isArray(r)) throw new CliError(`${what} region ${i} must be an object { start, end | size, type }`);
    checkKeys(r, REGION_KEYS, `${what} region ${i}`);
    const region = { ...r };
    for (const key of ["start", "end", "size"]) {
      if (r[key] !== undefined) region[key] = toAddress(r[key], `${what} region ${i} ${key}`);
    }
    return region;
  });
}

/** JSON numbers lose precision past 2^53, so large addresses come as "0x..." strings. */
function toAddress(value, what) {
  if (typeof value === "string") return parseAddress(value, what);
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  throw new CliError(`${what} must be a "0x..." string or a non-negative integer below 2^53, got ${JSON.stringify(value)}`);
}

function checkKeys(object, known, what) {
  const unknown = Object.keys(object).find((k) => !known.includes(k));
  if (unknown !== undefined) throw new CliError(`${what}: unknown key ${JSON.stringify(unknown)} (known: ${known.join(", ")})`);
}

const u64Field = (v) => "0x" + v.toString(16).padStart(16, "0");

function reservedText(host, groups, usableRanges) {
  const { start, end } = host.aperture;
  const lines = [`${host.arch}, aperture ${hex(start)}-${hex(end)}`];
  for (const g of groups) {
    lines.push("", `/sys/kernel/iommu_groups/${g.group}/reserved_regions (${g.devices.join(", ")}):`);
    lines.push(g.reservedRegionsText.trimEnd() || "(empty)");
  }
  lines.push("", groups.length > 1 ? "usable IOVA ranges (all groups in one container):" : "usable IOVA ranges:");
  if (usableRanges.length === 0) lines.push("(none)");
  for (const r of usableRanges) lines.push(`${u64Field(r.start)} ${u64Field(r.end)}  ${sizeText(r.end - r.start + 1n)}`);
  return lines.join("\n");
}
