// Dead letters: failed tasks with their last error and attempt history; re-drive one or a
// selection.

import { api } from "./api.js";
import { onEvent } from "./live.js";
import { clear, el, flash, fmtTime, short, taskLink } from "./ui.js";

const $ = (id) => document.getElementById(id);
const rows = new Map();
let next = null;
let fresh = 0;

export function mount() {
  $("dead-redrive").addEventListener("click", () => redrive(selected()));
  $("dead-all").addEventListener("change", (ev) => {
    for (const box of $("dead-rows").querySelectorAll("input[type=checkbox]")) box.checked = ev.target.checked;
    count();
  });
  $("dead-more").addEventListener("click", () => load(next));
  $("dead-new").querySelector("button").addEventListener("click", () => load());
  $("dead-rows").addEventListener("change", count);
  onEvent((ev) => {
    if (ev.type === "failed" && !rows.has(ev.task_id)) {
      fresh += 1;
      const note = $("dead-new");
      note.querySelector("span").textContent = `${fresh} new dead letter${fresh === 1 ? "" : "s"}.`;
      note.hidden = false;
    } else if (ev.type === "redriven" && rows.has(ev.task_id)) {
      rows.get(ev.task_id).remove();
      rows.delete(ev.task_id);
      count();
    }
  });
}

function selected() {
  return [...$("dead-rows").querySelectorAll("input[type=checkbox]:checked")].map((b) => b.value);
}

function count() {
  const n = selected().length;
  $("dead-count").textContent = n ? `${n} selected` : `${rows.size} dead letter${rows.size === 1 ? "" : "s"} shown`;
  $("dead-redrive").disabled = n === 0;
}

async function redrive(ids) {
  if (!ids.length) return;
  const failed = [];
  for (const id of ids) {
    try {
      await api(`/tasks/${id}/retry`, { method: "POST" });
      if (rows.has(id)) { rows.get(id).remove(); rows.delete(id); }
    } catch (e) { failed.push(`${short(id)}: ${e.message}`); }
  }
  flash(failed.length ? "re-drive: " + failed.join("; ") : "");
  $("dead-count").textContent = `re-driven ${ids.length - failed.length} of ${ids.length}`;
  $("dead-redrive").disabled = true;
  $("dead-all").checked = false;
}

function historyOf(items) {
  if (!items.length) return el("span", { class: "hint", text: "—" });
  return el("details", {},
    el("summary", { text: `${items.filter((e) => e.type === "started").length} attempt(s)` }),
    el("ol", {}, ...items.map((e) => el("li", {},
      el("span", { class: "hint", text: fmtTime(e.created_at) + " " }),
      el("strong", { text: e.type }), ` (attempt ${e.attempt})`,
      e.error || e.message ? `: ${e.error || e.message}` : ""))));
}

async function load(cursor = null) {
  let page;
  try { page = await api(`/dead-letters?limit=25${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`); }
  catch (e) { flash("dead letters: " + e.message); return; }
  if (!cursor) {
    rows.clear(); clear($("dead-rows")); fresh = 0; $("dead-new").hidden = true; $("dead-all").checked = false;
  }
  for (const { task: t, history } of page.items) {
    const tr = el("tr", { dataset: { taskId: t.task_id } },
      el("td", {}, el("input", { type: "checkbox", value: t.task_id, "aria-label": `select task ${t.task_id}` })),
      el("td", {}, taskLink(t.task_id)),
      el("td", { text: t.type }),
      el("td", { class: "msg", text: t.error || "", title: t.error || "" }),
      el("td", { class: "opt" }, `${t.attempts}/${t.max_attempts} `, historyOf(history)),
      el("td", {}, el("button", { type: "button", class: "secondary", text: "Re-drive",
                                  "aria-label": `re-drive task ${t.task_id}`,
                                  onclick: () => redrive([t.task_id]) })));
    rows.set(t.task_id, tr);
    $("dead-rows").append(tr);
  }
  if (!rows.size) $("dead-rows").append(el("tr", {}, el("td", { colspan: "6", class: "hint", text: "no dead letters" })));
  next = page.next_cursor;
  $("dead-more").hidden = !next;
  count();
}

export async function show() { await load(); }
export function reset() { rows.clear(); clear($("dead-rows")); }
