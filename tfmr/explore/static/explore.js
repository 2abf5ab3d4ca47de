// tfmr explore: the page's script. Plain JS, SVG and canvas; every number it shows comes from the
// server's JSON API (tfmr/explore/session.py), which calls tfmr's own functions. Nothing here
// computes a probability, a filter or a beam: it only draws (colour scales, legends, layout).
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const state = { info: null, text: "", generated: [], predicted: [], head: 0, css: "", beam: null, attention: null,
  alignment: null };
const LABEL_FONT = "11px monospace";
const LABEL_CAP = 150; // px: a heatmap label longer than this ends in "…" (the hover box names the whole token)
const LOG_DECADES = 4; // the log scale spans at most 4 decades below a map's largest value
const ROOT_CAP = 160; // px: the beam tree's root label (the text so far) keeps its last part, after "…"

// ------------------------------------------------------------------ helpers
function visible(s) {
  return s.replace(/ /g, "\u2423").replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");
}

function el(tag, attrs = {}, text = null, ns = null) {
  const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== null) e.textContent = text;
  return e;
}

function svgEl(tag, attrs = {}, text = null) { return el(tag, attrs, text, SVG); }

function fmt(v) {
  if (v === 0 || !Number.isFinite(v)) return String(v);
  return Math.abs(v) >= 0.001 ? String(+v.toPrecision(3)) : v.toExponential(1);
}

function showMessage(text) {
  const m = $("message");
  m.textContent = text || "";
  m.hidden = !text;
}

async function api(view, args) {
  const init = args === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(args) };
  const r = await fetch(`/api/${view}`, init);
  let data;
  try { data = await r.json(); } catch (e) { data = { error: `the server answered ${r.status}` }; }
  if (!r.ok) throw new Error(data.error || `the server answered ${r.status}`);
  return data;
}

function settings() {
  return {
    temperature: parseFloat($("temperature").value),
    top_k: parseInt($("top-k").value || "0", 10),
    top_p: parseFloat($("top-p").value),
    min_p: parseFloat($("min-p").value),
    repetition: parseFloat($("repetition").value),
    ngram: parseInt($("ngram").value || "0", 10),
  };
}

// body[data-state] is "idle" only when no update is queued or running and no typing is pending;
// body[data-updates] counts finished updates (the browser tests wait on these two)
let queued = 0, typing = null;
function signal() {
  document.body.dataset.state = queued || typing ? "busy" : "idle";
}

// one update at a time, in order
let queue = Promise.resolve();
function run(task) {
  queued += 1;
  signal();
  queue = queue.then(async () => {
    try { await task(); } catch (e) { showMessage(e.message); }
    queued -= 1;
    document.body.dataset.updates = String(parseInt(document.body.dataset.updates, 10) + 1);
    signal();
  });
  return queue;
}

// ------------------------------------------------------------------ colour scales and legends
// sequential (attention: white to dark blue, t in 0..1) and diverging (positions: blue, white, red, t in -1..1)
function sequential(t) {
  t = Math.max(0, Math.min(1, t));
  return `rgb(${Math.round(255 - 225 * t)},${Math.round(255 - 175 * t)},${Math.round(255 - 95 * t)})`;
}
function diverging(t) {
  t = Math.max(-1, Math.min(1, t));
  return t >= 0 ? `rgb(255,${Math.round(255 - 200 * t)},${Math.round(255 - 200 * t)})`
    : `rgb(${Math.round(255 + 200 * t)},${Math.round(255 + 200 * t)},255)`;
}

// one scale over every value of `maps` (each a list of rows): "linear" from 0 to the largest value,
// "log" from the smallest positive value (at most LOG_DECADES below the largest) to the largest, or
// "diverging" from -m to m. `at(v)` is the colour of v; lo and hi are what the legend prints.
function scaleOf(maps, kind) {
  let hi = 0, m = 0, lo = Infinity;
  for (const rows of maps) for (const r of rows) for (const v of r) {
    if (v === null) continue;
    hi = Math.max(hi, v); m = Math.max(m, Math.abs(v));
    if (v > 0) lo = Math.min(lo, v);
  }
  if (kind === "diverging") return { kind, lo: -(m || 1), hi: m || 1, at: (v) => diverging(v / (m || 1)) };
  hi = hi || 1;
  if (kind === "log") {
    lo = Math.max(Math.min(lo, hi / 10), hi / 10 ** LOG_DECADES);
    const span = Math.log10(hi / lo);
    return { kind, lo, hi, at: (v) => sequential(Math.log10(Math.max(v, lo) / lo) / span) };
  }
  return { kind: "linear", lo: 0, hi, at: (v) => sequential(v / hi) };
}

