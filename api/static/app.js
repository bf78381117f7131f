// The search console: plain JavaScript over Cascade's REST API (/v1/collections, /v1/presets,
// /v1/search with "explain", /v1/context). The API key lives in this page's memory only and goes
// out as "Authorization: Bearer KEY"; nothing is stored on the server or in the browser.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { presets: {}, defaultSpec: null, pickers: {} };

// -- HTTP ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

// keepFloats: for responses holding pipeline specs, shown and sent back as JSON (parseKeepingFloats)
async function api(method, path, body, keepFloats = false) {
  const headers = { accept: "application/json" };
  const key = $("#api-key").value.trim();
  if (key) headers.authorization = `Bearer ${key}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try {
    const text = await resp.text();
    data = keepFloats ? parseKeepingFloats(text) : JSON.parse(text);
  } catch (e) {
    data = null;
  }
  if (!resp.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(resp.status, err.type || "HTTPError", err.message || resp.statusText);
  }
  return data;
}

// -- small DOM helpers -----------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.includes("-") || k === "title" || k === "style" || k === "role") node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function showError(box, err) {
  if (!err) {
    box.hidden = true;
    box.replaceChildren();
    return;
  }
  const head = err instanceof ApiError ? `${err.status} ${err.type}` : "Error";
  box.replaceChildren(el("span", { class: "etype", text: head }), el("span", { class: "emsg", text: err.message }));
  box.hidden = false;
}

// JSON.parse, except that an integral number written with a point or exponent ("0.0", "1e3")
// becomes a JSON.rawJSON value that JSON.stringify writes back as it was: the server keys indexes
// by their build parameters as JSON, where {"b": 0.0} and {"b": 0} differ, and plain JS would
// turn 0.0 into 0. Only for specs (such values do no arithmetic). Browsers without
// JSON.rawJSON fall back to plain numbers.
function parseKeepingFloats(text) {
  if (typeof JSON.rawJSON !== "function") return JSON.parse(text);
  return JSON.parse(text, (key, value, context) =>
    typeof value === "number" && Number.isInteger(value) && context && /[.eE]/.test(context.source) ? JSON.rawJSON(context.source) : value);
}

function parseJson(text, what) {
  if (!text.trim()) return undefined;
  try {
    return parseKeepingFloats(text);
  } catch (e) {
    throw new Error(`${what} is not valid JSON: ${e.message}`);
  }
}

// -- query-term highlighting -----------------------------------------------------------------

function terms(query) {
  const words = (query.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []).filter((w) => w.length > 1 || /\d/.test(w));
  return [...new Set(words)].sort((a, b) => b.length - a.length);
}

function escapeRe(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// A query term as a whole word, or with up to two more letters ("cell" marks "cells"; "w7" does
// not mark "w70"): close to what the analyzers' stemming matched.
function termPattern(words, flags) {
  return new RegExp(`(?<![\\p{L}\\p{N}])(?:${words.map(escapeRe).join("|")})\\p{L}{0,2}(?![\\p{L}\\p{N}])`, flags);
}

// A window of the text around the first query term, as text nodes and <mark>s (never innerHTML).
function highlighted(text, words, width = 320) {
  const out = document.createDocumentFragment();
  if (!text) return out;
  let start = 0;
  if (words.length) {
    const re = termPattern(words, "iu");
    const m = re.exec(text);
    if (m && m.index > width / 3) start = m.index - Math.floor(width / 4);
  }
  let piece = text.slice(start, start + width);
  if (start > 0) piece = "…" + piece;
  if (start + width < text.length) piece += "…";
  if (!words.length) {
    out.append(piece);
    return out;
  }
  const re = termPattern(words, "giu");
  let last = 0;
  for (const m of piece.matchAll(re)) {
    out.append(piece.slice(last, m.index), el("mark", { text: m[0] }));
    last = m.index + m[0].length;
  }
  out.append(piece.slice(last));
  return out;
}

// -- pipeline pickers ------------------------------------------------------------------------

function makePicker(name, label) {
  const root = document.querySelector(`[data-picker="${name}"]`);
  const select = el("select", { id: `${name}-pipeline`, "aria-label": `${label} pipeline` });
  const spec = el("textarea", { id: `${name}-spec`, rows: 6, spellcheck: false });
  const details = el("details", {}, el("summary", { text: "Pipeline spec (JSON): edit to run a custom pipeline" }), spec);
  root.append(el("div", { class: "row" }, el("label", { class: "field" }, label, select)), details);
  const fill = () => {
    const v = select.value;
    const s = v === "" ? state.defaultSpec : v === "custom" ? null : state.presets[v];
    if (s) spec.value = JSON.stringify(s, null, 2);
  };
  select.addEventListener("change", fill);
  spec.addEventListener("input", () => {
    select.value = "custom";
  });
  const picker = {
    select,
    spec,
    options() {
      const keep = select.value;
      const opts = [el("option", { value: "", text: "collection default" })];
      for (const p of Object.keys(state.presets)) opts.push(el("option", { value: p, text: p }));
      opts.push(el("option", { value: "custom", text: "custom spec" }));
      select.replaceChildren(...opts);
      select.value = [...select.options].some((o) => o.value === keep) ? keep : "";
      fill();
    },
    // what goes in the request's "pipeline": undefined (the collection's), a preset name, or a spec
    value() {
      if (select.value === "custom") return parseJson(spec.value, "the pipeline spec");
      return select.value || undefined;
    },
    label() {
      return select.value === "custom" ? "custom spec" : select.value || "collection default";
    },
  };
  state.pickers[name] = picker;
  return picker;
}

// -- collections, presets, API key -----------------------------------------------------------

async function refresh() {
  const box = $("#global-error");
  try {
    const [cols, pres] = await Promise.all([api("GET", "/v1/collections"), api("GET", "/v1/presets", undefined, true)]);
    state.presets = pres.presets;
    const sel = $("#collection");
    const keep = sel.value;
    sel.replaceChildren(...cols.collections.map((c) => el("option", { value: c, text: c })));
    if (cols.collections.includes(keep)) sel.value = keep;
    showError(box, cols.collections.length ? null : new Error("no collections yet: create one through the API"));
    await loadCollection();
  } catch (e) {
    showError(box, e);
  }
}

async function loadCollection() {
  const name = $("#collection").value;
  state.defaultSpec = null;
  if (name) {
    try {
      const info = await api("GET", `/v1/collections/${encodeURIComponent(name)}`, undefined, true);
      state.defaultSpec = (info.config && info.config.pipeline) || null;
    } catch (e) {
      showError($("#global-error"), e);
    }
  }
  for (const p of Object.values(state.pickers)) p.options();
}

// -- search ----------------------------------------------------------------------------------

const STAGE_COLORS = ["--s0", "--s1", "--s2", "--s3", "--s4", "--s5"];

function timingBar(box, timings) {
  const parts = Object.entries(timings || {}).filter(([k]) => k !== "total" && k !== "total_cpu");
  const sum = parts.reduce((a, [, v]) => a + v, 0) || 1;
  const bar = el("div", { class: "tbar", role: "img", "aria-label": "time per stage" });
  const legend = el("div", { class: "tlegend" });
  parts.forEach(([k, v], i) => {
    const color = `var(${STAGE_COLORS[i % STAGE_COLORS.length]})`;
    bar.append(el("span", { "data-stage": k, title: `${k}: ${v.toFixed(2)} ms`, style: `width:${(100 * v) / sum}%;background:${color}` }));
    legend.append(el("span", { "data-stage": k }, el("i", { style: `background:${color}` }), `${k} ${v.toFixed(2)} ms`));
  });
  if (timings && timings.total !== undefined) legend.append(el("span", { class: "total", text: `total ${timings.total.toFixed(2)} ms` }));
  box.replaceChildren(bar, legend);
}

function stageLabel(stage) {
  const [kind, name] = stage.split(/:(.*)/s);
  return kind === "fuse" ? `fused (${name})` : name || stage;
}

// The hit's rank at each stage: the first-stage retrievers side by side (parallel lists), then
// the fusion and each reranker in turn, each arrow into a reranker carrying the move it made.
function stageChips(stages, ranks) {
  const chips = el("div", { class: "chips stages" });
  let prev;
  stages.forEach((s, i) => {
    const r = ranks[s];
    const retriever = s.startsWith("retrieve:");
    if (i) {
      const sep = el("span", { class: retriever ? "sep" : "arrow", "data-stage": s }, retriever ? "·" : "→");
      if (s.startsWith("rerank:") && prev !== undefined && r !== undefined && prev !== r) {
        const d = prev - r;
        sep.append(el("span", { class: d > 0 ? "move up" : "move down", "data-delta": String(d), text: d > 0 ? `▲${d}` : `▼${-d}`, title: `${s} moved it ${d > 0 ? "up" : "down"} ${Math.abs(d)}` }));
      }
      chips.append(sep);
    }
    prev = r;
    chips.append(el("span", {
      class: r === undefined ? "chip absent" : "chip",
      "data-stage": s,
      "data-rank": r === undefined ? "" : String(r),
      title: r === undefined ? `${s}: not in this stage's list` : `${s}: rank ${r}`,
      text: `${stageLabel(s)} ${r === undefined ? "–" : "#" + r}`,
    }));
  });
  return chips;
}

