// scopeline view: the page. Talks to the JSON API of scopeline.view.app (same origin, token in a cookie).
"use strict";

const $ = (id) => document.getElementById(id);
const LABEL_COLOURS = { accepted: "#3ddc84", rejected: "#ff5c5c", dendrite: "#4fc3f7", artifact: "#e040fb",
  duplicate: "#ffab40", neuropil: "#a1887f", noise: "#90a4ae", unsure: "#ffee58", cell: "#3ddc84" };
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

const view = {
  result: null,        // the result's summary (GET /api/result/ID)
  byId: new Map(),     // unit_id -> unit of the summary
  unit: null,          // the open unit's id
  unitData: null,      // GET .../unit/ID
  image: new Image(),
  paths: new Map(),    // unit_id -> Path2D of its contour, in image pixels
  pending: { accept: new Set(), reject: new Set(), labels: new Map(), merges: [] },
  mergeGroup: [],
  clipTimer: null,
  firstPaint: null,    // ms from navigation start to the first drawn result (benchmark reads it)
  unitShown: null,     // ms the last unit took from its click to its traces drawn
};
window.scopelineView = view;

async function api(path, options) {
  const reply = await fetch(path, options);
  const body = await reply.json().catch(() => ({ error: reply.statusText }));
  if (!reply.ok) throw new Error(body.error || reply.statusText);
  return body;
}

function status(text, bad) {
  $("pending").textContent = text;
  $("pending").style.color = bad ? "#ff5c5c" : "";
}

// ------------------------------------------------------------------ browsing

