"""Operations under chaos: webhooks, retention and metrics switched on for the whole run.

* A webhook for the terminal events points at a local receiver that answers every 7th
  request with a 500 (so retries happen under the faults too). After the drain, every
  terminal event PostgreSQL holds must have reached the receiver (at least once, signed) and
  be recorded ``delivered`` — none lost to a SIGKILLed worker or web process, a Redis
  restart or a PostgreSQL crash.
* Retention runs every couple of seconds in every worker: a throwaway tenant's finished tasks,
  made two days old before the run, must be gone at the end, and nothing of the run's own
  (younger than any retention) may be.
* ``/metrics`` (multiprocess mode over every web and worker process) must answer on every web
  process at the end; its task counters are printed.
"""

import asyncio
import time
from dataclasses import dataclass, field

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from chaos.api import Api
from chaos.checks import TERMINAL, Check
from chaos.receiver import Receiver
from chaos.snapshot import Snapshot
from taskstream.core import store, store_ops
from taskstream.core import webhooks as wh

#: Environment the run's processes get (beside PROMETHEUS_MULTIPROC_DIR).
ENV = {
    "TASKSTREAM_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "TASKSTREAM_WEBHOOK_BACKOFF": "0.2",
    "TASKSTREAM_WEBHOOK_BACKOFF_MAX": "2",
    "TASKSTREAM_WEBHOOK_MAX_ATTEMPTS": "20",
    "TASKSTREAM_WEBHOOK_TIMEOUT": "2",
    "TASKSTREAM_WEBHOOK_POLL_INTERVAL": "0.2",
    "TASKSTREAM_RETENTION_INTERVAL": "2",
    "TASKSTREAM_RETENTION_BATCH": "25",
}
RETENTION_TENANT = "chaos-retention"
RETENTION_TASKS = 120


@dataclass
class Ops:
    receiver: Receiver = field(default_factory=lambda: Receiver(fail_every=7))
    hook: dict[str, str] = field(default_factory=dict)
    old_tasks: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    metrics_problems: list[str] = field(default_factory=list)
    pending_at_end: int = 0

    async def start(self, api: Api, pool: asyncpg.Pool) -> None:
        await self.receiver.start()
        resp = await api.request("POST /webhooks", "POST", "/webhooks",
                                 json={"url": self.receiver.url})
        assert resp is not None and resp.status_code == 201, resp and resp.text
        self.hook = resp.json()
        made = await store.create_tasks(pool, [
            store.NewTask(owner=RETENTION_TENANT, task_type="noop", params={},
                          max_attempts=1) for _ in range(RETENTION_TASKS)])
        self.old_tasks = [t.task_id for t, _ in made]
        await pool.execute(
            """UPDATE tasks SET status = 'completed', finished_at = now() - interval '2 days'
                WHERE task_id = ANY ($1::uuid[])""", self.old_tasks)
        await store_ops.set_tenant_retention(pool, RETENTION_TENANT, 1.0)

    async def settle(self, pool: asyncpg.Pool, patience: float) -> None:
        """Wait (bounded) until no delivery is pending any more."""
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            try:
                self.pending_at_end = int(await pool.fetchval(
                    "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'"))
            except (OSError, asyncpg.PostgresError):
                self.pending_at_end = -1
            if self.pending_at_end == 0:
                return
            await asyncio.sleep(0.5)

    async def scrape(self, urls: list[str]) -> None:
        async with httpx.AsyncClient(timeout=10) as c:
            for url in urls:
                try:
                    r = await c.get(url + "/metrics")
                except httpx.HTTPError as exc:
                    self.metrics_problems.append(f"{url}/metrics: {type(exc).__name__}")
                    continue
                if r.status_code != 200:
                    self.metrics_problems.append(f"{url}/metrics -> {r.status_code}")
                    continue
                self.metrics = {}
                for fam in text_string_to_metric_families(r.text):
                    for s in fam.samples:
                        if s.name == "taskstream_tasks_total":
                            k = s.labels["event"]
                            self.metrics[k] = self.metrics.get(k, 0) + s.value
                        elif s.name in ("taskstream_webhook_attempts_total",
                                        "taskstream_retention_pruned_total"):
                            k = f"{s.name.removeprefix('taskstream_')}:" + \
                                next(iter(s.labels.values()), "")
                            self.metrics[k] = s.value

    async def close(self) -> None:
        await self.receiver.close()

    async def checks(self, snap: Snapshot, pool: asyncpg.Pool) -> list[Check]:
        return [self._webhooks(snap, await _deliveries(pool)), self._retention(snap),
                Check("/metrics answers on every web process", 1, self.metrics_problems)]

    def _webhooks(self, snap: Snapshot, recorded: dict[tuple[str, int], str]) -> Check:
        c = Check("every terminal event reached the webhook receiver, signed, and is "
                  "recorded delivered")
        got: dict[tuple[str, int], int] = {}
        secret = self.hook.get("secret", "")
        for r in self.receiver.received:
            doc = httpx.Response(200, content=r.body).json()
            key = (doc["event"]["task_id"], int(doc["event"]["seq"]))
            got[key] = got.get(key, 0) + 1
            if not wh.verify(secret, r.headers.get("taskstream-timestamp", ""), r.body,
                             r.headers.get("taskstream-signature", ""), tolerance=3600):
                c.violations.append(f"delivery {r.headers.get('taskstream-delivery')} of "
                                    f"{key}: bad signature")
        old = set(self.old_tasks)
        for tid, evs in snap.events.items():
            if tid in old:
                continue  # the retention tenant's (not subscribed)
            for e in evs:
                if e.type not in TERMINAL:
                    continue
                c.checked += 1
                if (tid, e.seq) not in got:
                    c.violations.append(f"task {tid} {e.type} (seq {e.seq}) never delivered "
                                        f"(record: {recorded.get((tid, e.seq), 'none')})")
                elif recorded.get((tid, e.seq)) != "delivered":
                    c.violations.append(f"task {tid} seq {e.seq} received but recorded "
                                        f"{recorded.get((tid, e.seq), 'nothing')}")
        if self.pending_at_end:
            c.violations.append(f"{self.pending_at_end} deliveries still pending at the end")
        return c

    def _retention(self, snap: Snapshot) -> Check:
        c = Check("retention pruned the old tenant's tasks and nothing of the run",
                  len(self.old_tasks))
        left = [t for t in self.old_tasks if t in snap.tasks]
        if left:
            c.violations.append(f"{len(left)} of {len(self.old_tasks)} tasks past their "
                                "retention are still there")
        return c

    def summary(self) -> list[str]:
        dup = len(self.receiver.received) - len({
            (r.headers.get("taskstream-delivery")) for r in self.receiver.received})
        return [f"Webhooks: {len(self.receiver.received)} requests received (every 7th "
                f"answered 500; {dup} repeats of a delivery id, at least once by design)",
                "Metrics (summed over every process): " + ", ".join(
                    f"{k} {v:.0f}" for k, v in sorted(self.metrics.items()))]


async def _deliveries(pool: asyncpg.Pool) -> dict[tuple[str, int], str]:
    rows = await pool.fetch("SELECT task_id, seq, status FROM webhook_deliveries")
    return {(str(r["task_id"]), r["seq"]): r["status"] for r in rows}