function hitItem(hit, i, words, stages) {
  const rank = i + 1;
  const meta = hit.metadata || {};
  const head = el("div", { class: "head" },
    el("span", { class: "rank", text: String(rank) }),
    el("span", { class: "title", text: hit.title || hit.doc_id }),
    el("span", { class: "meta", text: `${hit.doc_id}${hit.id !== hit.doc_id ? ` (${hit.id})` : ""} · score ${hit.score.toFixed(4)}` }));
  const li = el("li", { class: "hit", "data-id": hit.id, "data-doc-id": hit.doc_id, "data-rank": String(rank) }, head);
  if (hit.text) li.append(el("div", { class: "snippet" }, highlighted(hit.text, words)));
  const shown = Object.entries(meta).filter(([k]) => !["parent_id", "start", "end"].includes(k));
  if (shown.length) {
    li.append(el("div", { class: "chips metadata" }, ...shown.map(([k, v]) => el("span", { class: "chip", text: `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}` }))));
  }
  if (stages && hit.ranks) li.append(stageChips(stages, hit.ranks));
  return li;
}

function searchBody(query, k, picker, filter) {
  const body = { collection: $("#collection").value, query, k, explain: true, fields: ["title", "text", "metadata"] };
  const pipeline = picker.value();
  if (pipeline !== undefined) body.pipeline = pipeline;
  if (filter !== undefined) body.filter = filter;
  return body;
}