async function loadResults() {
  const { results } = await api("/api/results");
  const box = $("results");
  box.innerHTML = "";
  if (!results.length) { box.textContent = "no CNMF result in this database yet (scopeline run ...)"; return results; }
  let subject = null, session = null;
  for (const r of results) {
    if (r.subject !== subject) { subject = r.subject; session = null; box.append(el("div", "subject", subject)); }
    if (r.session !== session) { session = r.session; box.append(el("div", "session", session)); }
    const paramsets = Object.keys(r).filter((k) => k.endsWith("_paramset")).map((k) => r[k]);
    const item = el("div", "result", `rec ${r.recording_id} · ${[...new Set(paramsets)].join("/")} · ${r.n_accepted}/${r.n_units}`);
    item.dataset.id = r.id;
    item.title = `curation in use: ${r.curation === null ? "none" : r.curation}`;
    item.onclick = () => openResult(r.id);
    box.append(item);
  }
  return results;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

async function openResult(id, keepUnit) {
  const t0 = performance.now();
  status("loading…");
  const res = await api(`/api/result/${id}`);
  view.result = res;
  view.byId = new Map(res.units.map((u) => [u.unit_id, u]));
  view.unit = null;
  clearInterval(view.clipTimer);
  resetPending();
  location.hash = `result=${id}`;
  for (const item of document.querySelectorAll(".result")) item.classList.toggle("open", item.dataset.id === id);
  $("title").textContent = res.describe;
  $("curation").textContent = res.curation_id === null ? "no curation in use (every unit shown)"
    : `curation ${res.curation_id} in use (${res.curations.find((c) => c.curation_id === res.curation_id).kind})`;
  fillSelect($("image"), Object.entries(res.images));
  const colourBy = [["label", "label / decision"], ...res.numbers.map((n) => [n, n])];
  fillSelect($("colour"), colourBy);
  fillSelect($("label-pick"), Object.keys(res.labels).map((l, i) => [l, `${i + 1} ${l}`]));
  buildPaths();
  buildTable();
  await loadImage("max_mean");
  draw();
  if (view.firstPaint === null) view.firstPaint = performance.now();
  view.resultShown = performance.now() - t0;
  status("no changes");
  const first = keepUnit && view.byId.has(keepUnit) ? keepUnit : (res.units[0] || {}).unit_id;
  loadMotion(id);
  if (first !== undefined) await openUnit(first);
}

function fillSelect(select, pairs) {
  const was = select.value;
  select.innerHTML = "";
  for (const [value, text] of pairs) { const o = el("option", null, text); o.value = value; select.append(o); }
  if (pairs.some(([v]) => v === was)) select.value = was;
}

function loadImage(name) {
  return new Promise((resolve) => {
    view.image = new Image();
    view.image.onload = resolve;
    view.image.onerror = resolve;
    view.image.src = `/api/result/${view.result.id}/image/${$("image").value || name}.png`;
  });
}

async function loadMotion(id) {
  const m = await api(`/api/result/${id}/motion`);
  const lines = [{ x: m.time, y: m.dy, name: "dy", type: "scattergl", mode: "lines" },
                 { x: m.time, y: m.dx, name: "dx", type: "scattergl", mode: "lines" }];
  Plotly.react("motion", lines, darkLayout({ title: { text: "rigid shifts (pixels)", font: { size: 12 } },
    xaxis: { title: { text: "time (s)" } }, margin: { l: 40, r: 10, t: 28, b: 34 } }), { displaylogo: false, responsive: true });
}

function darkLayout(extra) {
  return Object.assign({ paper_bgcolor: "#15171a", plot_bgcolor: "#15171a", font: { color: "#ccc", size: 11 },
    showlegend: true, legend: { orientation: "h", y: 1.12 } }, extra);
}

// ------------------------------------------------------------------ the field of view

function buildPaths() {
  view.paths = new Map();
  for (const u of view.result.units) {
    const p = new Path2D();
    for (const line of u.contour) {
      line.forEach(([x, y], i) => (i ? p.lineTo(x + 0.5, y + 0.5) : p.moveTo(x + 0.5, y + 0.5)));
      p.closePath();
    }
    view.paths.set(u.unit_id, p);
  }
}

function effective(u) {
  // the unit's decision and labels with this view's changes on top
  const P = view.pending;
  let accepted = u.accepted;
  if (P.accept.has(u.unit_id)) accepted = true;
  if (P.reject.has(u.unit_id)) accepted = false;
  const labels = P.labels.has(u.unit_id) ? [...P.labels.get(u.unit_id)] : u.labels;
  const merging = P.merges.some((g) => g.includes(u.unit_id));
  return { accepted: accepted && !merging && u.merged_into === null, labels, merging,
    changed: P.accept.has(u.unit_id) || P.reject.has(u.unit_id) || P.labels.has(u.unit_id) || merging };
}

function colourOf(u, range) {
  const by = $("colour").value;
  const e = effective(u);
  if (by === "label") {
    if (!e.accepted) return LABEL_COLOURS.rejected;
    const l = e.labels.find((x) => LABEL_COLOURS[x]);
    return l ? LABEL_COLOURS[l] : LABEL_COLOURS.accepted;
  }
  const v = u.numbers[by];
  if (v === null || v === undefined) return "#777";
  const t = range[1] > range[0] ? Math.min(1, Math.max(0, (v - range[0]) / (range[1] - range[0]))) : 0.5;
  const k = Math.min(VIRIDIS.length - 2, Math.floor(t * (VIRIDIS.length - 1)));
  const f = t * (VIRIDIS.length - 1) - k;
  const c = VIRIDIS[k].map((a, i) => Math.round(a + f * (VIRIDIS[k + 1][i] - a)));
  return `rgb(${c.join(",")})`;
}

function numberRange(name) {
  const vs = view.result.units.map((u) => u.numbers[name]).filter((v) => v !== null && v !== undefined).sort((a, b) => a - b);
  if (!vs.length) return [0, 1];
  return [vs[Math.floor(0.02 * (vs.length - 1))], vs[Math.floor(0.98 * (vs.length - 1))]];
}

function draw() {
  const res = view.result;
  if (!res) return;
  const canvas = $("fov"), ctx = canvas.getContext("2d");
  const scale = canvas.width / res.width;
  canvas.height = Math.round(res.height * scale);
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.fillStyle = "black";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (view.image.complete && view.image.naturalWidth) ctx.drawImage(view.image, 0, 0, canvas.width, canvas.height);
  ctx.setTransform(scale, 0, 0, scale, 0, 0);
  const by = $("colour").value, range = by === "label" ? null : numberRange(by);
  const showRejected = $("show-rejected").checked;
  ctx.lineWidth = 1.2 / scale;
  for (const u of res.units) {
    const e = effective(u);
    if (!e.accepted && !showRejected && u.unit_id !== view.unit) continue;
    ctx.strokeStyle = colourOf(u, range);
    ctx.setLineDash(e.accepted ? [] : [3 / scale, 3 / scale]);
    ctx.stroke(view.paths.get(u.unit_id));
  }
  ctx.setLineDash([]);
  for (const id of view.mergeGroup) outline(ctx, id, "#ffffff", 2.5 / scale, [2 / scale, 2 / scale]);
  if (view.unit !== null && view.paths.has(view.unit)) {  // the open unit: white on a dark halo, seen on bright cells too
    outline(ctx, view.unit, "#000000", 5 / scale, []);
    outline(ctx, view.unit, "#ffffff", 2.5 / scale, []);
  }
  legend(by, range);
}

function outline(ctx, id, colour, width, dash) {
  ctx.strokeStyle = colour;
  ctx.lineWidth = width;
  ctx.setLineDash(dash);
  ctx.stroke(view.paths.get(id));
}

function legend(by, range) {
  const box = $("legend");
  box.innerHTML = "";
  if (by === "label") {
    for (const [name, colour] of Object.entries(LABEL_COLOURS)) {
      if (name === "cell") continue;
      const s = el("span", null, "■ " + name);
      s.style.color = colour;
      box.append(s);
    }
  } else {
    box.append(el("span", null, `${by}: ${fmt(range[0])} (purple) … ${fmt(range[1])} (yellow)`));
  }
}

function unitAt(event) {
  const canvas = $("fov"), rect = canvas.getBoundingClientRect();
  const scale = canvas.width / view.result.width;
  const px = ((event.clientX - rect.left) * canvas.width) / rect.width;
  const py = ((event.clientY - rect.top) * canvas.height) / rect.height;
  const x = px / scale, y = py / scale;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  let best = null, bestD = Infinity;
  for (const u of view.result.units) {
    const d = Math.hypot(u.x - x, u.y - y);
    const inside = ctx.isPointInPath(scaledPath(u.unit_id, scale), px, py);
    if ((inside && d < bestD + 1e6) || d < 6) {
      const score = inside ? d : d + 1000;
      if (score < bestD) { best = u.unit_id; bestD = score; }
    }
  }
  return best;
}

function scaledPath(id, scale) {
  const p = new Path2D();
  p.addPath(view.paths.get(id), new DOMMatrix([scale, 0, 0, scale, 0, 0]));
  return p;
}

// ------------------------------------------------------------------ the units table

function buildTable() {
  const res = view.result;
  const cols = ["unit_id", "decision", "labels", ...res.numbers.slice(0, 6)];
  $("units").querySelector("thead").innerHTML = "<tr>" + cols.map((c) => `<th>${c}</th>`).join("") + "</tr>";
  const body = $("units").querySelector("tbody");
  body.innerHTML = "";
  for (const u of res.units) {
    const tr = document.createElement("tr");
    tr.dataset.unit = u.unit_id;
    tr.onclick = () => openUnit(u.unit_id);
    body.append(tr);
    refreshRow(u.unit_id);
  }
}

function refreshRow(id) {
  if (!view.byId.has(id)) return;
  const u = view.byId.get(id), e = effective(u);
  const tr = $("units").querySelector(`tr[data-unit="${id}"]`);
  if (!tr) return;
  const decision = u.merged_into !== null ? `merged into ${u.merged_into}` : e.merging ? "merging" : e.accepted ? "accepted" : "rejected";
  tr.innerHTML = [u.unit_id, decision, e.labels.join(","), ...view.result.numbers.slice(0, 6).map((n) => fmt(u.numbers[n]))]
    .map((v) => `<td>${v}</td>`).join("");
  tr.classList.toggle("rejected", !e.accepted);
  tr.classList.toggle("changed", e.changed);
  tr.classList.toggle("open", id === view.unit);
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(2);
}

// ------------------------------------------------------------------ one unit

async function openUnit(id) {
  const t0 = performance.now();
  const before = view.unit;
  view.unit = id;
  if (before !== null) refreshRow(before);
  refreshRow(id);
  const row = $("units").querySelector(`tr[data-unit="${id}"]`);
  if (row) {  // scroll the table only, never the page
    const box = $("units-box"), top = row.offsetTop - box.querySelector("thead").offsetHeight;
    if (top < box.scrollTop || row.offsetTop + row.offsetHeight > box.scrollTop + box.clientHeight) box.scrollTop = top;
  }
  draw();
  const u = view.byId.get(id);
  $("unit-title").textContent = `unit ${id}`;
  showUnitState();
  const d = await api(`/api/result/${view.result.id}/unit/${id}`);
  if (view.unit !== id) return;
  view.unitData = d;
  drawFootprint(d);
  numbersTable(u, d);
  drawTraces(d);
  view.unitShown = performance.now() - t0;
  document.body.dataset.unitShown = String(id);
  loadClip(id);
}

function showUnitState() {
  const u = view.byId.get(view.unit), e = effective(u);
  $("unit-title").textContent = `unit ${u.unit_id} · ${e.accepted ? "accepted" : "rejected"}` +
    (e.labels.length ? ` · ${e.labels.join(", ")}` : "") + (u.reason ? ` · rules: ${u.reason}` : "");
}

function drawFootprint(d) {
  const canvas = $("footprint"), ctx = canvas.getContext("2d");
  const h = d.patch.length, w = d.patch[0].length, s = Math.min(canvas.width / w, canvas.height / h);
  ctx.fillStyle = "black";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const v = Math.max(0, Math.min(1, d.patch[y][x]));
    if (v <= 0) continue;
    const c = VIRIDIS[Math.min(4, Math.floor(v * 4))];
    ctx.fillStyle = `rgb(${c.join(",")})`;
    ctx.fillRect(x * s, y * s, Math.ceil(s), Math.ceil(s));
  }
}

