// Live updates. One EventSource for all of this tenant's tasks (GET /stream) for the whole
// tab: a browser allows only ~6 HTTP/1.1 connections per host, so one stream per task would
// not scale past a handful. The task page adds one per-task stream (GET /tasks/{id}/stream)
// for its full timeline. No polling: everything that changes arrives here.

import { api, streamUrl } from "./api.js";
import { TERMINAL } from "./ui.js";

const listeners = new Set();
let source = null;
let lastEventId = null;
let generation = 0;

export function onEvent(fn) { listeners.add(fn); return () => listeners.delete(fn); }

function setConn(text, live) {
  const c = document.getElementById("conn");
  c.textContent = text;
  c.classList.toggle("live", !!live);
}

// (Re)open the tenant stream. `fresh`: a new tenant was picked, start from now.
export async function openTenantStream(fresh = false) {
  const mine = ++generation;
  if (source) source.close();
  if (fresh) lastEventId = null;
  const url = await streamUrl("/stream", null, lastEventId);
  if (mine !== generation) return;
  const es = new EventSource(url);
  source = es;
  window.taskstreamSource = es;
  es.onopen = () => setConn("live", true);
  es.onerror = () => {
    setConn("reconnecting…", false);
    // The browser resends Last-Event-ID itself while the EventSource is CONNECTING; once it
    // gave up (e.g. the ticket expired), mint another ticket and resume from the last id.
    if (es.readyState === EventSource.CLOSED && mine === generation) {
      setTimeout(() => { if (mine === generation) openTenantStream().catch(() => {}); }, 2000);
    }
  };
  es.onmessage = (e) => {
    if (e.lastEventId) lastEventId = e.lastEventId;
    let ev;
    try { ev = JSON.parse(e.data); } catch { return; }
    for (const fn of listeners) {
      try { fn(ev); } catch (err) { console.error(err); }
    }
  };
}

// One task's stream from event `after` on; calls onEvent for each, onEnd when the task's
// stream is over (terminal). Returns a close function.
export function followTask(taskId, after, handler, onEnd) {
  let es = null, closed = false, last = after;
  const open = async () => {
    if (closed) return;
    const url = await streamUrl(`/tasks/${taskId}/stream`, taskId, last);
    if (closed) return;
    es = new EventSource(url);
    es.onmessage = (e) => {
      if (e.lastEventId) last = Number(e.lastEventId);
      let ev;
      try { ev = JSON.parse(e.data); } catch { return; }
      handler(ev);
      if (TERMINAL.includes(ev.status) && TERMINAL.includes(ev.type)) {
        es.close();
        if (onEnd) onEnd(last);
      }
    };
    es.onerror = async () => {
      if (es.readyState !== EventSource.CLOSED || closed) return;  // the browser resumes itself
      // Closed for good: a 204 (the task finished and we have it all) or an expired ticket.
      try {
        const t = await api(`/tasks/${taskId}`);
        if (TERMINAL.includes(t.status) && last >= t.last_event_id) { if (onEnd) onEnd(last); return; }
      } catch { /* look again after the pause */ }
      setTimeout(() => open().catch(() => {}), 2000);
    };
  };
  open().catch(() => {});
  return { close() { closed = true; if (es) es.close(); }, get last() { return last; } };
}