let searchSeq = 0;

async function runSearch(ev) {
  ev.preventDefault();
  const errBox = $("#search-error");
  const list = $("#search-hits");
  const query = $("#search-query").value;
  const seq = ++searchSeq;
  list.dataset.state = "loading";
  try {
    const filter = parseJson($("#search-filter").value, "the filter");
    const body = searchBody(query, Number($("#search-k").value) || 10, state.pickers.search, filter);
    const out = await api("POST", "/v1/search", body);
    if (seq !== searchSeq) return;
    showError(errBox, null);
    const words = terms(query);
    const hits = out.results[0].hits;
    list.replaceChildren(...hits.map((h, i) => hitItem(h, i, words, out.stages)));
    if (!hits.length) list.append(el("li", { class: "summary", text: "no hits" }));
    timingBar($("#search-timings"), out.timings_ms);
    list.dataset.pipeline = out.pipeline;
    list.dataset.state = "done";
  } catch (e) {
    if (seq !== searchSeq) return;
    showError(errBox, e);
    list.dataset.state = "error";
  }
}

// -- compare ---------------------------------------------------------------------------------

async function runCompare(ev) {
  ev.preventDefault();
  const errBox = $("#compare-error");
  const query = $("#compare-query").value;
  const k = Number($("#compare-k").value) || 10;
  const pa = state.pickers["compare-a"];
  const pb = state.pickers["compare-b"];
  $("#compare-summary").dataset.state = "loading";
  try {
    const [a, b] = await Promise.all([api("POST", "/v1/search", searchBody(query, k, pa)), api("POST", "/v1/search", searchBody(query, k, pb))]);
    showError(errBox, null);
    const ha = a.results[0].hits;
    const hb = b.results[0].hits;
    const rankA = new Map(ha.map((h, i) => [h.id, i + 1]));
    const rankB = new Map(hb.map((h, i) => [h.id, i + 1]));
    const shared = ha.filter((h) => rankB.has(h.id)).length;
    const n = Math.max(ha.length, hb.length) || 1;
    const summary = $("#compare-summary");
    summary.textContent = `overlap of the top ${k}: ${shared} of ${n} (${Math.round((100 * shared) / n)}%)`;
    summary.dataset.overlap = String(shared);
    const words = terms(query);
    const render = (hits, own, other, otherName) =>
      hits.map((h, i) => {
        const li = hitItem(h, i, words, null);
        const r = other.get(h.id);
        li.classList.add(r === undefined ? "only" : "shared");
        const chips = el("div", { class: "chips change" });
        if (r === undefined) chips.append(el("span", { class: "move new", text: `not in ${otherName}`, "data-change": "only" }));
        else {
          const d = r - (i + 1);
          const cls = d > 0 ? "move up" : d < 0 ? "move down" : "move";
          const txt = d > 0 ? `▲${d}` : d < 0 ? `▼${-d}` : "=";
          chips.append(el("span", { class: "chip", text: `${otherName} #${r}` }), el("span", { class: cls, text: txt, "data-change": String(d), title: `rank here vs in ${otherName}` }));
        }
        li.append(chips);
        return li;
      });
    const title = (picker, out) => (picker.label() === out.pipeline ? out.pipeline : `${picker.label()} (${out.pipeline})`);
    $("#compare-title-a").textContent = `A: ${title(pa, a)}`;
    $("#compare-title-b").textContent = `B: ${title(pb, b)}`;
    $("#compare-hits-a").replaceChildren(...render(ha, rankA, rankB, "B"));
    $("#compare-hits-b").replaceChildren(...render(hb, rankB, rankA, "A"));
    timingBar($("#compare-timings-a"), a.timings_ms);
    timingBar($("#compare-timings-b"), b.timings_ms);
    summary.dataset.state = "done";
  } catch (e) {
    showError(errBox, e);
    $("#compare-summary").dataset.state = "error";
  }
}

