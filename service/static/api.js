// HTTP calls. With authentication on, the page asks once for an API key and keeps it in
// sessionStorage (this tab only); it goes in an Authorization header, never in a URL.
// Streams use short-lived tickets instead (an EventSource cannot send headers).

const KEY = "taskstreamKey";
const TENANT = "taskstreamTenant";

export const session = {
  key: sessionStorage.getItem(KEY) || "",
  // An admin key may act for another tenant (X-Tenant); "" means its own.
  tenant: sessionStorage.getItem(TENANT) || "",
  auth: false,
  admin: false,
};

export function setKey(key) {
  session.key = key;
  if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
}

export function setTenant(tenant) {
  session.tenant = tenant;
  if (tenant) sessionStorage.setItem(TENANT, tenant); else sessionStorage.removeItem(TENANT);
}

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export function headers(extra = {}) {
  const h = { ...extra };
  if (session.key) h.Authorization = `Bearer ${session.key}`;
  if (session.tenant) h["X-Tenant"] = session.tenant;
  return h;
}

export async function api(path, opts = {}) {
  const init = { ...opts, headers: headers(opts.headers || {}) };
  if (opts.json !== undefined) {
    init.body = JSON.stringify(opts.json);
    init.headers["Content-Type"] = "application/json";
    delete init.json;
  }
  const r = await fetch(path, init);
  const body = r.status === 204 ? null : await r.json().catch(() => null);
  if (!r.ok) {
    let msg = r.statusText;
    if (body && body.detail) msg = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new ApiError(r.status, msg);
  }
  return body;
}

// A stream URL for an EventSource: with auth on, a ticket minted for this stream (tenant
// stream, or one task's); resume after `lastId` when given.
export async function streamUrl(path, taskId, lastId) {
  const params = new URLSearchParams();
  if (session.auth) {
    const t = await api("/stream-tickets", { method: "POST", json: taskId ? { task_id: taskId } : {} });
    params.set("ticket", t.ticket);
  }
  if (lastId) params.set("last_event_id", String(lastId));
  const q = params.toString();
  return q ? `${path}?${q}` : path;
}
