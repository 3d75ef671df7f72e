// Task explorer: filters (status, type, time range, text), cursor pages, live rows.

import { api } from "./api.js";
import { onEvent } from "./live.js";
import { taskRow } from "./rows.js";
import { clear, el, flash } from "./ui.js";

const $ = (id) => document.getElementById(id);
const rows = new Map();
let next = null;
let query = "";
let fresh = 0;
let typesLoaded = false;

export function mount() {
  $("filters").addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  $("filters").addEventListener("reset", () => setTimeout(load, 0));
  $("explorer-more").addEventListener("click", () => load(next));
  $("explorer-new").querySelector("button").addEventListener("click", () => load());
  onEvent((ev) => {
    const row = rows.get(ev.task_id);
    if (row) row.update(ev);
    else if (ev.type === "created" && query !== null) {
      fresh += 1;
      const note = $("explorer-new");
      note.querySelector("span").textContent = `${fresh} new task${fresh === 1 ? "" : "s"} since this list loaded.`;
      note.hidden = false;
    }
  });
}

function isoOf(local) {
  // datetime-local has no zone: it is the browser's local time
  return local ? new Date(local).toISOString() : null;
}

function params() {
  const p = new URLSearchParams({ limit: "25" });
  const status = $("f-status").value, type = $("f-type").value, q = $("f-q").value.trim();
  if (status) p.set("status", status);
  if (type) p.set("type", type);
  const after = isoOf($("f-after").value), before = isoOf($("f-before").value);
  if (after) p.set("created_after", after);
  if (before) p.set("created_before", before);
  if (q) p.set("q", q);
  return p;
}

async function load(cursor = null) {
  const p = params();
  if (cursor) p.set("cursor", cursor);
  let page;
  try { page = await api(`/tasks?${p}`); } catch (e) { flash("tasks: " + e.message); return; }
  flash("");
  if (!cursor) {
    rows.clear();
    clear($("explorer-rows"));
    fresh = 0;
    $("explorer-new").hidden = true;
    query = p.toString();
  }
  for (const t of page.items) {
    const row = taskRow(t, { last: "created" });
    rows.set(t.task_id, row);
    $("explorer-rows").append(row.tr);
  }
  if (!rows.size) {
    $("explorer-rows").append(el("tr", {}, el("td", { colspan: "6", class: "hint", text: "no tasks match" })));
  }
  next = page.next_cursor;
  $("explorer-more").hidden = !next;
  $("explorer-caption").textContent = `Newest first; ${rows.size} shown${next ? ", more on the next page" : ""}.`;
}

export async function show() {
  if (!typesLoaded) {
    try {
      const types = await api("/task-types");
      $("f-type").append(...types.map((t) => el("option", { text: t.type })));
      typesLoaded = true;
    } catch { /* the type filter stays "any" */ }
  }
  if (!rows.size) await load();
}

export function reset() { rows.clear(); clear($("explorer-rows")); next = null; }
