// Overview: tasks by status and type now, throughput and failure rate over the last hour,
// queues, workers, open streams, recent tasks (live), and forms to run something.

import { api, session } from "./api.js";
import { onEvent } from "./live.js";
import { cancelTask, taskRow } from "./rows.js";
import { clear, debounce, el, flash, fmtAge, fmtTime } from "./ui.js";

const STATUSES = ["pending", "running", "completed", "failed", "cancelled"];
// Events that move a task from one status to another: only these change the counts.
const MOVES = new Set(["created", "started", "retrying", "requeued", "completed", "failed",
                       "cancelled", "redriven", "suspended", "resumed"]);
const $ = (id) => document.getElementById(id);

const recent = new Map();  // task_id -> row
let visible = false;
let workerAges = [];       // [cell, age at fetch, fetched at]
let ticker = null;

export function mount() {
  $("demo-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const params = { duration: Number($("duration").value), steps: Number($("steps").value) };
    try { addRecent(await api("/tasks", { method: "POST", json: { type: "demo", params } })); flash(""); }
    catch (e) { flash("submit: " + e.message); }
  });
  $("upload-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const fd = new FormData(); fd.append("file", $("file").files[0]);
    try {
      const r = await api("/upload", { method: "POST", body: fd });
      addRecent(await api(`/tasks/${r.task_id}`));
      flash("");
    } catch (e) { flash("upload: " + e.message); }
  });
  const refresh = debounce(refreshStats, 1500);
  // New tasks: one read of the newest page per burst, not one request per task.
  const newest = debounce(async () => {
    const page = await api("/tasks?limit=20");
    for (const t of page.items.reverse()) if (!recent.has(t.task_id)) addRecent(t);
  }, 300);
  onEvent((ev) => {
    const row = recent.get(ev.task_id);
    if (row) row.update(ev);
    else if (ev.type === "created" || ev.type === "started") newest();
    if (visible && MOVES.has(ev.type)) refresh();
  });
}

function addRecent(t) {
  const have = recent.get(t.task_id);
  if (have) { have.update(t); return; }
  const row = taskRow(t, { onCancel: async (id) => {
    try { row.update(await cancelTask(id)); } catch (e) { flash("cancel: " + e.message); }
  } });
  recent.set(t.task_id, row);
  $("tasks").prepend(row.tr);
  while (recent.size > 50) {
    const [oldest] = recent.keys();
    recent.get(oldest).tr.remove();
    recent.delete(oldest);
  }
}

export async function show() {
  visible = true;
  if (!ticker) ticker = setInterval(tickAges, 1000);
  await Promise.all([loadRecent(), refreshStats()]);
}

export function hide() {
  visible = false;
  clearInterval(ticker); ticker = null;
}

export function reset() {
  recent.clear();
  clear($("tasks"));
}

async function loadRecent() {
  if (recent.size) return;
  try {
    const page = await api("/tasks?limit=20");
    for (const t of page.items.reverse()) addRecent(t);
  } catch (e) { flash("list: " + e.message); }
}

async function refreshStats() {
  let ov;
  try { ov = await api("/stats/overview"); } catch (e) { flash("overview: " + e.message); return; }
  renderCounts(ov);
  renderQueues(ov);
  renderChart(ov);
  $("streams-summary").textContent =
    `This web process holds ${ov.streams.open} open stream${ov.streams.open === 1 ? "" : "s"} ` +
    `(${ov.streams.tenant_open} of this tenant). Each web process counts only its own.`;
  if (session.admin) {
    $("workers-summary").textContent = `${ov.workers_live} live worker${ov.workers_live === 1 ? "" : "s"}`;
    const [workers, all] = await Promise.all([
      api("/workers").catch(() => null), api("/stats/overview?all_tenants=true").catch(() => null)]);
    renderWorkers(ov, workers);
    renderTenants(all);
  } else {
    renderWorkers(ov, null);
  }
}

function tally(counts, keyOf) {
  const out = new Map();
  for (const c of counts) {
    const k = keyOf(c);
    if (!out.has(k)) out.set(k, Object.fromEntries(STATUSES.map((s) => [s, 0])));
    out.get(k)[c.status] = (out.get(k)[c.status] || 0) + c.count;
  }
  return out;
}

function renderCounts(ov) {
  const total = Object.fromEntries(STATUSES.map((s) => [s, 0]));
  for (const c of ov.counts) total[c.status] = (total[c.status] || 0) + c.count;
  clear($("kpis")).append(...STATUSES.map((s) =>
    el("div", {}, el("dt", { text: s }), el("dd", { class: s, id: `kpi-${s}`, text: String(total[s]) }))));
  const rows = [...tally(ov.counts, (c) => c.type)].sort(([a], [b]) => a.localeCompare(b));
  clear($("by-type")).append(...(rows.length ? rows.map(([type, n]) => el("tr", {},
    el("th", { scope: "row", text: type }),
    ...STATUSES.map((s) => el("td", { class: `num${["completed", "cancelled"].includes(s) ? " opt" : ""}`,
                                      text: String(n[s]) }))))
    : [el("tr", {}, el("td", { colspan: "6", class: "hint", text: "no tasks yet" }))]));
}