function scaleCaption(s) {
  if (s.kind === "diverging") return `colour: ${fmt(s.lo)} (blue) to 0 (white) to ${fmt(s.hi)} (red)`;
  const how = s.kind === "log" ? "log scale" : "linear scale";
  return `colour: ${how}, ${fmt(s.lo)}${s.kind === "log" ? " or less" : ""} (white) to ${fmt(s.hi)} (dark blue); ` +
    "hover a cell for its value";
}

// a vertical colour bar for scale `s` in the svg `svg`: the largest value at the top, the smallest below
function legend(svg, s, height = 100) {
  svg.replaceChildren();
  const w = 12, h = Math.max(48, Math.min(height, 160)), id = `${svg.id}-gradient`;
  const grad = svgEl("linearGradient", { id, x1: 0, y1: 1, x2: 0, y2: 0 });
  for (let k = 0; k <= 16; k++) {
    const t = k / 16;
    const v = s.kind === "log" ? s.lo * (s.hi / s.lo) ** t : s.lo + (s.hi - s.lo) * t;
    grad.append(svgEl("stop", { offset: t, "stop-color": s.at(v) }));
  }
  const defs = svgEl("defs");
  defs.append(grad);
  svg.append(defs, svgEl("rect", { x: 1, y: 6, width: w, height: h, fill: `url(#${id})`, stroke: "#999" }));
  svg.append(svgEl("text", { class: "legend-max", x: w + 5, y: 10 }, fmt(s.hi)));
  svg.append(svgEl("text", { class: "legend-min", x: w + 5, y: h + 8 }, fmt(s.lo)));
  svg.append(svgEl("text", { class: "legend-scale", x: w + 5, y: h / 2 + 8 }, s.kind));
  svg.setAttribute("width", w + 64);
  svg.setAttribute("height", h + 14);
  Object.assign(svg.dataset, { min: s.lo, max: s.hi, scale: s.kind });
}

// ------------------------------------------------------------------ heatmaps
// `s` cut to `room` px in the context's font: "…" at the end (or, with fromLeft, at the start)
function fitText(measure, s, room, fromLeft = false) {
  if (measure(s) <= room) return s;
  let keep = s.length;
  while (keep > 0 && measure(fromLeft ? `\u2026${s.slice(s.length - keep)}` : `${s.slice(0, keep)}\u2026`) > room) keep -= 1;
  return fromLeft ? `\u2026${s.slice(s.length - keep)}` : `${s.slice(0, keep)}\u2026`;
}

// a heatmap of `rows` (numbers or null) on `canvas` in scale opts.scale, row labels on the left and
// column labels on top (upright when each fits its column, else turned), each given the room its
// longest label needs (up to LABEL_CAP, then cut with "…"). The labels drawn are kept in
// data-row-labels / data-col-labels; opts.rowName(i) and opts.colName(j) name a cell in the hover box.
function heatmap(canvas, rows, opts = {}) {
  $("hover").hidden = true; // whatever it named is redrawn
  const cell = opts.cell || 14, probe = canvas.getContext("2d");
  probe.font = LABEL_FONT;
  const measure = (s) => probe.measureText(s).width;
  const fit = (labels) => (labels || []).map((s) => fitText(measure, visible(s), LABEL_CAP));
  const rowText = fit(opts.rowLabels), colText = fit(opts.colLabels);
  const room = (xs) => (xs.length ? Math.ceil(Math.max(0, ...xs.map(measure))) + 8 : 0);
  const upright = colText.every((t) => measure(t) <= cell - 2);
  const left = room(rowText), top = upright && colText.length ? 16 : room(colText);
  const nr = rows.length, nc = nr ? rows[0].length : 0;
  canvas.width = left + nc * cell + 2; canvas.height = top + nr * cell + 2; // (this resets the context)
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  const scale = opts.scale || scaleOf([rows], "linear");
  rows.forEach((r, i) => r.forEach((v, j) => {
    ctx.fillStyle = v === null ? "#eee" : scale.at(v);
    ctx.fillRect(left + j * cell, top + i * cell, cell, cell);
  }));
  ctx.fillStyle = "#333"; ctx.font = LABEL_FONT; ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  rowText.forEach((s, i) => ctx.fillText(s, left - 4, top + (i + 0.5) * cell));
  ctx.textAlign = upright ? "center" : "left";
  colText.forEach((s, j) => {
    ctx.save(); ctx.translate(left + (j + 0.5) * cell, upright ? top - 8 : top - 4);
    if (!upright) ctx.rotate(-Math.PI / 2);
    ctx.fillText(s, 0, 0); ctx.restore();
  });
  Object.assign(canvas.dataset, { rowLabels: JSON.stringify(rowText), colLabels: JSON.stringify(colText),
    left, top, cell, labelRoom: Math.max(left, top) });
  const rowName = opts.rowName || ((i) => `row ${i}${opts.rowLabels ? ` "${visible(opts.rowLabels[i])}"` : ""}`);
  const colName = opts.colName || ((j) => `column ${j}${opts.colLabels ? ` "${visible(opts.colLabels[j])}"` : ""}`);
  canvas.cells = { rows, name: (i, j) => `${rowName(i)}, ${colName(j)}` };
  hoverable(canvas);
}