function numbersTable(u, d) {
  const rows = [["centroid (y, x)", `${u.y.toFixed(1)}, ${u.x.toFixed(1)}`], ["F0", fmt(d.F0)],
    ["events", String(d.events.onset.length)], ...Object.entries(d.numbers).map(([k, v]) => [k, fmt(v)])];
  $("numbers").innerHTML = rows.map(([k, v]) => `<tr><td title="${(view.result.metric_text[k] || "").replace(/"/g, "'")}">${k}</td><td>${v}</td></tr>`).join("");
}

function drawTraces(d) {
  const rows = [{ x: d.time, y: d.C, name: "C", type: "scattergl", mode: "lines", line: { width: 1, color: "#4fc3f7" }, yaxis: "y" },
    { x: d.time, y: d.S, name: "S", type: "scattergl", mode: "lines", line: { width: 1, color: "#ffab40" }, yaxis: "y2" },
    { x: d.events.time, y: d.events.onset.map((o) => d.S[o]), name: "events", type: "scattergl", mode: "markers",
      marker: { size: 6, color: "#ff5c5c", symbol: "triangle-down" }, yaxis: "y2" }];
  if (d.dff) rows.push({ x: d.time, y: d.dff, name: "dF/F", type: "scattergl", mode: "lines", line: { width: 1, color: "#3ddc84" }, yaxis: "y3" });
  const layout = darkLayout({ margin: { l: 50, r: 10, t: 10, b: 34 }, xaxis: { title: { text: "time (s)" }, anchor: "y3" },
    yaxis: { domain: [0.68, 1], title: { text: "C" } }, yaxis2: { domain: [0.36, 0.64], title: { text: "S" } },
    yaxis3: { domain: [0, 0.32], title: { text: "dF/F" } }, legend: { orientation: "h", y: 1.08 } });
  Plotly.react("traces", rows, layout, { displaylogo: false, responsive: true, scrollZoom: true });
}

