// The playground page: a mapping editor over a page table, a walk drawn level
// by level, and an IOTLB panel that moves while a synthetic device streams
// DMA. Everything runs on the built bundle, exactly as a user's page would.
//
// Every change to the format, the IOTLB geometry or the mappings builds a
// fresh host: the page-table frames (and so every table address drawn) then
// depend only on what is on screen, and the counters start from zero.
import { createHost } from "./iommu-wasm.js";
import { DEFAULTS, FORMATS, IOTLB_SIZES, PRESETS, RAM_SIZE } from "./presets.js";
import { decodeEntry } from "./entries.js";

const $ = (selector) => document.querySelector(selector);
const PAGE = 0x1000n;
const TICK_MS = 16;
const SAMPLE_MS = 250;

// ---------------------------------------------------------------- numbers

const hex = (v) => "0x" + v.toString(16);
const hex64 = (v) => "0x" + v.toString(16).padStart(16, "0");
const count = (n) => n.toLocaleString("en-US");

const SHIFTS = { K: 10n, M: 20n, G: 30n };

/** Hex (0x…), decimal, or a size such as 4K / 2M / 1GiB; underscores allowed. */
function parseNumber(text, what) {
  const t = text.trim().replace(/_/g, "").replace(/([kmg])i?b$/i, "$1");
  const m = /^(0x[0-9a-f]+|\d+)\s*([kmg])?$/i.exec(t);
  if (!m) throw new Error(`${what}: "${text}" is not a number (0x…, decimal, or 4K / 2M / 1G)`);
  return BigInt(m[1]) << (m[2] ? SHIFTS[m[2].toUpperCase()] : 0n);
}

/** 2 MiB, 12 KiB, 1 GiB; bytes otherwise. */
function sizeText(bytes) {
  for (const [unit, shift] of [["GiB", 30n], ["MiB", 20n], ["KiB", 10n]]) {
    const one = 1n << shift;
    if (bytes >= one && bytes % one === 0n) return `${bytes / one} ${unit}`;
  }
  return `${bytes} B`;
}

/** The short form the size inputs show: 12K, 2M, 1G. */
function sizeInput(bytes) {
  for (const [unit, shift] of [["G", 30n], ["M", 20n], ["K", 10n]]) {
    const one = 1n << shift;
    if (bytes >= one && bytes % one === 0n) return `${bytes / one}${unit}`;
  }
  return hex(bytes);
}

const permsText = (perms) => ["read", "write", "exec", "user"].filter((p) => perms[p]).join(" ");
// An IommuError's message starts with its errno name ("EEXIST: …"), which is what a user wants to see.
const errorText = (e) => (e instanceof Error ? e.message : String(e));

// ---------------------------------------------------------------- state

/** The host the page currently shows: rebuilt from the controls on every change. */
let current;
let generation = 0;
/** Walks drawn so far: a script that clicks Walk waits for this to move. */
let walks = 0;
/** Rebuilds run one after another, so a slow createHost cannot land after a newer one. */
let rebuilding = Promise.resolve();

const device = { streaming: false, timer: 0, transfers: 0, bytes: 0, faults: 0, reasons: new Map(), lastFault: undefined };

function resetDevice() {
  Object.assign(device, { transfers: 0, bytes: 0, faults: 0, reasons: new Map(), lastFault: undefined });
}

// ---------------------------------------------------------------- errors

/** Runs an event handler; a failure shows in the page instead of escaping as an uncaught error. */
function guarded(handler) {
  return (...args) => {
    try {
      const r = handler(...args);
      if (r && typeof r.catch === "function") r.catch(showError);
    } catch (e) {
      showError(e);
    }
  };
}

function showError(e) {
  const box = $("#error");
  box.textContent = `Something went wrong: ${errorText(e)}`;
  box.hidden = false;
}

// ---------------------------------------------------------------- mapping editor

const PERM_KEYS = ["read", "write", "exec", "user"];

