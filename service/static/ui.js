// Small DOM helpers. Text always goes in through textContent, never innerHTML.

export const TERMINAL = ["completed", "failed", "cancelled"];

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

export function clear(node) { node.replaceChildren(); return node; }

export const short = (id) => String(id).slice(0, 8);

export function statusBadge(status) {
  return el("span", { class: `status ${status}`, text: status });
}

// A progress bar with its percentage; update() keeps the same elements (no flicker).
export function bar(progress, label) {
  const p = el("progress", { max: "100", value: String(progress || 0), "aria-label": label || "progress" });
  const pct = el("span", { class: "pct", text: `${Math.round(progress || 0)}%` });
  return el("span", { class: "bar" }, p, pct);
}

export function setBar(barEl, progress) {
  barEl.querySelector("progress").value = progress || 0;
  barEl.querySelector(".pct").textContent = `${Math.round(progress || 0)}%`;
}

export function taskLink(id, tenant) {
  return el("a", { href: `#/task/${id}`, title: id }, el("code", { text: short(id) }));
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit",
                                       minute: "2-digit", second: "2-digit" });
}

export function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 1) return "<1 s";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

export function json(value) {
  return el("pre", { text: value === undefined ? "" : JSON.stringify(value, null, 2) });
}

const flashEl = () => document.getElementById("flash");
export function flash(msg) { flashEl().textContent = msg || ""; }

// Call fn at most once per `ms`, trailing: a burst of stream events makes one refresh.
export function debounce(fn, ms) {
  let timer = null, running = false, again = false;
  const run = async () => {
    timer = null;
    if (running) { again = true; return; }
    running = true;
    try { await fn(); } catch (e) { /* the next event retries */ }
    running = false;
    if (again) { again = false; schedule(); }
  };
  const schedule = () => { if (!timer) timer = setTimeout(run, ms); };
  return schedule;
}
