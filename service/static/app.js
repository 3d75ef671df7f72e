// The dashboard's entry point: sign-in, the tenant picker (admin keys), hash routing
// (#/, #/tasks, #/task/<id>, #/dead-letters, #/webhooks) and the tab's one tenant stream.

import { ApiError, api, session, setKey, setTenant } from "./api.js";
import { openTenantStream } from "./live.js";
import * as dead from "./dead.js";
import * as explorer from "./explorer.js";
import * as hooks from "./hooks.js";
import * as overview from "./overview.js";
import * as task from "./task.js";
import { el, flash } from "./ui.js";

const $ = (id) => document.getElementById(id);
const views = { overview, explorer, task, dead, hooks };
let active = null;

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const m = hash.match(/^\/task\/([^/]+)$/);
  if (m) return ["task", decodeURIComponent(m[1])];
  if (hash === "/tasks") return ["explorer"];
  if (hash === "/dead-letters") return ["dead"];
  if (hash === "/webhooks") return ["hooks"];
  return ["overview"];
}

async function navigate() {
  const [name, arg] = route();
  if (active && active !== name && views[active].hide) views[active].hide();
  for (const v of Object.keys(views)) $(`view-${v}`).hidden = v !== name;
  for (const a of document.querySelectorAll("header nav a")) {
    if (a.dataset.view === name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const first = active === null;
  active = name;
  flash("");
  // move focus to the view's heading so keyboard and screen-reader users land on it
  if (!first) $(`view-${name}`).querySelector("h2").focus();
  await views[name].show(arg);
}

function askKey() {
  const key = (prompt("Taskstream API key (from `python -m taskstream.core.keys create`):") || "").trim();
  setKey(key);
  return key;
}

async function whoAmI() {
  // an admin key may read the workers; any other key is refused (403)
  try { await api("/workers"); session.admin = true; }
  catch (e) {
    if (e instanceof ApiError && e.status === 401) throw e;
    session.admin = false;
  }
}

async function signIn() {
  const health = await (await fetch("/health")).json();
  session.auth = !!health.auth;
  $("signout").hidden = !session.auth;
  if (!session.auth) { setKey(""); setTenant(""); }
  if (session.auth && !session.key) askKey();
  for (let tries = 0; ; tries++) {
    try { await whoAmI(); return; }
    catch (e) {
      if (tries >= 2) throw e;
      flash("That key was refused: " + e.message);
      askKey();
    }
  }
}

async function setupTenants() {
  if (!session.admin || !session.auth) { $("tenant-pick").hidden = true; setTenant(""); return; }
  let names = [];
  try { names = await overview.tenants(); } catch { /* the picker shows what we know */ }
  const current = session.tenant;
  const select = $("tenant");
  select.replaceChildren(el("option", { value: "", text: "my tenant" }),
    ...names.map((n) => el("option", { value: n, text: n })));
  if (current && !names.includes(current)) select.append(el("option", { value: current, text: current }));
  select.value = current;
  $("tenant-pick").hidden = false;
  select.onchange = async () => {
    setTenant(select.value);
    for (const v of Object.values(views)) if (v.reset) v.reset();
    await openTenantStream(true).catch((e) => flash("stream: " + e.message));
    await navigate();
  };
}

async function start() {
  overview.mount(); explorer.mount(); task.mount(); dead.mount(); hooks.mount();
  $("signout").addEventListener("click", () => {
    setKey(""); setTenant("");
    location.hash = "#/";
    location.reload();
  });
  window.addEventListener("hashchange", () => navigate().catch((e) => flash(e.message)));
  try { await signIn(); } catch (e) { flash("sign-in: " + e.message); return; }
  await setupTenants().catch(() => {});
  await Promise.all([
    navigate().catch((e) => flash(e.message)),
    // The browser resends Last-Event-ID itself when it reconnects, so nothing is missed.
    openTenantStream().catch((e) => flash("stream: " + e.message)),
  ]);
}

start();
