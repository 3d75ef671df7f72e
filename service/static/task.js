// One task: parameters, result, error, attempts, the live event timeline, actions (cancel,
// re-drive, copy as curl) and, for a batch parent, its children with their bars.

import { api, session } from "./api.js";
import { followTask, onEvent } from "./live.js";
import { cancelTask, taskRow } from "./rows.js";
import { TERMINAL, bar, clear, el, flash, fmtTime, json, setBar, statusBadge } from "./ui.js";

const $ = (id) => document.getElementById(id);
let current = null;  // { id, task, follow, timeline, children }

export function mount() {
  onEvent((ev) => {
    if (current && current.children.has(ev.task_id)) current.children.get(ev.task_id).update(ev);
  });
}

export function hide() {
  if (current && current.follow) current.follow.close();
  current = null;
}

// What an event says, by type; anything unknown is shown generically (type, message, data).
function describe(ev) {
  const d = ev.data || {};
  switch (ev.type) {
    case "progress": return [`${Math.round(ev.progress)}%${ev.message ? " — " + ev.message : ""}`];
    case "log": return [ev.message || ""];
    case "partial": return [ev.message || "", json(ev.data)];
    case "retrying": case "requeued": case "failed": case "cancelled":
      return [ev.error || ev.message || "", ev.data ? json(ev.data) : null];
    case "completed": return ["result", json(ev.result)];
    case "step_started": return [`step ${d.step ?? "?"} (#${d.index ?? "?"}) started`];
    case "step_completed": return [`step ${d.step ?? "?"} (#${d.index ?? "?"}) completed`,
                                   d.result !== undefined ? json(d.result) : null];
    case "suspended":
      return [`waiting for signal "${d.signal ?? "?"}"` + (d.deadline ? ` until ${fmtTime(d.deadline)}` : "")];
    case "text": {
      const text = String(d.text ?? "");
      return [`text stream "${d.stream ?? ""}" (${d.length ?? text.length} chars)`,
              el("pre", { text })];
    }
    default: return [ev.message || "", ev.data !== null && ev.data !== undefined ? json(ev.data) : null];
  }
}

export function timelineItem(ev) {
  return el("li", { class: `t-${ev.type}`, dataset: { seq: ev.seq } },
    el("span", { class: "when", text: fmtTime(ev.created_at) }),
    el("span", { class: "etype", text: ev.type }),
    el("span", { class: "att", text: ev.attempt ? `attempt ${ev.attempt}` : "" }),
    el("div", {}, ...describe(ev)));
}