async function loadClip(id) {
  clearInterval(view.clipTimer);
  $("clip-caption").textContent = "movie clip: loading…";
  let meta;
  try { meta = await api(`/api/result/${view.result.id}/unit/${id}/clip`); }
  catch (err) { $("clip-caption").textContent = `no clip: ${err.message}`; return; }
  if (view.unit !== id) return;
  const sheet = new Image();
  sheet.onload = () => {
    if (view.unit !== id) return;
    clearInterval(view.clipTimer);
    const canvas = $("clip"), ctx = canvas.getContext("2d");
    const [th, tw] = meta.tile, u = view.byId.get(id);
    ctx.imageSmoothingEnabled = false;
    let k = 0;
    const fps = Math.min(30, meta.fps || 20);
    view.clipTimer = setInterval(() => {
      const r = Math.floor(k / meta.columns), c = k % meta.columns;
      ctx.drawImage(sheet, c * tw, r * th, tw, th, 0, 0, canvas.width, canvas.height);
      const s = canvas.width / tw;
      ctx.strokeStyle = "rgba(255,255,255,0.6)";
      ctx.beginPath();
      ctx.arc((u.x - meta.box[1] + 0.5) * s, (u.y - meta.box[0] + 0.5) * s, 10, 0, 2 * Math.PI);
      ctx.stroke();
      const f = meta.frames[k], near = meta.events.find((o) => f >= o && f < o + 5);
      $("clip-caption").textContent = `frame ${f}${near !== undefined ? " · event" : ""}`;
      k = (k + 1) % meta.n;
    }, 1000 / fps);
  };
  sheet.src = meta.png;
}

