"""A follower of a task's stream that keeps its model texts the way a browser would: token
frames applied at their offsets, the durable ``text`` event as the truth, and resume after a
drop with Last-Event-ID plus the token cursor. It checks, frame by frame, that the service
sends no gap and no duplicate."""

import json
import random
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.sse import messages


@dataclass
class Texts:
    last_id: str | None = None
    #: stream -> (attempt, text built from token frames)
    live: dict[str, tuple[int, str]] = field(default_factory=dict)
    durable: dict[str, tuple[int, str]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    frames: int = 0
    connections: int = 0
    done: bool = False

    def apply_token(self, frame: dict[str, Any], *, may_restart: bool) -> None:
        """A token frame. On a connection without a token cursor the first frame of a stream
        may start at 0 again (the text so far, which extends what we hold): it replaces.
        Otherwise it must continue exactly where this client is."""
        self.frames += 1
        stream, attempt, offset, delta = (frame["stream"], frame["attempt"], frame["offset"],
                                          frame["delta"])
        assert delta, frame
        have = self.live.get(stream)
        if have is None or attempt > have[0]:
            assert offset == 0, f"a new text must start at 0: {frame}"
            self.live[stream] = (attempt, delta)
            return
        assert attempt == have[0], f"a frame of an older attempt: {frame}"
        if may_restart and offset == 0:
            assert delta.startswith(have[1]), f"the text so far contradicts ours: {frame}"
            self.live[stream] = (attempt, delta)
            return
        assert offset == len(have[1]), (
            f"gap or duplicate: holding {len(have[1])} characters, frame at {offset}")
        self.live[stream] = (attempt, have[1] + delta)

    def apply_event(self, ev: dict[str, Any]) -> None:
        self.events.append(ev)
        if ev["type"] == "text":
            d = ev["data"]
            assert d["length"] == len(d["text"])
            self.durable[d["stream"]] = (ev["attempt"], d["text"])
        if ev["status"] in ("completed", "failed", "cancelled"):
            self.done = True

    def cursor(self) -> str:
        return json.dumps({s: [a, len(t)] for s, (a, t) in self.live.items()})


async def follow_texts(client: httpx.AsyncClient, task_id: str, *, rng: random.Random,
                       drop_chance: float = 0.0, use_cursor: bool = True,
                       max_connections: int = 200) -> Texts:
    """Follow a task's stream to its end, dropping the connection at random frames."""
    t = Texts()
    while not t.done:
        t.connections += 1
        assert t.connections <= max_connections
        headers = {"Last-Event-ID": t.last_id} if t.last_id else {}
        params = {"tokens": t.cursor()} if use_cursor and t.live else {}
        fresh = not params
        seen: set[str] = set()
        conn_last = ""
        async with client.stream("GET", f"/tasks/{task_id}/stream", headers=headers,
                                 params=params) as r:
            if r.status_code == 204:
                break
            assert r.status_code == 200, r.status_code
            async for m in messages(r):
                if m.event == "token":
                    assert m.id == conn_last  # token frames carry no id
                    frame = json.loads(m.data)
                    assert frame["task_id"] == task_id
                    t.apply_token(frame, may_restart=fresh and frame["stream"] not in seen)
                    seen.add(frame["stream"])
                else:
                    assert m.event == "message"
                    t.last_id = conn_last = m.id
                    ev = json.loads(m.data)
                    t.apply_event(ev)
                    if ev["type"] == "text" and ev["data"]["stream"] in seen:
                        # Tokens on this connection: complete when their text event comes.
                        assert t.live[ev["data"]["stream"]] == (ev["attempt"],
                                                                ev["data"]["text"])
                if t.done or (drop_chance and rng.random() < drop_chance):
                    break
    return t