// the hover box: which cell the pointer is on, and its value
function hoverable(canvas) {
  if (canvas.dataset.hoverable) return;
  canvas.dataset.hoverable = "1";
  canvas.addEventListener("mousemove", (e) => {
    const box = $("hover"), d = canvas.dataset, r = canvas.getBoundingClientRect(), cells = canvas.cells;
    const x = ((e.clientX - r.left) * canvas.width) / r.width, y = ((e.clientY - r.top) * canvas.height) / r.height;
    const i = Math.floor((y - d.top) / d.cell), j = Math.floor((x - d.left) / d.cell);
    if (!cells || i < 0 || j < 0 || i >= cells.rows.length || j >= cells.rows[i].length) { box.hidden = true; return; }
    const v = cells.rows[i][j];
    box.textContent = `${cells.name(i, j)}: ${v === null ? "masked" : v.toFixed(4)}`;
    Object.assign(box.dataset, { row: i, column: j, value: v === null ? "" : v });
    box.style.left = `${e.clientX + 14}px`; box.style.top = `${e.clientY + 14}px`;
    box.hidden = false;
  });
  canvas.addEventListener("mouseleave", () => { $("hover").hidden = true; });
}

// tick labels for n rows or columns of `cell` px: every k-th index (k a power of two, 14 px apart or more)
function ticks(n, cell) {
  const k = 2 ** Math.max(0, Math.ceil(Math.log2(14 / cell)));
  return Array.from({ length: n }, (_, i) => (i % k === 0 ? String(i) : ""));
}

// a line chart of `values` against their index, with both axes labelled
function lineChart(values, xTitle, yTitle) {
  const w = 380, h = 150, L = 54, B = 34, T = 8, R = 10;
  const svg = svgEl("svg", { width: w, height: h, class: "pos-scores" });
  const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
  const X = (i) => L + (i * (w - L - R)) / Math.max(1, values.length - 1);
  const Y = (v) => h - B - ((v - lo) * (h - B - T)) / span;
  svg.append(svgEl("path", { class: "axis", d: `M${L},${T} V${h - B} H${w - R}` }));
  for (const [i, anchor] of [[0, "start"], [values.length - 1, "end"]]) {
    svg.append(svgEl("text", { class: "tick", x: X(i), y: h - B + 13, "text-anchor": anchor }, String(i)));
  }
  for (const v of [lo, hi]) svg.append(svgEl("text", { class: "tick", x: L - 4, y: Y(v) + 4, "text-anchor": "end" }, fmt(v)));
  svg.append(svgEl("text", { class: "axis-title", x: (L + w - R) / 2, y: h - 4, "text-anchor": "middle" }, xTitle));
  svg.append(svgEl("text", { class: "axis-title", transform: `translate(12,${(T + h - B) / 2}) rotate(-90)`,
    "text-anchor": "middle" }, yTitle));
  svg.append(svgEl("polyline", { points: values.map((s, i) => `${X(i)},${Y(s)}`).join(" "), fill: "none", stroke: "#4a7fc1" }));
  return svg;
}

// a figure: a heatmap with its legend beside it and a caption under it
function figure(cls, rows, opts, caption) {
  const box = el("figure", { class: "map-figure" });
  const body = el("div", { class: "map" });
  const c = el("canvas", { class: cls });
  heatmap(c, rows, opts);
  const key = svgEl("svg", { class: "legend", id: `legend-${Math.random().toString(36).slice(2)}` });
  legend(key, opts.scale, rows.length * (opts.cell || 14));
  body.append(c, key);
  box.append(body, el("figcaption", { class: "note caption" }, `${caption}; ${scaleCaption(opts.scale)}`));
  return box;
}

