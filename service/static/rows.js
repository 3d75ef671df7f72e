// A task as a table row that stream events keep up to date: used by the overview's recent
// tasks, the explorer and a batch's children.

import { api } from "./api.js";
import { TERMINAL, bar, el, fmtTime, setBar, statusBadge, taskLink } from "./ui.js";

function summary(t) {
  if (t.status === "completed") return t.result === undefined ? "" : JSON.stringify(t.result);
  return t.error || t.message || "";
}

// columns: "actions" (a cancel button) or "created" (a timestamp) as the last column
export function taskRow(t, { last = "actions", onCancel } = {}) {
  const b = bar(t.progress, `progress of ${t.task_id}`);
  const st = el("td", { class: "status-cell" }, statusBadge(t.status));
  const msg = el("td", { class: "msg opt", text: summary(t), title: summary(t) });
  const type = el("td", { class: "type", text: t.type || t.task_type || "" });
  let cancelBtn = null;
  let lastCell;
  if (last === "actions") {
    cancelBtn = el("button", { type: "button", class: "link cancel", text: "cancel",
                               "aria-label": `cancel task ${t.task_id}`,
                               onclick: () => onCancel && onCancel(t.task_id) });
    lastCell = el("td", {}, cancelBtn);
  } else {
    lastCell = el("td", { class: "opt", text: fmtTime(t.created_at) });
  }
  const tr = el("tr", { dataset: { taskId: t.task_id } },
    el("td", {}, taskLink(t.task_id)), type, st, el("td", {}, b), msg, lastCell);
  const update = (s) => {
    if (s.task_type || (s.type && !s.seq)) type.textContent = s.task_type || s.type;
    if (s.status) {
      st.replaceChildren(statusBadge(s.status));
    }
    if (s.progress !== undefined) setBar(b, s.progress);
    const m = summary(s);
    if (m) { msg.textContent = m; msg.title = m; }
    if (cancelBtn) cancelBtn.hidden = TERMINAL.includes(s.status);
  };
  update(t);
  return { tr, update };
}

export async function cancelTask(id) {
  return api(`/tasks/${id}/cancel`, { method: "POST" });
}