// ------------------------------------------------------------------ curation

function resetPending() {
  view.pending = { accept: new Set(), reject: new Set(), labels: new Map(), merges: [] };
  view.mergeGroup = [];
  pendingChanged();
}

function pendingChanged() {
  const P = view.pending;
  const n = P.accept.size + P.reject.size + P.labels.size + P.merges.length;
  $("pending").textContent = n ? `${n} change(s) not saved` : "no changes";
  $("pending").classList.toggle("dirty", n > 0);
  $("save").disabled = n === 0;
  $("merge").disabled = view.mergeGroup.length < 2;
  $("merge-group").textContent = view.mergeGroup.length ? `merge group: ${view.mergeGroup.join(", ")}` : "";
}

function decide(accept) {
  const id = view.unit;
  if (id === null || !view.byId.has(id)) return;
  const u = view.byId.get(id), P = view.pending;
  P.accept.delete(id);
  P.reject.delete(id);
  if (accept !== u.accepted) (accept ? P.accept : P.reject).add(id);
  changed(id);
}

function toggleLabel(name) {
  const id = view.unit;
  if (id === null || !name || !view.byId.has(id)) return;
  const u = view.byId.get(id), P = view.pending;
  if (u.labels.includes(name)) { status(`unit ${id} has ${name} already (a curation adds labels to its parent's)`); return; }
  const now = new Set(P.labels.has(id) ? P.labels.get(id) : u.labels);
  now.has(name) ? now.delete(name) : now.add(name);
  const same = now.size === u.labels.length && u.labels.every((l) => now.has(l));
  same ? P.labels.delete(id) : P.labels.set(id, [...now].sort());
  changed(id);
}

function toggleMerge(id) {
  if (id === null) return;
  const i = view.mergeGroup.indexOf(id);
  i >= 0 ? view.mergeGroup.splice(i, 1) : view.mergeGroup.push(id);
  pendingChanged();
  draw();
}