// ------------------------------------------------------------------ views
function showTokens(data) {
  const box = $("tokens");
  box.replaceChildren();
  for (const t of data.tokens) {
    const span = el("span", { class: "token" + (t.generated ? " generated" : ""), "data-id": t.id });
    span.append(visible(t.text));
    const where = t.bytes ? ` ${t.id} [${t.bytes[0]},${t.bytes[1]})` : ` ${t.id}`;
    span.append(el("small", {}, where));
    box.append(span);
  }
  const src = $("source-tokens");
  src.replaceChildren();
  for (const t of data.source || []) {
    const span = el("span", { class: "token", "data-id": t.id }, t.text);
    span.append(el("small", {}, ` ${t.id}`));
    src.append(span);
  }
}

function showDistribution(d) {
  const chart = $("dist-chart"), row = 20, labelW = 90, barW = 420, width = 860;
  chart.replaceChildren();
  const height = d.tokens.length * row + 24;
  chart.setAttribute("height", height);
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`); // scales down on a narrow window
  chart.append(svgEl("text", { x: labelW + 4, y: 12 }, "blue: the model's p after temperature; orange: the p a sample is drawn with"));
  const max = Math.max(...d.tokens.map((t) => Math.max(t.before, t.after)), 1e-9);
  d.tokens.forEach((t, i) => {
    const cls = ["bar", t.kept ? "kept" : "filtered", t.penalised ? "penalised" : "", t.banned ? "banned" : ""];
    const g = svgEl("g", { class: cls.join(" ").trim(), "data-id": t.id,
      "data-before": t.before, "data-after": t.after, transform: `translate(0,${24 + i * row})` });
    g.append(svgEl("text", { class: "label", x: labelW - 6, y: 13, "text-anchor": "end" }, visible(t.text).slice(0, 10)));
    g.append(svgEl("rect", { class: "before", x: labelW, y: 2, height: 7, width: Math.max(1, barW * t.before / max) }));
    if (t.kept) g.append(svgEl("rect", { class: "after", x: labelW, y: 10, height: 7, width: Math.max(1, barW * t.after / max) }));
    const pct = (p) => (100 * p).toFixed(2) + "%";
    const why = t.banned ? "banned (n-gram)" : "filtered";
    const mark = t.penalised ? " penalised" : "";
    g.append(svgEl("text", { x: labelW + barW + 8, y: 13 }, (t.kept ? `${pct(t.before)} \u2192 ${pct(t.after)}` : `${pct(t.before)} ${why}`) + mark));
    chart.append(g);
  });
  const processors = [];
  if (d.penalised) processors.push(`${d.penalised} seen tokens penalised`);
  if (d.banned) processors.push(`${d.banned} tokens banned by the n-gram rule`);
  $("dist-summary").textContent = (d.greedy
    ? "temperature 0: greedy, all the mass on the most likely token"
    : `${d.kept} of ${d.vocab} tokens kept, holding ${(100 * d.kept_mass).toFixed(1)}% of the tempered mass`) +
    (processors.length ? `; ${processors.join(", ")}` : "");
  $("dist-summary").dataset.kept = d.kept;
}

// what the attention panel reads: for an encoder-decoder, the symbols stepped so far or else the
// greedy output (so it opens on the predicted pronunciation); for a language model the text so far
function attentionInput() {
  const seq = state.info.kind === "seq2seq";
  return { generated: seq && !state.generated.length ? state.predicted : state.generated,
    which: $("attn-kind").value || (seq ? "cross" : "self"),
    layer: $("attn-layer").value === "" ? (seq ? state.info.layers - 1 : 0) : parseInt($("attn-layer").value, 10) };
}

async function showAttention() {
  const want = attentionInput();
  const a = await api("attention", { text: state.text, ...want });
  if ($("attn-kind").options.length !== a.kinds.length) {
    $("attn-kind").replaceChildren(...a.kinds.map((k) => el("option", { value: k }, k)));
  }
  $("attn-kind").value = a.which;
  if ($("attn-layer").options.length !== a.layers) {
    $("attn-layer").replaceChildren(...a.mixers.map((m, i) => el("option", { value: i }, m === "attention" ? `${i}` : `${i} (${m})`)));
  }
  $("attn-layer").value = a.layer;
  state.attention = a;
  // a retention layer has no attention map: show its decay D per head (the matrix its parallel form multiplies the scores with)
  const note = $("attn-note");
  note.hidden = a.weights !== null;
  note.dataset.mixer = a.mixer;
  note.textContent = a.weights ? "" : `layer ${a.layer} is a retention layer: it has no attention map (no softmax; ` +
    "its output is (Q K\u1d40 \u2299 D) V). Shown instead, per head: the decay D[n, m] = \u03b3\u2095^(n\u2212m) " +
    `that retention multiplies the scores with (\u03b3 = ${a.gammas.map((g) => g.toFixed(4)).join(", ")})`;
  drawAttention();
}

// the rows and columns of the attention maps: for an encoder-decoder's decoder queries each row
// says what its step read and what it predicted ("AY1\u2192T")
function attentionAxes(a) {
  const steps = state.info.kind === "seq2seq" && a.predicts;
  const rows = steps ? a.queries.map((q, i) => `${q}\u2192${a.predicts[i]}`) : a.queries;
  const rowName = steps ? (i) => `query ${i} "${a.queries[i]}" (predicting "${a.predicts[i]}")`
    : (i) => `query ${i} "${visible(a.queries[i])}"`;
  const what = { self: "self-attention", cross: "cross-attention", encoder: "encoder self-attention" }[a.which];
  const cols = a.which === "cross" ? "the input symbols" : "the tokens it may attend to";
  const lines = steps ? "each decoder step: the symbol it read \u2192 the symbol it predicted" : "each query token";
  return { rows, rowName, colName: (j) => `key ${j} "${visible(a.keys[j])}"`,
    caption: `${what}, layer ${a.layer}, head ${state.head}; rows: ${lines}; columns: ${cols}` };
}

function drawAttention() {
  const a = state.attention, maps = a.weights || a.decay;
  const scale = scaleOf(maps, $("attn-scale").value);
  state.attentionScale = scale;
  const heads = $("heads");
  heads.replaceChildren();
  if (state.head >= maps.length) state.head = 0;
  maps.forEach((w, h) => {
    const box = el("div", { class: "head" + (h === state.head ? " selected" : ""), "data-head": h });
    const c = el("canvas", { class: "head-canvas" });
    heatmap(c, w, { cell: Math.max(2, Math.min(8, Math.floor(96 / Math.max(w.length, w[0].length)))), scale });
    box.append(c, el("div", {}, a.weights ? `head ${h}` : `head ${h} decay`));
    box.addEventListener("click", () => { state.head = h; showLargeHead(); });
    heads.append(box);
  });
  legend($("heads-legend"), scale, 60);
  showLargeHead();
}

function showLargeHead() {
  const a = state.attention, maps = a.weights || a.decay, scale = state.attentionScale;
  document.querySelectorAll(".head").forEach((b) => b.classList.toggle("selected", +b.dataset.head === state.head));
  const axes = attentionAxes(a);
  heatmap($("attn-large"), maps[state.head], { cell: 18, scale, rowLabels: axes.rows, colLabels: a.keys,
    rowName: axes.rowName, colName: axes.colName });
  legend($("attn-legend"), scale, maps[state.head].length * 18);
  $("attn-caption").textContent = `${axes.caption}; ${scaleCaption(scale)} (the same for every head of the layer)`;
}

function showOutput(d) {
  state.alignment = d.alignment;
  $("output-text").textContent = d.rendered || "(empty)";
  drawAlignment();
}

function drawAlignment() {
  const al = state.alignment;
  const scale = scaleOf([al.weights], $("align-scale").value);
  heatmap($("alignment"), al.weights, { cell: 22, scale, rowLabels: al.rows, colLabels: al.columns,
    rowName: (i) => `output ${i} "${al.rows[i]}"`, colName: (j) => `input ${j} "${al.columns[j]}"` });
  legend($("alignment-legend"), scale, al.weights.length * 22);
  $("alignment-caption").textContent = "rows: each output symbol; columns: the input symbols; " + scaleCaption(scale);
}

// the beam tree: x is the step, y the order of the leaves, a parent sits at the mean of its children.
// Columns are as wide as the widest label; the root's label (the text so far) stands to the left
// of the root, away from its edges, cut at its start to ROOT_CAP px.
function showBeam(b) {
  const { byId, leaves } = beamLayout(b, $("beam-pruned").checked);
  $("beam-hint").hidden = true;
  $("beam-box").hidden = false;
  $("beam-caption").hidden = false;
  const svg = $("beam-tree");
  svg.replaceChildren();
  const groups = new Map([...byId.values()].map((n) => [n.id, beamNode(n)]));
  svg.append(...groups.values());
  const { dx, x0 } = fitBeamLabels(groups);
  const dy = 22, pos = (n) => [x0 + (n.step + 1) * dx, 20 + n.y * dy];
  for (const [id, g] of groups) g.setAttribute("transform", `translate(${pos(byId.get(id)).join(",")})`);
  for (const n of byId.values()) {
    if (n.parent === null || !byId.has(n.parent)) continue;
    const [x, y] = pos(n), [px, py] = pos(byId.get(n.parent));
    svg.prepend(svgEl("path", { class: "edge" + (n.best ? " best" : ""), d: `M${px},${py} C${px + dx / 2},${py} ${x - dx / 2},${y} ${x},${y}` }));
  }
  svg.setAttribute("width", x0 + (b.steps + 1) * dx + 20);
  svg.setAttribute("height", leaves * dy + 30);
  const box = $("beam-box"), [, rootY] = pos(byId.get(0));
  box.scrollLeft = 0; // open on the root, where the search starts, not on an empty corner
  box.scrollTop = Math.max(0, rootY - box.clientHeight / 2);
  showNBest(b);
}

// the nodes shown (pruned ones on request) with their children, and each one's row (y)
function beamLayout(b, showPruned) {
  const nodes = b.nodes.filter((n) => showPruned || n.fate !== "pruned");
  const byId = new Map(nodes.map((n) => [n.id, { ...n, children: [] }]));
  for (const n of byId.values()) if (n.parent !== null && byId.has(n.parent)) byId.get(n.parent).children.push(n.id);
  let leaves = 0;
  const place = (id) => {
    const n = byId.get(id);
    if (!n.children.length) { n.y = leaves++; return n.y; }
    const ys = n.children.map(place);
    n.y = ys.reduce((s, v) => s + v, 0) / ys.length;
    return n.y;
  };
  place(0);
  return { byId, leaves };
}

// one node: a circle, its label (token and summed log-prob; the text so far for the root) and a title
function beamNode(n) {
  const g = svgEl("g", { class: `node ${n.fate}${n.best ? " best" : ""}`, "data-id": n.id });
  g.append(svgEl("circle", { r: 5 }));
  const rank = n.rank !== undefined ? ` #${n.rank + 1}` : "";
  const root = state.info.kind === "seq2seq" ? n.text : visible(n.text); // symbols are spaced; text shows its spaces
  const label = n.fate === "root" ? root : `${visible(n.text)} ${n.score.toFixed(2)}${rank}`;
  g.append(svgEl("text", n.fate === "root" ? { x: -9, y: 4, "text-anchor": "end" } : { x: 8, y: 4 }, label));
  g.append(svgEl("title", {}, n.fate === "root" ? `the text so far: ${label}`
    : `${label}: ${n.fate}; summed log-probability of the path ${n.score.toFixed(4)}`));
  return g;
}

// the column width (dx) from the widest label, every label cut to fit (the root's to ROOT_CAP, at
// its start), and where the root stands (x0: right of its label)
function fitBeamLabels(groups) {
  const text = (id) => groups.get(id).querySelector("text");
  const others = [...groups.keys()].filter((id) => id !== 0);
  const widest = Math.max(40, ...others.map((id) => text(id).getComputedTextLength()));
  const dx = Math.min(240, Math.ceil(widest) + 30);
  for (const id of groups.keys()) {
    const t = text(id), measure = (s) => { t.textContent = s; return t.getComputedTextLength(); };
    t.textContent = fitText(measure, t.textContent, id === 0 ? ROOT_CAP : dx - 22, id === 0); // whole in the title
  }
  return { dx, x0: 24 + Math.ceil(text(0).getComputedTextLength()) + 9 };
}

// the n best: the whole output, its summed log-prob and its length-normalised score, both named
function showNBest(b) {
  const list = $("beam-best"), penalty = b.length_penalty === 1 ? "length" : `length^${b.length_penalty}`;
  list.replaceChildren(...b.n_best.map((h) => el("li", { class: h.rank === 0 ? "best" : "", "data-rendered": h.rendered },
    `${JSON.stringify(h.rendered)}  \u03a3 log p ${h.log_prob.toFixed(2)} over ${h.length} new tokens, ` +
    `score ${h.score.toFixed(4)} (\u03a3 log p / ${penalty})`)));
  list.dataset.best = b.n_best.length ? b.n_best[0].rendered : "";
  $("beam-caption").textContent = "Tree: each node is a candidate token with \u03a3 log p, the summed log-probability " +
    "of its path from the text so far (the root); running beams blue, finished hypotheses green (#1 is the best), " +
    `pruned grey, the best path orange. The n best are ranked by score = \u03a3 log p / ${penalty} ` +
    `(length penalty ${b.length_penalty}), so they may differ in order from the sums in the tree.` +
    (b.stepped ? ` The search continues the ${b.stepped} token(s) already stepped; the n best show them too.` : "");
}

function clearBeam() {
  state.beam = null;
  $("beam-tree").replaceChildren();
  $("beam-best").replaceChildren();
  $("beam-best").dataset.best = "";
  $("beam-box").hidden = true;
  $("beam-caption").hidden = true;
  $("beam-hint").hidden = false;
}

function showPositions(p) {
  $("positions").replaceChildren(...p.parts.map(positionPart));
}

// one position module: what it is in words, then what each of its hooks does, with axes and legends
function positionPart(part) {
  const div = el("div", { class: "position", "data-where": part.where });
  div.append(el("h3", {}, `${part.where}: ${part.name}`));
  div.append(el("p", { class: "note about" }, part.about + (part.settings ? ` Settings: ${part.settings}.` : "")));
  const shown = [...embeddingView(part), ...rotationView(part), ...biasView(part)];
  div.append(...(shown.length ? shown : [el("div", { class: "note" }, "no positional information (the model sees a set of tokens)")]));
  return div;
}

function embeddingView(part) {
  if (!part.embedding) return [];
  const rows = part.embedding, n = rows.length, d = rows[0].length;
  return [figure("pos-embedding", rows, { cell: 4, scale: scaleOf([rows], "diverging"), rowLabels: ticks(n, 4),
    colLabels: ticks(d, 4), rowName: (i) => `position ${i}`, colName: (j) => `dimension ${j}` },
  `added to the token embeddings; rows: position 0 to ${n - 1} (down); columns: dimension 0 to ${d - 1} (across)`)];
}

function rotationView(part) {
  if (!part.rotation) return [];
  const rows = part.rotation, n = rows.length, d = rows[0].length;
  return [figure("pos-rotation", rows, { cell: 4, scale: scaleOf([rows], "diverging"), rowLabels: ticks(n, 4),
    colLabels: ticks(d, 4), rowName: (i) => `position ${i}`, colName: (j) => `head dimension ${j}` },
  `a vector of ones after the rotation; rows: position 0 to ${n - 1}; columns: head dimension 0 to ${d - 1}`),
  lineChart(part.scores, "query position m (key at 0)", "q\u00b7k / d"),
  el("div", { class: "note caption" }, "the score of the rotated query at position m against the key at position 0")];
}

function biasView(part) {
  if (!part.bias) return [];
  const heads = part.bias.slice(0, 8).map((hb) => hb.slice(0, 24).map((r) => r.slice(0, 24)));
  const scale = scaleOf(heads, "diverging"), row = el("div", { class: "controls" });
  heads.forEach((rows, h) => row.append(figure("pos-bias", rows, { cell: 4, scale, rowLabels: ticks(rows.length, 4),
    colLabels: ticks(rows.length, 4), rowName: (i) => `query ${i}`, colName: (j) => `key ${j}` }, `head ${h}`)));
  return [el("div", { class: "note caption" }, "bias added to the attention scores, per head; rows: query position " +
    `0 to ${heads[0].length - 1}; columns: key position; grey: masked`), row];
}

function exportLinks() {
  const q = (fmt) => `/api/export?format=${fmt}&text=${encodeURIComponent(state.text)}&generated=${state.generated.join(",")}`;
  $("export-json").href = q("json");
  $("export-safetensors").href = q("safetensors");
}

// after input the model refuses, nothing of the previous text stays on the page
function clearViews() {
  for (const id of ["tokens", "source-tokens", "dist-chart", "heads", "heads-legend", "attn-legend", "alignment-legend"]) {
    $(id).replaceChildren();
  }
  for (const id of ["dist-chart", "heads-legend", "attn-legend", "alignment-legend"]) {
    $(id).setAttribute("height", 0); $(id).removeAttribute("viewBox");
  }
  for (const id of ["dist-summary", "output-text", "attn-caption", "alignment-caption"]) $(id).textContent = "";
  for (const id of ["attn-large", "alignment"]) { $(id).width = 0; $(id).height = 0; $(id).cells = null; }
  state.attention = null; state.alignment = null; state.predicted = [];
  clearBeam();
}

// ------------------------------------------------------------------ updates
async function refresh() {
  state.text = $("prompt").value;
  exportLinks();
  clearBeam(); // a tree of the text before is not this text's
  try {
    showTokens(await api("tokens", { text: state.text, generated: state.generated }));
    showDistribution(await api("distribution", { text: state.text, generated: state.generated, ...settings() }));
    if (state.info.kind === "seq2seq") {
      const d = await api("decode", { text: state.text });
      state.predicted = d.body;
      showOutput(d);
    }
    await showAttention();
    showMessage("");
  } catch (e) {
    clearViews();
    showMessage(e.message);
  }
}

async function refreshDistribution() {
  for (const id of ["temperature", "top-p", "min-p", "repetition"]) $(`${id}-value`).textContent = $(id).value;
  try {
    showDistribution(await api("distribution", { text: state.text, generated: state.generated, ...settings() }));
    showMessage("");
  } catch (e) { showMessage(e.message); }
}

function snapshotHTML() {
  const doc = document.documentElement.cloneNode(true);
  const live = document.querySelectorAll("canvas"), copies = doc.querySelectorAll("canvas");
  copies.forEach((c, i) => {
    const img = document.createElement("img");
    img.src = live[i].toDataURL("image/png");
    img.className = c.className;
    c.replaceWith(img);
  });
  doc.querySelectorAll("script, link").forEach((s) => s.remove());
  doc.querySelectorAll("textarea").forEach((t, i) => { t.textContent = document.querySelectorAll("textarea")[i].value; });
  doc.querySelectorAll("input").forEach((t) => t.setAttribute("disabled", ""));
  doc.querySelectorAll("a.button").forEach((a) => a.removeAttribute("href"));
  const style = document.createElement("style");
  style.textContent = state.css;
  doc.querySelector("head").append(style);
  const note = document.createElement("p");
  note.className = "note";
  note.textContent = `Snapshot of tfmr explore, ${state.info.name}, ${new Date().toISOString()}`;
  doc.querySelector("body").prepend(note);
  return "<!DOCTYPE html>\n" + doc.outerHTML;
}

function download(name, text, type) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type }));
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
}