function mappingRow(mapping) {
  const tr = document.createElement("tr");
  tr.className = "mapping";
  tr.innerHTML = `
    <td><input class="iova" spellcheck="false" size="14" aria-label="IOVA"></td>
    <td><input class="hpa" spellcheck="false" size="14" aria-label="HPA"></td>
    <td><input class="size" spellcheck="false" size="6" aria-label="size"></td>
    <td class="perms">${PERM_KEYS.map((p) => `<input type="checkbox" class="perm-${p}" aria-label="${p}" title="${p}">`).join("")}</td>
    <td class="row-status"></td>
    <td><button type="button" class="remove" title="remove this mapping" aria-label="remove">✕</button></td>`;
  tr.querySelector(".iova").value = hex(mapping.iova);
  tr.querySelector(".hpa").value = hex(mapping.hpa);
  tr.querySelector(".size").value = sizeInput(mapping.size);
  for (const p of PERM_KEYS) tr.querySelector(`.perm-${p}`).checked = Boolean(mapping.perms[p]);
  tr.querySelector(".remove").addEventListener("click", guarded(() => { tr.remove(); requestRebuild(); }));
  return tr;
}

function showMappings(mappings) {
  $("#mappings tbody").replaceChildren(...mappings.map(mappingRow));
}

/** Each row as a mapping, or with the reason it cannot be read. */
function readMappingRows() {
  return [...document.querySelectorAll("#mappings tbody tr")].map((tr) => {
    try {
      const perms = Object.fromEntries(PERM_KEYS.map((p) => [p, tr.querySelector(`.perm-${p}`).checked]));
      return {
        tr,
        iova: parseNumber(tr.querySelector(".iova").value, "IOVA"),
        hpa: parseNumber(tr.querySelector(".hpa").value, "HPA"),
        size: parseNumber(tr.querySelector(".size").value, "size"),
        perms,
      };
    } catch (e) {
      return { tr, error: errorText(e) };
    }
  });
}

function setRowStatus(tr, ok, text) {
  const cell = tr.querySelector(".row-status");
  cell.textContent = text;
  cell.className = `row-status ${ok ? "ok" : "bad"}`;
  cell.title = text;
}

// ---------------------------------------------------------------- building a host

function requestRebuild() {
  rebuilding = rebuilding.then(rebuild).catch(showError);
  return rebuilding;
}

async function rebuild() {
  const format = FORMATS[$("#format").value];
  const geometry = IOTLB_SIZES[$("#iotlb-size").value];
  const host = await createHost({ ramSize: RAM_SIZE, iotlb: geometry });
  const framesAtStart = host.ram.framesFree;
  const domain = host.createDomain(format.options);

  const mapped = [];
  for (const row of readMappingRows()) {
    if (row.error) { setRowStatus(row.tr, false, row.error); continue; }
    try {
      domain.pageTable.map(row.iova, row.hpa, row.size, row.perms);
      mapped.push(row);
      const beyond = row.hpa + row.size > host.ram.size;
      setRowStatus(row.tr, true, beyond ? "mapped · beyond RAM" : "mapped");
    } catch (e) {
      setRowStatus(row.tr, false, errorText(e));
    }
  }
  const tableFrames = framesAtStart - host.ram.framesFree;
  // The device reads into engine memory: a single copy, no staging.
  const buffer = host.allocBuffer(4096);
  current = { host, domain, format, geometry, mapped, buffer, generation: ++generation };

  resetDevice();
  resetChart();
  showHostInfo();
  const rows = document.querySelectorAll("#mappings tbody tr").length;
  $("#table-status").textContent =
    `${mapped.length} of ${rows} mapping${rows === 1 ? "" : "s"} applied · page table: ${tableFrames} frame${tableFrames === 1 ? "" : "s"} ` +
    `(${sizeText(BigInt(tableFrames) * PAGE)}), root at HPA ${hex(domain.root)}`;
  walkFromInput();
  // The test (and anyone scripting the page) waits on this: the host, the table status and the walk are in place.
  document.body.dataset.generation = String(current.generation);
}

