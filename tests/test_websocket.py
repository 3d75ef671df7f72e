"""``/ws`` over a real uvicorn with the ``websockets`` client: several tasks on one connection
with the SSE ids and resume rules, token frames, commands, and authentication."""

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from taskstream.builtin.demo import demo_text
from taskstream.core import auth, store_read
from taskstream.core.db import create_engine
from taskstream.core.settings import Settings
from taskstream.devservices.processes import WebServer, WorkerProc
from tests.cluster import drop_cluster, start_cluster
from tests.sse import collect, payload
from tests.test_tasks_api import submit


@pytest.fixture
async def client(web: WebServer, worker: WorkerProc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web.url, timeout=30) as c:
        yield c


def ws_url(web: WebServer, query: str = "") -> str:
    return web.url.replace("http://", "ws://") + "/ws" + query


async def send(ws: ClientConnection, **msg: Any) -> None:
    await ws.send(json.dumps(msg))


async def recv(ws: ClientConnection, timeout: float = 20) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return out


class Follower:
    """Events and texts per subscription, checking ids and token offsets as they come."""

    def __init__(self) -> None:
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.last: dict[str, int] = {}
        self.texts: dict[tuple[str, str], tuple[int, str]] = {}
        self.ended: dict[str, str] = {}

    def take(self, m: dict[str, Any], *, may_restart: set[tuple[str, str]]) -> None:
        if m["kind"] == "event":
            sub = m["sub"]
            assert m["id"] > self.last.get(sub, 0), "an event twice"
            self.last[sub] = m["id"]
            self.events.setdefault(sub, []).append(m["event"])
        elif m["kind"] == "token":
            f = m["frame"]
            key = (f["task_id"], f["stream"])
            have = self.texts.get(key)
            if have is None or f["attempt"] > have[0] or (key in may_restart
                                                          and f["offset"] == 0):
                assert f["offset"] == 0
                if have is not None and f["attempt"] == have[0]:
                    assert f["delta"].startswith(have[1])
                self.texts[key] = (f["attempt"], f["delta"])
                may_restart.discard(key)
            else:
                assert f["offset"] == len(have[1]), "gap or duplicate"
                self.texts[key] = (have[0], have[1] + f["delta"])
        elif m["kind"] == "end":
            self.ended[m["sub"]] = m["reason"]


async def test_one_connection_carries_several_tasks_with_tokens(
        client: httpx.AsyncClient, web: WebServer) -> None:
    tasks = [await submit(client, "demo_tokens", tokens=40, rate=100, seed=i) for i in range(3)]
    ids = [t["task_id"] for t in tasks]
    f = Follower()
    async with websockets.connect(ws_url(web)) as ws:
        for i, tid in enumerate(ids):
            await send(ws, op="subscribe", task_id=tid, ref=i)
        while len(f.ended) < 3:
            m = await recv(ws)
            if m["kind"] == "subscribed":
                assert m["sub"] == ids[m["ref"]]
                continue
            f.take(m, may_restart=set())
    assert f.ended == dict.fromkeys(ids, "terminal")
    for i, tid in enumerate(ids):
        # The same events, ids and data as the SSE stream of the task.
        _, msgs = await collect(client, f"/tasks/{tid}/stream")
        sse_events = [payload(m) for m in msgs if m.event == "message"]
        assert f.events[tid] == sse_events
        assert f.texts[(tid, "answer")] == (1, demo_text(40, seed=i))


async def test_resume_after_drops_is_exact(client: httpx.AsyncClient, web: WebServer) -> None:
    rng = random.Random(7)
    task = await submit(client, "demo_tokens", tokens=150, rate=150)
    tid = task["task_id"]
    f = Follower()
    connections = 0
    while tid not in f.ended:
        connections += 1
        async with websockets.connect(ws_url(web)) as ws:
            held = {s: [a, len(t)] for (_, s), (a, t) in f.texts.items()}
            await send(ws, op="subscribe", task_id=tid, last_event_id=f.last.get(tid, 0),
                       tokens=held)
            assert (await recv(ws))["kind"] == "subscribed"
            while tid not in f.ended:
                f.take(await recv(ws), may_restart=set())
                if rng.random() < 0.3:
                    break  # drop the connection mid-stream
    assert connections >= 3
    assert f.texts[(tid, "answer")] == (1, demo_text(150))
    assert [e["seq"] for e in f.events[tid]] == list(range(1, len(f.events[tid]) + 1))


