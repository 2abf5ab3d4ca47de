// tfmr explore: the page's script. Plain JS, SVG and canvas; every number it shows comes from the
// server's JSON API (tfmr/explore/session.py), which calls tfmr's own functions. Nothing here
// computes a probability, a filter or a beam: it only draws.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const state = { info: null, text: "", generated: [], head: 0, css: "" };

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

// colour maps: sequential (attention, 0..max) and diverging (positions, -m..m)
function sequential(v) {
  const t = Math.max(0, Math.min(1, v));
  return `rgb(${Math.round(255 - 225 * t)},${Math.round(255 - 175 * t)},${Math.round(255 - 95 * t)})`;
}
function diverging(v) {
  const t = Math.max(-1, Math.min(1, v));
  return t >= 0 ? `rgb(255,${Math.round(255 - 200 * t)},${Math.round(255 - 200 * t)})`
    : `rgb(${Math.round(255 + 200 * t)},${Math.round(255 + 200 * t)},255)`;
}

// a heatmap of `rows` (numbers or null) on `canvas`, labels on the left and top when given
function heatmap(canvas, rows, opts = {}) {
  const cell = opts.cell || 14, left = opts.rowLabels ? (opts.labelWidth || 60) : 0;
  const top = opts.colLabels ? (opts.labelHeight || 50) : 0;
  const nr = rows.length, nc = nr ? rows[0].length : 0;
  canvas.width = left + nc * cell + 2; canvas.height = top + nr * cell + 2;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  let max = 0;
  for (const r of rows) for (const v of r) if (v !== null && Math.abs(v) > max) max = Math.abs(v);
  const colour = opts.diverging ? (v) => diverging(v / (max || 1)) : (v) => sequential(v / (opts.max || max || 1));
  rows.forEach((r, i) => r.forEach((v, j) => {
    ctx.fillStyle = v === null ? "#eee" : colour(v);
    ctx.fillRect(left + j * cell, top + i * cell, cell, cell);
  }));
  ctx.fillStyle = "#333"; ctx.font = "11px monospace";
  if (opts.rowLabels) opts.rowLabels.forEach((s, i) => {
    ctx.textAlign = "right"; ctx.fillText(visible(s).slice(0, 8), left - 4, top + i * cell + cell * 0.75);
  });
  if (opts.colLabels) opts.colLabels.forEach((s, j) => {
    ctx.save(); ctx.translate(left + j * cell + cell * 0.7, top - 4); ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "left"; ctx.fillText(visible(s).slice(0, 8), 0, 0); ctx.restore();
  });
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
  const chart = $("dist-chart"), row = 20, labelW = 90, barW = 420;
  chart.replaceChildren();
  chart.setAttribute("height", d.tokens.length * row + 24);
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

async function showAttention() {
  const kind = $("attn-kind").value || "self", layer = parseInt($("attn-layer").value || "0", 10);
  const a = await api("attention", { text: state.text, generated: state.generated, which: kind, layer });
  if ($("attn-kind").options.length !== a.kinds.length) {
    $("attn-kind").replaceChildren(...a.kinds.map((k) => el("option", { value: k }, k)));
    $("attn-kind").value = a.which;
  }
  if ($("attn-layer").options.length !== a.layers) {
    $("attn-layer").replaceChildren(...a.mixers.map((m, i) => el("option", { value: i }, m === "attention" ? `${i}` : `${i} (${m})`)));
    $("attn-layer").value = a.layer;
  }
  state.attention = a;
  // a retention layer has no attention map: show its decay D per head (the matrix its parallel form multiplies the scores with)
  const maps = a.weights || a.decay;
  const note = $("attn-note");
  note.hidden = a.weights !== null;
  note.dataset.mixer = a.mixer;
  note.textContent = a.weights ? "" : `layer ${a.layer} is a retention layer: it has no attention map (no softmax; ` +
    "its output is (Q K\u1d40 \u2299 D) V). Shown instead, per head: the decay D[n, m] = \u03b3\u2095^(n\u2212m) " +
    `that retention multiplies the scores with (\u03b3 = ${a.gammas.map((g) => g.toFixed(4)).join(", ")})`;
  const heads = $("heads");
  heads.replaceChildren();
  if (state.head >= maps.length) state.head = 0;
  maps.forEach((w, h) => {
    const box = el("div", { class: "head" + (h === state.head ? " selected" : ""), "data-head": h });
    const c = el("canvas", { class: "head-canvas" });
    heatmap(c, w, { cell: Math.max(2, Math.min(8, Math.floor(96 / Math.max(w.length, w[0].length)))), max: 1 });
    box.append(c, el("div", {}, a.weights ? `head ${h}` : `head ${h} decay`));
    box.addEventListener("click", () => { state.head = h; showLargeHead(); });
    heads.append(box);
  });
  showLargeHead();
}

function showLargeHead() {
  const a = state.attention, maps = a.weights || a.decay;
  document.querySelectorAll(".head").forEach((b) => b.classList.toggle("selected", +b.dataset.head === state.head));
  heatmap($("attn-large"), maps[state.head], { cell: 18, max: 1, rowLabels: a.queries, colLabels: a.keys });
}

function showOutput(d) {
  $("output-text").textContent = d.rendered || "(empty)";
  const al = d.alignment;
  heatmap($("alignment"), al.weights, { cell: 22, max: 1, rowLabels: al.rows, colLabels: al.columns, labelHeight: 30 });
}

// the beam tree: x is the step, y the order of the leaves, a parent sits at the mean of its children
function showBeam(b) {
  const showPruned = $("beam-pruned").checked;
  const nodes = b.nodes.filter((n) => showPruned || n.fate !== "pruned");
  const byId = new Map(nodes.map((n) => [n.id, { ...n, children: [] }]));
  for (const n of byId.values()) if (n.parent !== null && byId.has(n.parent)) byId.get(n.parent).children.push(n.id);
  let leaf = 0;
  const place = (id) => {
    const n = byId.get(id);
    if (!n.children.length) { n.y = leaf++; return n.y; }
    const ys = n.children.map(place);
    n.y = ys.reduce((s, v) => s + v, 0) / ys.length;
    return n.y;
  };
  place(0);
  const dx = 96, dy = 22, svg = $("beam-tree");
  svg.replaceChildren();
  svg.setAttribute("width", (b.steps + 1) * dx + 140);
  svg.setAttribute("height", leaf * dy + 30);
  const pos = (n) => [20 + (n.step + 1) * dx, 20 + n.y * dy];
  for (const n of byId.values()) {
    if (n.parent === null || !byId.has(n.parent)) continue;
    const [x, y] = pos(n), [px, py] = pos(byId.get(n.parent));
    svg.append(svgEl("path", { class: "edge" + (n.best ? " best" : ""), d: `M${px},${py} C${px + dx / 2},${py} ${x - dx / 2},${y} ${x},${y}` }));
  }
  for (const n of byId.values()) {
    const [x, y] = pos(n);
    const g = svgEl("g", { class: `node ${n.fate}${n.best ? " best" : ""}`, "data-id": n.id, transform: `translate(${x},${y})` });
    g.append(svgEl("circle", { r: 5 }));
    const rank = n.rank !== undefined ? ` #${n.rank + 1}` : "";
    const label = n.fate === "root" ? visible(n.text) : `${visible(n.text)} ${n.score.toFixed(2)}${rank}`;
    g.append(svgEl("text", { x: 8, y: 4 }, label));
    g.append(svgEl("title", {}, `${n.fate}; sum of log-probs ${n.score.toFixed(4)}`));
    svg.append(g);
  }
  const list = $("beam-best");
  list.replaceChildren(...b.n_best.map((h) => el("li", { class: h.rank === 0 ? "best" : "", "data-rendered": h.rendered },
    `${JSON.stringify(h.rendered)}  score ${h.score.toFixed(4)}`)));
  list.dataset.best = b.n_best.length ? b.n_best[0].rendered : "";
}

function showPositions(p) {
  const box = $("positions");
  box.replaceChildren();
  for (const part of p.parts) {
    const div = el("div", { class: "position", "data-where": part.where });
    div.append(el("h3", {}, `${part.where}: ${part.name}`));
    let shown = false;
    if (part.embedding) {
      div.append(el("div", { class: "note" }, `added to the token embeddings: position (rows) x dimension, first ${p.length} positions`));
      const c = el("canvas", { class: "pos-embedding" });
      heatmap(c, part.embedding, { cell: 4, diverging: true });
      div.append(c); shown = true;
    }
    if (part.rotation) {
      div.append(el("div", { class: "note" }, "a vector of ones after the rotation: position (rows) x head dimension"));
      const c = el("canvas", { class: "pos-rotation" });
      heatmap(c, part.rotation, { cell: 4, diverging: true });
      div.append(c);
      div.append(el("div", { class: "note" }, "score of the query at position m against the key at 0, q\u00b7k / d"));
      const w = 320, h = 100, svg = svgEl("svg", { width: w, height: h, class: "pos-scores" });
      const lo = Math.min(...part.scores), hi = Math.max(...part.scores), span = hi - lo || 1;
      const pts = part.scores.map((s, i) => `${(i * (w - 10)) / Math.max(1, part.scores.length - 1) + 5},${h - 5 - ((s - lo) * (h - 10)) / span}`);
      svg.append(svgEl("polyline", { points: pts.join(" "), fill: "none", stroke: "#4a7fc1" }));
      div.append(svg); shown = true;
    }
    if (part.bias) {
      div.append(el("div", { class: "note" }, "bias added to the attention scores, per head (query x key; grey: masked)"));
      const heads = el("div", { class: "controls" });
      part.bias.slice(0, 8).forEach((hb) => {
        const c = el("canvas", { class: "pos-bias" });
        heatmap(c, hb.slice(0, 24).map((r) => r.slice(0, 24)), { cell: 4, diverging: true });
        heads.append(c);
      });
      div.append(heads); shown = true;
    }
    if (!shown) div.append(el("div", { class: "note" }, "no positional information (the model sees a set of tokens)"));
    div.append(el("pre", { class: "note" }, part.module));
    box.append(div);
  }
}

function exportLinks() {
  const q = (fmt) => `/api/export?format=${fmt}&text=${encodeURIComponent(state.text)}&generated=${state.generated.join(",")}`;
  $("export-json").href = q("json");
  $("export-safetensors").href = q("safetensors");
}

// ------------------------------------------------------------------ updates
async function refresh() {
  state.text = $("prompt").value;
  exportLinks();
  try {
    showTokens(await api("tokens", { text: state.text, generated: state.generated }));
    showDistribution(await api("distribution", { text: state.text, generated: state.generated, ...settings() }));
    await showAttention();
    if (state.info.kind === "seq2seq") showOutput(await api("decode", { text: state.text }));
    showMessage("");
  } catch (e) {
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
  note.textContent = `Snapshot of tfmr explore, ${state.info.checkpoint}, ${new Date().toISOString()}`;
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
  $("info").textContent = `${i.checkpoint}: ${i.arch}, ${i.layers} layers${i.encoder_layers ? ` (+${i.encoder_layers} encoder)` : ""}, ` +
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

window.tfmrExplore = { state, snapshotHTML };
start();