function showHostInfo() {
  const { host, geometry } = current;
  $("#host-info").textContent =
    `host: ${sizeText(host.ram.size)} of RAM · IOTLB ${geometry.sets} sets × ${geometry.ways} ways (${host.iotlb.entries} entries) · engine ${host.engineFingerprint}`;
  Object.assign(document.body.dataset, { ramSize: String(host.ram.size), iotlbSets: String(geometry.sets), iotlbWays: String(geometry.ways) });
}

// ---------------------------------------------------------------- the walk

function accessRequest() {
  const kind = $("#access").value;
  return $("#privileged").checked ? { [kind]: true, privileged: true } : kind;
}

function walkFromInput() {
  const result = $("#walk-result");
  for (const key of ["hpa", "pageSize", "perms", "reason", "level", "stage"]) delete result.dataset[key];
  let iova;
  try {
    iova = parseNumber($("#iova").value, "IOVA");
    const walk = current.domain.walk(iova, accessRequest());
    drawWalk(iova, walk);
  } catch (e) {
    $("#walk tbody").replaceChildren();
    $("#iova-split").replaceChildren();
    result.textContent = errorText(e);
    result.className = "result bad";
    result.dataset.outcome = "error";
  }
  result.dataset.iova = iova === undefined ? "" : hex(iova);
  result.dataset.generation = String(current.generation);
  result.dataset.walk = String(++walks);
}

function drawWalk(iova, walk) {
  const { format } = current;
  drawSplit(iova, walk);
  $("#walk tbody").replaceChildren(...walk.steps.map((step) => stepRow(step, format, walk)));
  drawResult(walk, format);
}

/** One level of the walk: the table read, the index into it, the entry and what it says. */
function stepRow(step, format, walk) {
  const decoded = decodeEntry(format.family, step.level, step.entry);
  const table = step.entryAddress & ~0xfffn;
  const index = Number((step.entryAddress & 0xfffn) >> 3n);
  const faultedHere = walk.fault && walk.fault.level === step.level;
  const tr = document.createElement("tr");
  tr.className = `step ${decoded.kind}${faultedHere ? " fault" : ""}`;
  Object.assign(tr.dataset, { level: String(step.level), table: hex(table), index: String(index), entry: hex(step.entry) });
  tr.append(
    cell(format.levelNames[step.level], "level", `level ${step.level} (leaf = 0)`),
    cell(hex(table), "addr", `entry at ${hex(step.entryAddress)}`),
    cell(`${index}`, "index", `0x${index.toString(16).padStart(3, "0")}`),
    entryCell(step.entry, decoded.bits),
    cell(pointsTo(decoded, step.level, faultedHere ? walk.fault : undefined), "next"),
  );
  return tr;
}

function cell(text, className, title) {
  const td = document.createElement("td");
  td.textContent = text;
  td.className = className;
  if (title) td.title = title;
  return td;
}

/** The entry in hex, and under it every named bit: lit when set. */
function entryCell(entry, bits) {
  const td = document.createElement("td");
  td.className = "entry";
  const value = document.createElement("div");
  value.className = "hex";
  value.textContent = hex64(entry);
  const chips = document.createElement("div");
  chips.className = "bits";
  td.append(value, chips);
  for (const b of bits) {
    const chip = document.createElement("span");
    chip.className = b.on ? "bit on" : "bit";
    chip.textContent = b.name;
    chip.title = `${b.title}: ${b.on ? "set" : "clear"}`;
    chips.append(chip);
  }
  return td;
}

function pointsTo(decoded, level, fault) {
  if (fault) return `✕ ${fault.reason}`;
  if (decoded.kind === "table") return `table ${hex(decoded.next)}`;
  if (decoded.kind === "leaf") return `${sizeText(1n << BigInt(12 + 9 * level))} page ${hex(decoded.next)}`;
  return "not present";
}