// -- context ---------------------------------------------------------------------------------

async function runContext(ev) {
  ev.preventDefault();
  const errBox = $("#context-error");
  const summary = $("#context-summary");
  summary.dataset.state = "loading";
  try {
    const body = { collection: $("#collection").value, query: $("#context-query").value, max_tokens: Number($("#context-max").value) || 512 };
    const pipeline = state.pickers.context.value();
    if (pipeline !== undefined) body.pipeline = pipeline;
    const out = await api("POST", "/v1/context", body);
    showError(errBox, null);
    summary.textContent = `${out.tokens} of ${body.max_tokens} tokens · ${out.passages.length} passages · ` +
      `${out.duplicates_removed} near-duplicates removed · ${out.skipped_for_budget} skipped for the budget`;
    summary.dataset.tokens = String(out.tokens);
    $("#context-text").textContent = out.context;
    $("#context-citations").replaceChildren(...out.passages.map((p) => el("li", { class: "hit", "data-doc-id": p.doc_id },
      el("div", { class: "head" },
        el("span", { class: "rank", text: `[${p.marker}]` }),
        el("span", { class: "title", text: p.title || p.doc_id }),
        el("span", { class: "meta", text: `${p.doc_id} · score ${p.score.toFixed(4)} · ${p.tokens} tokens` +
          (p.start !== null && p.start !== undefined ? ` · chars ${p.start}–${p.end}` : "") })))));
    summary.dataset.state = "done";
  } catch (e) {
    showError(errBox, e);
    summary.dataset.state = "error";
  }
}

// -- wiring ----------------------------------------------------------------------------------

function selectTab(name) {
  for (const b of document.querySelectorAll("[data-tab]")) b.setAttribute("aria-selected", String(b.dataset.tab === name));
  for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== `tab-${name}`;
}

document.addEventListener("DOMContentLoaded", () => {
  makePicker("search", "Pipeline");
  makePicker("compare-a", "Pipeline A");
  makePicker("compare-b", "Pipeline B");
  makePicker("context", "Pipeline");
  for (const b of document.querySelectorAll("[data-tab]")) b.addEventListener("click", () => selectTab(b.dataset.tab));
  $("#collection").addEventListener("change", loadCollection);
  $("#api-key").addEventListener("change", refresh);
  $("#search-form").addEventListener("submit", runSearch);
  $("#compare-form").addEventListener("submit", runCompare);
  $("#context-form").addEventListener("submit", runContext);
  refresh().then(() => {
    document.body.dataset.ready = "true";
  });
});