function wire() {
  $("prompt").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { typing = null; state.generated = []; run(refresh); }, 250);
    signal();
  });
  for (const id of ["temperature", "top-k", "top-p", "min-p", "repetition", "ngram"]) $(id).addEventListener("input", () => run(refreshDistribution));
  $("attn-kind").addEventListener("change", () => run(showAttention));
  $("attn-layer").addEventListener("change", () => run(showAttention));
  $("attn-scale").addEventListener("change", () => run(async () => { if (state.attention) drawAttention(); }));
  $("align-scale").addEventListener("change", () => run(async () => { if (state.alignment) drawAlignment(); }));
  $("step").addEventListener("click", () => run(async () => {
    const seed = $("seed").value === "" ? null : parseInt($("seed").value, 10);
    const s = await api("step", { text: $("prompt").value, generated: state.generated, seed, ...settings() });
    state.generated = s.generated;
    await refresh();
  }));
  $("reset").addEventListener("click", () => { state.generated = []; run(refresh); });
  $("beam-run").addEventListener("click", () => run(async () => {
    const b = await api("beam", { text: $("prompt").value, generated: state.generated,
      width: parseInt($("beam-width").value, 10), max_new_tokens: $("beam-new").value,
      repetition: settings().repetition, ngram: settings().ngram });
    state.beam = b;
    showBeam(b);
    showMessage("");
  }));
  $("beam-pruned").addEventListener("change", () => { if (state.beam) showBeam(state.beam); });
  $("snapshot").addEventListener("click", () => download("tfmr-explore.html", snapshotHTML(), "text/html"));
}