function renderQueues(ov) {
  clear($("queues")).append(...(ov.queues.length ? ov.queues.map((q) => el("tr", {},
    el("th", { scope: "row", text: q.type }), el("td", { class: "num", text: String(q.pending) }),
    el("td", { class: "num", text: q.oldest_age_seconds === null ? "not due yet" : fmtAge(q.oldest_age_seconds) })))
    : [el("tr", {}, el("td", { colspan: "3", class: "hint", text: "nothing waiting" }))]));
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...kids) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  for (const k of kids) e.append(k);
  return e;
}

// Stacked bars of tasks finished per minute (completed, failed, cancelled) and the failure
// rate (failed / (completed + failed)) as a line on a 0-100 % scale.
function renderChart(ov) {
  const n = ov.minutes;
  const now = new Date(ov.now);
  const end = Math.floor(now.getTime() / 60000);
  const buckets = new Map(ov.throughput.map((b) => [Math.floor(new Date(b.minute).getTime() / 60000), b]));
  const data = [];
  for (let i = n - 1; i >= 0; i--) {
    const b = buckets.get(end - i) || { completed: 0, failed: 0, cancelled: 0 };
    data.push(b);
  }
  const W = 600, H = 150, L = 34, B = 18, T = 8, R = 34;
  const max = Math.max(1, ...data.map((b) => b.completed + b.failed + b.cancelled));
  const bw = (W - L - R) / n;
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "h-chart chart-summary" });
  chart.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#c3c8cf" }));
  chart.append(svg("text", { x: L - 4, y: T + 8, "text-anchor": "end", "font-size": 10, fill: "#5f6670" }, String(max)));
  chart.append(svg("text", { x: L - 4, y: H - B, "text-anchor": "end", "font-size": 10, fill: "#5f6670" }, "0"));
  chart.append(svg("text", { x: W - R + 4, y: T + 8, "font-size": 10, fill: "#b3261e" }, "100%"));
  chart.append(svg("text", { x: L, y: H - 4, "font-size": 10, fill: "#5f6670" }, `-${n} min`));
  chart.append(svg("text", { x: W - R, y: H - 4, "text-anchor": "end", "font-size": 10, fill: "#5f6670" }, "now"));
  const points = [];
  data.forEach((b, i) => {
    const x = L + i * bw;
    let base = 0;
    for (const [k, color] of [["completed", "#187a2f"], ["failed", "#b3261e"], ["cancelled", "#9aa1aa"]]) {
      if (!b[k]) continue;
      const top = y(base + b[k]);
      chart.append(svg("rect", { x: x + 1, width: Math.max(1, bw - 2), y: top, height: y(base) - top,
                                 fill: color }, svg("title", {}, `${b[k]} ${k}`)));
      base += b[k];
    }
    if (b.completed + b.failed) {
      points.push(`${x + bw / 2},${T + (H - T - B) * (1 - b.failed / (b.completed + b.failed))}`);
    }
  });
  if (points.length > 1) {
    chart.append(svg("polyline", { points: points.join(" "), fill: "none", stroke: "#b3261e",
                                   "stroke-width": 1.5, "stroke-dasharray": "4 3" }));
  }
  clear($("chart")).append(chart);
  const sum = data.reduce((a, b) => ({ completed: a.completed + b.completed, failed: a.failed + b.failed,
                                       cancelled: a.cancelled + b.cancelled }), { completed: 0, failed: 0, cancelled: 0 });
  const rate = sum.completed + sum.failed ? Math.round(100 * sum.failed / (sum.completed + sum.failed)) : 0;
  $("chart-summary").textContent = `Last hour: ${sum.completed} completed, ${sum.failed} failed, ` +
    `${sum.cancelled} cancelled; failure rate ${rate}% (dashed line, right scale).`;
}

function renderWorkers(ov, workers) {
  $("workers-summary").textContent = `${ov.workers_live} live worker${ov.workers_live === 1 ? "" : "s"}` +
    (workers || session.admin ? "" : " (the list is for admin keys).");
  $("workers-wrap").hidden = !workers;
  if (!workers) return;
  const fetched = Date.now();
  workerAges = [];
  clear($("workers")).append(...workers.map((w) => {
    const age = el("td", { text: fmtAge(w.heartbeat_age_seconds) + " ago", title: fmtTime(w.last_heartbeat) });
    workerAges.push([age, w.heartbeat_age_seconds, fetched]);
    return el("tr", { class: w.live ? "" : "cancelled" },
      el("th", { scope: "row" }, el("code", { text: w.worker_id })),
      age,
      el("td", { class: "num", text: String(w.running) }),
      el("td", {}, el("code", { text: w.version })),
      el("td", { class: "opt", text: Object.keys(w.types).sort().join(", ") }));
  }));
}

function tickAges() {
  for (const [cell, age, at] of workerAges) {
    cell.textContent = fmtAge(age + (Date.now() - at) / 1000) + " ago";
  }
}

function renderTenants(all) {
  $("tenants-card").hidden = !all;
  if (!all) return;
  const rows = [...tally(all.counts, (c) => c.tenant)].sort(([a], [b]) => a.localeCompare(b));
  clear($("tenants")).append(...rows.map(([tenant, n]) => el("tr", {},
    el("th", { scope: "row", text: tenant }),
    ...STATUSES.map((s) => el("td", { class: `num${["completed", "cancelled"].includes(s) ? " opt" : ""}`,
                                      text: String(n[s]) })))));
}

export async function tenants() {
  const all = await api("/stats/overview?all_tenants=true");
  return [...new Set(all.counts.map((c) => c.tenant))].sort();
}
