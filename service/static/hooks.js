// Webhooks: the tenant's URLs, each with its recent deliveries (status, attempts, the last
// response code and error, every attempt's outcome). Registered and removed here too; the
// signing secret is shown once, when a webhook is made.

import { api } from "./api.js";
import { onEvent } from "./live.js";
import { clear, el, flash, fmtTime, short, taskLink } from "./ui.js";

const $ = (id) => document.getElementById(id);
let shown = false;
let stale = false;

export function mount() {
  $("hooks-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const url = $("hooks-url").value.trim();
    const types = $("hooks-types").value.split(",").map((t) => t.trim()).filter(Boolean);
    try {
      const made = await api("/webhooks", { method: "POST",
        json: { url, ...(types.length ? { event_types: types } : {}) } });
      $("hooks-secret").textContent = `secret of ${short(made.webhook_id)} (shown once): ${made.secret}`;
      $("hooks-secret").hidden = false;
      $("hooks-url").value = "";
      await load();
    } catch (e) { flash("webhook: " + e.message); }
  });
  $("hooks-refresh").addEventListener("click", () => load());
  // A terminal event is what most webhooks carry: note that deliveries may have moved on,
  // and refresh at most once a second while the view is open.
  onEvent((ev) => {
    if (!shown || !["completed", "failed", "cancelled"].includes(ev.type) || stale) return;
    stale = true;
    setTimeout(() => { stale = false; if (shown) load(); }, 1000);
  });
}

function attempts(history) {
  if (!history || !history.length) return el("span", { class: "hint", text: "—" });
  return el("details", {},
    el("summary", { text: `${history.length} attempt(s)` }),
    el("ol", {}, ...history.map((h) => el("li", {},
      el("span", { class: "hint", text: fmtTime(h.at) + " " }),
      h.code ? `HTTP ${h.code}` : "", h.error ? ` ${h.error}` : ""))));
}

async function deliveriesOf(hook) {
  const page = await api(`/webhooks/${hook.webhook_id}/deliveries?limit=20`);
  const rows = page.items.map((d) => el("tr", {},
    el("td", {}, taskLink(d.task_id)),
    el("td", { text: `#${d.seq} ${d.event_type}` }),
    el("td", {}, el("span", { class: `status ${d.status === "delivered" ? "completed" : d.status === "failed" ? "failed" : "pending"}`, text: d.status })),
    el("td", { text: d.response_code ?? "—" }),
    el("td", { class: "opt" }, `${d.attempts} `, attempts(d.history)),
    el("td", { class: "msg", text: d.error || "", title: d.error || "" })));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "6", class: "hint", text: "no deliveries yet" })));
  return el("div", { class: "table-wrap" }, el("table", { "aria-label": `deliveries to ${hook.url}` },
    el("thead", {}, el("tr", {}, ...["task", "event", "status", "response", "attempts", "last error"]
      .map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...rows)));
}

async function load() {
  let hooks;
  try { hooks = await api("/webhooks"); } catch (e) { flash("webhooks: " + e.message); return; }
  const box = clear($("hooks-list"));
  if (!hooks.length) box.append(el("p", { class: "hint", text: "no webhooks registered" }));
  for (const hook of hooks) {
    const remove = el("button", { type: "button", class: "secondary", text: "Remove",
      "aria-label": `remove webhook ${hook.url}`,
      onclick: async () => {
        try { await api(`/webhooks/${hook.webhook_id}`, { method: "DELETE" }); await load(); }
        catch (e) { flash("webhook: " + e.message); }
      } });
    const card = el("section", { class: "card hook", "aria-label": `webhook ${hook.url}` },
      el("h3", {}, el("code", { text: hook.url })),
      el("p", { class: "hint", text: `events: ${(hook.event_types || []).join(", ")} · since ${fmtTime(hook.created_at)}` }),
      remove);
    box.append(card);
    try { card.append(await deliveriesOf(hook)); }
    catch (e) { card.append(el("p", { class: "hint", text: "deliveries: " + e.message })); }
  }
}

export async function show() { shown = true; await load(); }
export function hide() { shown = false; }
export function reset() { clear($("hooks-list")); $("hooks-secret").hidden = true; }