async function start() {
  try {
    state.info = await api("info");
    state.css = await (await fetch("/static/explore.css")).text();
  } catch (e) {
    showMessage(e.message); run(async () => {}); return;
  }
  const i = state.info;
  $("info").textContent = `${i.name}: ${i.arch}, ${i.layers} layers${i.encoder_layers ? ` (+${i.encoder_layers} encoder)` : ""}, ` +
    `${i.heads} heads, dim ${i.dim}, context ${i.context}, vocabulary ${i.vocab_size}, ${i.parameters.toLocaleString()} parameters, ` +
    `kernel ${i.kernel}, tokenizer ${i.tokenizer}; ${i.source}` +
    (i.mixers.some((m) => m !== "attention") ? `; mixers ${i.mixers.join(", ")}` : "") +
    (i.pattern.startsWith("Dense") ? "" : `; attention pattern ${i.pattern}`);
  if (i.kind === "seq2seq") {
    $("input-title").textContent = "Input (letters in, phonemes out)";
    $("input-note").textContent = "type a word; the decoder starts from <s>";
    $("output-section").hidden = false;
  }
  $("beam-width").replaceChildren(...Array.from({ length: i.max_beam }, (_, k) => el("option", { value: k + 1 }, `${k + 1}`)));
  $("beam-width").value = "3";
  $("beam-new").value = i.beam_new_tokens;
  $("prompt").value = i.example;
  wire();
  run(async () => { await refresh(); showPositions(await api("positions", {})); });
}

window.tfmrExplore = { state, snapshotHTML, heatmap, lineChart, scaleOf };
start();