async def test_tenant_subscription_and_commands(client: httpx.AsyncClient,
                                                web: WebServer) -> None:
    async with websockets.connect(ws_url(web)) as ws:
        await send(ws, op="subscribe", tenant=True, ref="t")
        assert (await recv(ws)) == {"kind": "subscribed", "op": "subscribe", "ref": "t",
                                    "sub": "*"}
        task = await submit(client, "demo", duration=30, steps=30)
        tid = task["task_id"]
        seen: list[dict[str, Any]] = []
        while not any(e["event"]["type"] == "started" for e in seen):
            m = await recv(ws)
            if m["kind"] == "event" and m["event"]["task_id"] == tid:
                assert m["id"] == m["event"]["tenant_seq"]
                seen.append(m)
        await send(ws, op="cancel", task_id=tid, ref=5)
        while True:
            m = await recv(ws)
            if m["kind"] == "result":
                assert m["op"] == "cancel" and m["ref"] == 5
                assert m["task"]["task_id"] == tid
            if m["kind"] == "event" and m["event"]["type"] == "cancelled":
                break
        # Bad input: an error message with the API's code; the connection stays usable.
        await ws.send("not json")
        assert (await recv(ws))["error"] == "bad_request"
        await send(ws, op="subscribe", task_id="nope", ref=1)
        err = await recv(ws)
        assert (err["kind"], err["error"], err["ref"]) == ("error", "not_found", 1)
        await send(ws, op="explode")
        assert (await recv(ws))["kind"] == "error"
        await send(ws, op="unsubscribe", tenant=True, ref=2)
        assert (await recv(ws))["subscribed"] is False
        # A finished task: subscribed, everything, then its end.
        await send(ws, op="subscribe", task_id=tid)
        kinds = []
        while not kinds or kinds[-1] != "end":
            kinds.append((await recv(ws))["kind"])
        assert kinds[0] == "subscribed" and "event" in kinds


@pytest.fixture(scope="module")
def secure(env: dict[str, str], logs: Path, worker: WorkerProc) -> Iterator[WebServer]:
    server = WebServer({**env, "TASKSTREAM_AUTH": "true"}, logs / "web-ws-secure.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tenant_keys(settings: Settings) -> dict[str, str]:
    out: dict[str, str] = {}

    async def create() -> None:
        engine = create_engine(settings.database_url)
        for name in ("ann", "ben"):
            key_id, token, digest = auth.new_key()
            await store_read.create_api_key(engine, key_id, f"{name}-{uuid.uuid4().hex[:6]}",
                                            name, "user", digest)
            out[name] = token
        await engine.dispose()

    asyncio.run(create())
    return out


async def test_authentication_key_header_or_read_only_ticket(
        secure: WebServer, tenant_keys: dict[str, str]) -> None:
    url = ws_url(secure)
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url):
            pass
    assert refused.value.response.status_code == 401
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(url + "?ticket=tk_forged.sig"):
            pass
    ann = {"Authorization": f"Bearer {tenant_keys['ann']}"}
    async with httpx.AsyncClient(base_url=secure.url, headers=ann, timeout=30) as http:
        tid = (await submit(http, "demo", duration=30, steps=30))["task_id"]
        other = (await submit(http, "demo", duration=0.1, steps=1))["task_id"]
        ticket = (await http.post("/stream-tickets", json={"task_id": tid})).json()["ticket"]
    # Another tenant's key: the task is not found, as on every route.
    async with websockets.connect(url, additional_headers={
            "Authorization": f"Bearer {tenant_keys['ben']}"}) as ws:
        await send(ws, op="subscribe", task_id=tid)
        assert (await recv(ws))["error"] == "not_found"
        await send(ws, op="cancel", task_id=tid)
        assert (await recv(ws))["error"] == "not_found"
    # A ticket reads its own task only, and gives no commands.
    async with websockets.connect(f"{url}?ticket={ticket}") as ws:
        await send(ws, op="subscribe", task_id=other)
        assert (await recv(ws))["error"] == "forbidden"
        await send(ws, op="cancel", task_id=tid)
        assert (await recv(ws))["error"] == "forbidden"
        await send(ws, op="subscribe", task_id=tid)
        assert (await recv(ws))["kind"] == "subscribed"
        assert (await recv(ws))["event"]["type"] == "created"
    # The owner's key gives commands.
    async with websockets.connect(url, additional_headers=ann) as ws:
        await send(ws, op="cancel", task_id=tid)
        assert (await recv(ws))["task"]["status"] in ("cancelled", "running", "pending")


async def test_signal_command_resumes_a_waiting_run(backing: tuple[str, str],
                                                    tmp_path: Path) -> None:
    """``signal`` is ``POST /tasks/{id}/signals/{name}`` over the socket (service.signals)."""
    cluster = await start_cluster(backing[0], backing[1], tmp_path / "cluster", workers=1,
                                  TASKSTREAM_TASKS="tests.tasktypes_steps")
    try:
        async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as http:
            tid = (await submit(http, "approval", dir=str(tmp_path)))["task_id"]
        async with websockets.connect(ws_url(cluster.web)) as ws:
            await send(ws, op="subscribe", task_id=tid)
            types: list[str] = []
            while "suspended" not in types:
                m = await recv(ws)
                if m["kind"] == "event":
                    types.append(m["event"]["type"])
            await send(ws, op="signal", task_id=tid, name="approval", payload={"ok": 1},
                       ref="s")
            last: dict[str, Any] = {}
            result = None
            while last.get("type") != "completed":
                m = await recv(ws)
                if m["kind"] == "result":
                    result = m
                elif m["kind"] == "event":
                    last = m["event"]
            assert result is not None
            # resumed: True when the run was parked, False when the signal came while it was
            # parking (then the run re-queues itself): either way it goes on with the payload.
            assert (result["ref"], result["task_id"], result["name"]) == ("s", tid, "approval")
            assert isinstance(result["resumed"], bool)
            assert last["result"]["decision"] == {"ok": 1}
            await send(ws, op="signal", task_id=tid, name="approval", payload=None, ref="t")
            while (m := await recv(ws)).get("ref") != "t":
                assert m["kind"] == "end"  # the subscription's, after the terminal event
            assert m["error"] == "conflict"  # single use
    finally:
        await drop_cluster(backing[0], cluster)