function mergeGroup() {
  if (view.mergeGroup.length < 2) return;
  view.pending.merges.push([...view.mergeGroup]);
  const ids = view.mergeGroup;
  view.mergeGroup = [];
  ids.forEach(changed);
}

function undo() {
  const id = view.unit, P = view.pending;
  if (id === null) return;
  P.accept.delete(id);
  P.reject.delete(id);
  P.labels.delete(id);
  const members = P.merges.filter((g) => g.includes(id)).flat();
  P.merges = P.merges.filter((g) => !g.includes(id));
  view.mergeGroup = view.mergeGroup.filter((u) => u !== id);
  [...new Set([id, ...members])].forEach(changed);
}

function changed(id) {
  refreshRow(id);
  if (id === view.unit) showUnitState();
  pendingChanged();
  draw();
}

async function save() {
  const P = view.pending;
  const labels = {};
  // labels are added to a unit by an edit: send the full new set only where labels were added
  for (const [id, names] of P.labels) labels[id] = names.filter((n) => !view.byId.get(id).labels.includes(n));
  const change = { accept: [...P.accept], reject: [...P.reject], merges: P.merges, note: $("note").value,
    labels: Object.fromEntries(Object.entries(labels).filter(([, v]) => v.length)) };
  try {
    const { curation_id } = await api(`/api/result/${view.result.id}/curation`, { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ change, parent: view.result.curation_id }) });
    $("note").value = "";
    await openResult(view.result.id, view.unit);
    status(`saved as curation ${curation_id} (in use)`);
    document.body.dataset.saved = String(curation_id);
  } catch (err) {
    status(`not saved: ${err.message}`, true);
  }
}

function step(by) {
  const units = view.result.units;
  const i = units.findIndex((u) => u.unit_id === view.unit);
  const next = units[Math.max(0, Math.min(units.length - 1, i + by))];
  if (next) openUnit(next.unit_id);
}

// ------------------------------------------------------------------ wiring

function wire() {
  $("fov").addEventListener("click", (event) => {
    if (!view.result) return;
    const id = unitAt(event);
    if (id === null) return;
    if (event.shiftKey) toggleMerge(id); else openUnit(id);
  });
  $("image").onchange = async () => { await loadImage(); draw(); };
  $("colour").onchange = draw;
  $("show-rejected").onchange = draw;
  $("accept").onclick = () => decide(true);
  $("reject").onclick = () => decide(false);
  $("label").onclick = () => toggleLabel($("label-pick").value);
  $("merge-add").onclick = () => toggleMerge(view.unit);
  $("merge").onclick = mergeGroup;
  $("undo").onclick = undo;
  $("save").onclick = save;
  $("provenance-box").addEventListener("toggle", async () => {
    if (!$("provenance-box").open || !view.result) return;
    $("provenance").textContent = JSON.stringify(await api(`/api/result/${view.result.id}/provenance`), null, 1);
  });
  document.addEventListener("keydown", (event) => {
    if (!view.result || ["INPUT", "SELECT", "TEXTAREA"].includes(event.target.tagName)) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;  // the browser's own shortcuts
    const k = event.key;
    const names = Object.keys(view.result.labels);
    if (k === "j" || k === "ArrowDown") step(1);
    else if (k === "k" || k === "ArrowUp") step(-1);
    else if (k === "a") decide(true);
    else if (k === "r") decide(false);
    else if (k === "M") mergeGroup();
    else if (k === "m") toggleMerge(view.unit);
    else if (k === "u") undo();
    else if (k === "s") { if (!$("save").disabled) save(); }
    else if (/^[1-9]$/.test(k) && names[+k - 1]) toggleLabel(names[+k - 1]);
    else return;
    event.preventDefault();
  });
}

async function start() {
  wire();
  const results = await loadResults();
  const wanted = new URLSearchParams(location.hash.slice(1)).get("result");
  const chosen = results.find((r) => r.id === wanted) || results[0];
  if (chosen) await openResult(chosen.id);
}

start().catch((err) => status(`error: ${err.message}`, true));