function shellQuote(s) { return "'" + String(s).replace(/'/g, "'\\''") + "'"; }

function curlOf(t) {
  const body = { type: t.type, params: t.params };
  if (t.priority && t.priority !== "normal") body.priority = t.priority;
  if (t.max_attempts) body.max_attempts = t.max_attempts;
  const lines = [`curl -X POST ${shellQuote(location.origin + "/tasks")}`,
                 `-H 'Content-Type: application/json'`];
  // The key is never copied: the command reads it from the environment.
  if (session.auth) lines.push(`-H "Authorization: Bearer $TASKSTREAM_API_KEY"`);
  if (session.tenant) lines.push(`-H ${shellQuote("X-Tenant: " + session.tenant)}`);
  lines.push(`-d ${shellQuote(JSON.stringify(body))}`);
  return lines.join(" \\\n  ");
}

function facts(pairs) {
  return el("dl", { class: "facts" }, ...pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
}

function attemptsOf(events) {
  // one entry per started attempt, with how it ended
  const out = new Map();
  for (const ev of events) {
    if (!ev.attempt) continue;
    if (ev.type === "started") out.set(ev.attempt, { attempt: ev.attempt, started: ev.created_at, end: "running" });
    else if (out.has(ev.attempt) && ["retrying", "requeued", "failed", "completed", "cancelled", "suspended",
                                     "resumed"].includes(ev.type)) {
      const a = out.get(ev.attempt);
      a.end = ev.type; a.error = ev.error || (ev.type === "completed" ? "" : ev.message); a.ended = ev.created_at;
    }
  }
  return [...out.values()];
}

function render(t) {
  const body = clear($("task-body"));
  $("h-task").textContent = `Task ${t.task_id}`;
  const b = bar(t.progress, "task progress");
  const status = el("span", {}, statusBadge(t.status));
  const cancelBtn = el("button", { type: "button", class: "danger", id: "task-cancel", text: "Cancel",
                                   onclick: async () => {
                                     try { update(await cancelTask(t.task_id)); flash(""); }
                                     catch (e) { flash("cancel: " + e.message); }
                                   } });
  const redriveBtn = el("button", { type: "button", id: "task-redrive", text: "Re-drive",
                                    onclick: async () => {
                                      try { update(await api(`/tasks/${t.task_id}/retry`, { method: "POST" }));
                                            flash(""); follow(); }
                                      catch (e) { flash("re-drive: " + e.message); }
                                    } });
  const curl = el("pre", { id: "task-curl", hidden: true, text: curlOf(t) });
  const copyBtn = el("button", { type: "button", class: "secondary", id: "task-copy", text: "Copy as curl",
                                 onclick: async () => {
                                   curl.hidden = false;
                                   try { await navigator.clipboard.writeText(curl.textContent);
                                         copyBtn.textContent = "Copied"; }
                                   catch { copyBtn.textContent = "Select the command below"; }
                                   setTimeout(() => { copyBtn.textContent = "Copy as curl"; }, 2000);
                                 } });
  // A run parked in ctx.wait_for: deliver its signal from here (POST /tasks/{id}/signals/{name}).
  const sigName = el("input", { id: "signal-name", required: true, maxlength: "200" });
  const sigBody = el("textarea", { id: "signal-payload", rows: "3", spellcheck: "false" });
  sigBody.value = "{}";
  const signalForm = el("form", { class: "card", id: "task-signal", hidden: true, "aria-label": "Send a signal",
                                  onsubmit: async (e) => {
    e.preventDefault();
    let payload;
    try { payload = sigBody.value.trim() ? JSON.parse(sigBody.value) : null; }
    catch (err) { flash("signal: the payload is not JSON: " + err.message); return; }
    try {
      await api(`/tasks/${t.task_id}/signals/${encodeURIComponent(sigName.value)}`, { method: "POST", json: payload });
      signalForm.hidden = true; flash("");
    } catch (err) { flash("signal: " + err.message); }
  } },
    el("h3", { text: "Waiting for a signal" }),
    el("div", { class: "inline-form" },
      el("label", { for: "signal-name" }, "signal ", sigName),
      el("label", { for: "signal-payload" }, "payload (JSON) ", sigBody),
      el("button", { type: "submit", text: "Send signal" })));
  const errorBox = el("div", { id: "task-error" });
  const resultBox = el("div", { id: "task-result" });
  const attemptsBox = el("div", { id: "task-attempts" });
  const timeline = el("ol", { class: "timeline", id: "timeline", "aria-live": "polite" });
  const batchBox = el("div", { id: "task-batch" });
  body.append(
    el("div", { class: "grid" },
      el("div", { class: "card" }, facts([["type", t.type], ["status", status], ["progress", b],
        ["priority", t.priority], ["created", fmtTime(t.created_at)], ["started", fmtTime(t.started_at)],
        ["finished", fmtTime(t.finished_at)], ["run at", t.run_at ? fmtTime(t.run_at) : null]])),
      el("div", { class: "card" }, el("h3", { text: "Attempts" }), attemptsBox)),
    el("div", { class: "actions" }, cancelBtn, redriveBtn, copyBtn),
    curl,
    signalForm,
    errorBox,
    batchBox,
    el("h3", { text: "Parameters" }), json(t.params),
    resultBox,
    el("h3", { text: "Timeline" }), timeline);

  const events = [];
  const update = (s) => {
    Object.assign(t, Object.fromEntries(Object.entries(s).filter(([k]) =>
      ["status", "progress", "message", "result", "error", "attempts", "max_attempts", "failures",
       "failure_reason", "last_event_id", "batch", "finished_at", "started_at"].includes(k))));
    if (s.seq === undefined && s.type) t.type = s.type;
    status.replaceChildren(statusBadge(t.status));
    setBar(b, t.progress);
    cancelBtn.hidden = TERMINAL.includes(t.status);
    redriveBtn.hidden = !["failed", "cancelled"].includes(t.status);
    clear(errorBox);
    if (t.error && t.status !== "completed") {
      errorBox.append(el("h3", { text: "Error" }),
        facts([["reason", t.failure_reason], ["message", el("pre", { class: "failed", text: t.error })]]));
    }
    clear(resultBox);
    if (t.status === "completed") resultBox.append(el("h3", { text: "Result" }), json(t.result));
    renderAttempts();
    if (t.batch) renderBatch(t, batchBox);
  };
  const renderAttempts = () => {
    const list = attemptsOf(events);
    clear(attemptsBox).append(
      el("p", { text: `${t.attempts} of ${t.max_attempts} attempts used` +
                      (t.failures ? `, ${t.failures} failed` : "") }),
      ...(list.length ? [el("ol", {}, ...list.map((a) => el("li", {},
        `#${a.attempt} ${fmtTime(a.started)} → `, el("span", { class: `status ${a.end === "retrying" ? "failed" : a.end}`, text: a.end }),
        a.error ? `: ${a.error}` : "")))] : []));
  };
  const add = (ev) => {
    if (events.length && ev.seq <= events[events.length - 1].seq) return;  // already shown
    events.push(ev);
    timeline.append(timelineItem(ev));
    const parked = ev.type === "suspended";
    if (parked && ev.data && ev.data.signal) sigName.value = ev.data.signal;
    signalForm.hidden = !parked;
  };
  const follow = () => {
    if (current.follow) current.follow.close();
    const after = events.length ? events[events.length - 1].seq : 0;
    current.follow = followTask(t.task_id, after, (ev) => {
      add(ev); update(ev);
      // the snapshot's counters (attempts, failures) are not on events: read it once at the end
      if (TERMINAL.includes(ev.type)) api(`/tasks/${t.task_id}`).then(update).catch(() => {});
    }, () => {});
  };
  update({});  // buttons and sections in the snapshot's state before the history arrives
  return { update, add, follow };
}

async function renderBatch(t, box) {
  const agg = t.batch;
  if (!current.batchShown) {
    current.batchShown = true;
    clear(box).append(el("h3", { text: "Batch" }), el("div", { id: "batch-aggregate" }),
      el("div", { class: "table-wrap" }, el("table", {},
        el("caption", { class: "hint", text: "Children (live)" }),
        el("thead", {}, el("tr", {}, ...["task", "type", "status", "progress", "message", "created"].map((h) =>
          el("th", { scope: "col", text: h, class: ["message", "created"].includes(h) ? "opt" : null })))),
        el("tbody", { id: "batch-children" }))));
    // children: in the aggregate, or behind a link the snapshot names
    let children = Array.isArray(agg.children) ? agg.children : null;
    const link = (t.links && t.links.children) || agg.children_url;
    if (!children && link) {
      try { const page = await api(link); children = page.items || page; } catch { children = null; }
    }
    for (const c of children || []) {
      if (typeof c !== "object" || !c.task_id) continue;
      const row = taskRow(c, { last: "created" });
      current.children.set(c.task_id, row);
      $("batch-children").append(row.tr);
    }
  }
  const shown = Object.entries(agg).filter(([k, v]) => k !== "children" && typeof v !== "object");
  clear($("batch-aggregate")).append(facts(shown.map(([k, v]) => [k.replace(/_/g, " "), String(v)])),
    ...Object.entries(agg).filter(([k, v]) => k !== "children" && v && typeof v === "object")
      .map(([k, v]) => el("details", {}, el("summary", { text: k }), json(v))));
}

export async function show(id) {
  hide();
  current = { id, children: new Map(), follow: null, batchShown: false };
  const mine = current;
  clear($("task-body")).append(el("p", { class: "hint", text: "loading…" }));
  let t;
  try { t = await api(`/tasks/${encodeURIComponent(id)}`); }
  catch (e) { clear($("task-body")).append(el("p", { class: "failed", text: e.message })); return; }
  if (current !== mine) return;
  const view = render(t);
  // history first (oldest first, pages of 1000), then the live stream from where it ended
  let after = 0;
  for (;;) {
    let page;
    try { page = await api(`/tasks/${t.task_id}/events?after=${after}`); } catch (e) { flash(e.message); break; }
    if (current !== mine) return;
    for (const ev of page.items) view.add(ev);
    if (page.next_after === null) break;
    after = page.next_after;
  }
  view.update(t);
  if (!TERMINAL.includes(t.status)) view.follow();
}