function drawResult(walk, format) {
  const p = $("#walk-result");
  if (walk.fault) {
    const { reason, level, stage } = walk.fault;
    p.textContent = `✕ fault: ${reason} at level ${level} (${format.levelNames[level] ?? "?"}), stage ${stage}`;
    p.className = "result bad";
    Object.assign(p.dataset, { outcome: "fault", reason, level: String(level), stage: String(stage) });
    return;
  }
  const beyond = walk.hpa >= current.host.ram.size ? " · beyond RAM: a DMA there faults" : "";
  p.textContent = `→ HPA ${hex(walk.hpa)} · ${sizeText(walk.pageSize)} page · ${permsText(walk.perms)}${beyond}`;
  p.className = "result ok";
  Object.assign(p.dataset, { outcome: "ok", hpa: hex(walk.hpa), pageSize: hex(walk.pageSize), perms: permsText(walk.perms) });
}

/**
 * The IOVA cut into the walk's fields: one index per level (the levels the
 * walk reached are lit) and the page offset, which grows when the leaf is a
 * large page. Bits above the input size must be a sign extension (x86-64) or zero.
 */
function drawSplit(iova, walk) {
  const { format } = current;
  const levels = current.domain.format.levels;
  const inputBits = current.domain.format.inputBits;
  const leafLevel = walk.fault ? 0 : walk.steps[walk.steps.length - 1].level;
  const reached = new Set(walk.steps.map((s) => s.level));
  const parts = [];
  const upper = iova >> BigInt(inputBits);
  parts.push(splitPart(`${63}:${inputBits}`, upper === 0n ? "0" : hex(upper), "upper", upper !== 0n));
  for (let level = levels - 1; level >= leafLevel; level--) {
    const lo = 12 + 9 * level;
    const index = Number((iova >> BigInt(lo)) & 511n);
    parts.push(splitPart(`${lo + 8}:${lo}`, `${format.levelNames[level]} ${index}`, "index", reached.has(level)));
  }
  const offsetBits = 12 + 9 * leafLevel;
  parts.push(splitPart(`${offsetBits - 1}:0`, hex(iova & ((1n << BigInt(offsetBits)) - 1n)), "offset", !walk.fault));
  $("#iova-split").replaceChildren(...parts);
}

function splitPart(bits, text, kind, lit) {
  const span = document.createElement("span");
  span.className = `part ${kind}${lit ? " lit" : ""}`;
  const range = document.createElement("small");
  range.textContent = `bits ${bits}`;
  span.append(range, document.createTextNode(text));
  return span;
}

// ---------------------------------------------------------------- IOTLB panel

const chart = { history: [], last: undefined, lastSampleAt: 0 };
const shown = new Map();

function resetChart() {
  chart.history = [];
  chart.last = undefined;
  chart.lastSampleAt = 0;
}

/** Writes a counter only when it changed, so a steady page does no DOM work. */
function setCounter(name, text, value) {
  if (shown.get(name) === text) return;
  shown.set(name, text);
  const dd = document.querySelector(`[data-counter="${name}"]`);
  dd.textContent = text;
  if (value !== undefined) dd.dataset.value = String(value);
}

function refreshPanels(now) {
  if (current) {
    const stats = current.host.iotlb.stats();
    for (const key of ["hits", "misses", "walks", "evictions", "invalidations"]) setCounter(key, count(stats[key]), stats[key]);
    const lookups = stats.hits + stats.misses;
    setCounter("hitRate", lookups ? `${(100 * stats.hits / lookups).toFixed(1)} %` : "–");
    sample(now, stats);
    showOccupancy(now);
    setCounter("transfers", count(device.transfers), device.transfers);
    setCounter("bytes", bytesText(device.bytes), device.bytes);
    setCounter("faults", count(device.faults), device.faults);
    showDeviceFaults();
  }
  requestAnimationFrame(refreshPanels);
}

/** The live entries of every set, redrawn at most every SAMPLE_MS (a scan of the whole IOTLB). */
function showOccupancy(now) {
  if (now - occupancyAt < SAMPLE_MS && occupancyAt !== 0) return;
  occupancyAt = now;
  const live = current.host.iotlb.occupancy();
  const ways = current.host.iotlb.ways;
  const grid = $("#occupancy");
  if (grid.childElementCount !== live.length) {
    grid.replaceChildren(...Array.from(live, () => Object.assign(document.createElement("div"), { className: "set" })));
  }
  let total = 0;
  live.forEach((n, set) => {
    total += n;
    const cell = grid.children[set];
    if (cell.dataset.live === String(n)) return;
    cell.dataset.live = String(n);
    cell.style.opacity = n === 0 ? "" : String(0.25 + 0.75 * (n / ways));
    cell.title = `set ${set}: ${n} of ${ways} ways live`;
  });
  grid.dataset.total = String(total);
  $("#occupancy-total").textContent = `${total} of ${live.length * ways} entries live`;
}
let occupancyAt = 0;

function bytesText(bytes) {
  if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(2)} MiB`;
  return bytes >= 1024 ? `${(bytes / 1024).toFixed(1)} KiB` : `${bytes} B`;
}

/** Every SAMPLE_MS: the counters' change since the last sample, for the chart and the rates. */
function sample(now, stats) {
  if (now - chart.lastSampleAt < SAMPLE_MS) return;
  chart.lastSampleAt = now;
  if (chart.last) {
    const delta = (k) => stats[k] - chart.last[k];
    chart.history.push({ hits: delta("hits"), misses: delta("misses"), evictions: delta("evictions") });
    const capacity = Math.floor($("#iotlb-chart").width / 4);
    if (chart.history.length > capacity) chart.history.shift();
    drawChart();
    showRates();
  }
  chart.last = stats;
}

function showRates() {
  const recent = chart.history.slice(-4);
  const per = (k) => recent.reduce((sum, s) => sum + s[k], 0) / (recent.length * SAMPLE_MS / 1000);
  const rate = (v) => (v >= 1000 ? `${(v / 1000).toFixed(1)}k` : v.toFixed(0));
  $("#iotlb-rates").textContent = `last second: ${rate(per("hits"))} hits/s, ${rate(per("misses"))} misses/s, ${rate(per("evictions"))} evictions/s`;
}

function cssColor(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/** Bars of hits (below) and misses (above) per sample; evictions as a line over them. */
function drawChart() {
  const canvas = $("#iotlb-chart");
  const g = canvas.getContext("2d");
  const { width, height } = canvas;
  const top = 14, plot = height - top - 2;
  const colors = Object.fromEntries(["--hits", "--misses", "--evictions", "--muted"].map((name) => [name, cssColor(name)]));
  g.clearRect(0, 0, width, height);
  const peak = Math.max(1, ...chart.history.map((s) => s.hits + s.misses));
  const y = (v) => top + plot - (v / peak) * plot;
  const barWidth = 4;
  const x0 = width - chart.history.length * barWidth;
  chart.history.forEach((s, i) => {
    const x = x0 + i * barWidth;
    g.fillStyle = colors["--hits"];
    g.fillRect(x, y(s.hits), barWidth - 1, top + plot - y(s.hits));
    g.fillStyle = colors["--misses"];
    g.fillRect(x, y(s.hits + s.misses), barWidth - 1, y(s.hits) - y(s.hits + s.misses));
  });
  g.strokeStyle = colors["--evictions"];
  g.lineWidth = 1.5;
  g.beginPath();
  chart.history.forEach((s, i) => {
    const x = x0 + i * barWidth + barWidth / 2;
    if (i === 0) g.moveTo(x, y(s.evictions)); else g.lineTo(x, y(s.evictions));
  });
  g.stroke();
  g.fillStyle = colors["--muted"];
  g.font = "11px system-ui, sans-serif";
  g.fillText(`peak ${count(peak)} lookups per ${SAMPLE_MS} ms`, 4, 10);
}

// ---------------------------------------------------------------- the synthetic device

/** Reads at random pages of random mappings: a small transfer inside one 4 KiB page each. */
function deviceTick() {
  if (!current || current.mapped.length === 0) return;
  const { domain, mapped, buffer, host } = current;
  const transfers = Number($("#rate").value);
  const length = Number($("#transfer-size").value);
  const target = buffer.subarray(0, length);
  for (let i = 0; i < transfers; i++) {
    const iova = randomAddress(mapped[Math.floor(Math.random() * mapped.length)], length);
    const r = domain.dma.readInto(iova, target);
    device.transfers++;
    device.bytes += r.bytes;
    if (r.fault) {
      device.faults++;
      device.reasons.set(r.fault.reason, (device.reasons.get(r.fault.reason) ?? 0) + 1);
      device.lastFault = r.fault;
    }
  }
  // Each result already carries its fault; drain the ring so it never overflows.
  host.faults.drain();
}

function randomAddress(mapping, length) {
  const pages = Number(mapping.size / PAGE);
  const page = BigInt(Math.floor(Math.random() * pages));
  const slot = BigInt(Math.floor(Math.random() * (4096 / length)) * length);
  return mapping.iova + page * PAGE + slot;
}

function showDeviceFaults() {
  const text = device.faults === 0
    ? "no faults"
    : [...device.reasons].map(([reason, n]) => `${reason} × ${count(n)}`).join(" · ") +
      ` · last: ${device.lastFault.reason} at IOVA ${hex(device.lastFault.address)} (level ${device.lastFault.level})`;
  const p = $("#device-faults");
  if (p.textContent !== text) p.textContent = text;
}

function setStreaming(on) {
  device.streaming = on;
  clearInterval(device.timer);
  if (on) device.timer = setInterval(guarded(deviceTick), TICK_MS);
  const button = $("#stream");
  button.setAttribute("aria-pressed", String(on));
  button.textContent = on ? "Stop DMA" : "Stream DMA";
}

// ---------------------------------------------------------------- wiring

function fillSelect(select, choices, selected) {
  select.replaceChildren(...Object.entries(choices).map(([key, choice]) => {
    const label = choice.label ?? `${choice.sets} sets × ${choice.ways} ways (${choice.sets * choice.ways} entries)`;
    const option = new Option(label, key);
    option.selected = key === selected;
    return option;
  }));
}

function choosePreset(key) {
  const preset = PRESETS[key];
  showMappings(preset.mappings);
  $("#iova").value = hex(preset.walkAt);
  return requestRebuild();
}

function init() {
  fillSelect($("#format"), FORMATS, DEFAULTS.format);
  fillSelect($("#preset"), PRESETS, DEFAULTS.preset);
  fillSelect($("#iotlb-size"), IOTLB_SIZES, DEFAULTS.iotlb);
  $("#occupancy-note").textContent =
    "Each cell is a set, darker as more of its ways hold a live entry (host.iotlb.occupancy()). " +
    "An eviction means a fill found its set's ways all live; an invalidation empties cells at once.";

  $("#format").addEventListener("change", guarded(requestRebuild));
  $("#iotlb-size").addEventListener("change", guarded(requestRebuild));
  $("#preset").addEventListener("change", guarded(() => choosePreset($("#preset").value)));
  $("#mappings").addEventListener("change", guarded(requestRebuild));
  $("#add-mapping").addEventListener("click", guarded(() => {
    const rows = readMappingRows().filter((r) => !r.error);
    // A new 4 KiB page just past the highest mapping, on fresh RAM: valid as it stands.
    const end = rows.reduce((max, r) => (r.iova + r.size > max ? r.iova + r.size : max), 0x100000n);
    $("#mappings tbody").append(mappingRow({ iova: end, hpa: 0x3000000n, size: PAGE, perms: { read: true, write: true, user: true } }));
    return requestRebuild();
  }));
  $("#walk-form").addEventListener("submit", guarded((event) => {
    event.preventDefault();
    walkFromInput();
  }));
  $("#access").addEventListener("change", guarded(walkFromInput));
  $("#privileged").addEventListener("change", guarded(walkFromInput));
  $("#invalidate").addEventListener("click", guarded(() => current.host.iotlb.invalidateAll()));
  $("#stream").addEventListener("click", guarded(() => setStreaming(!device.streaming)));
  $("#rate").addEventListener("input", () => { $("#rate-value").value = $("#rate").value; });

  requestAnimationFrame(refreshPanels);
  return choosePreset(DEFAULTS.preset);
}

init().catch(showError);
