"""Scenario ``ends``: what one web process spends on each stream that ends, when N end at
once, for the product's two SSE responses and for a bare ASGI app under the same uvicorn.

The latency scenario's slowest second is the last tick, when every stream's task completes
and all N streams end within it. This isolates that cost from the hub, the database and the
worker: N streams on a web process that runs nothing but the response (``bench.entry
ends``), all ended by one request; the web's CPU (user and kernel) from that request until
every client has closed, per stream. The bare app is the floor: uvicorn, uvloop and the
kernel's cost of a last write and a closed connection, which no response can go below.
"""

import asyncio
import time
from typing import cast

from bench.common import (
    Outcome,
    Row,
    Run,
    median,
    port_open,
    ratio,
    sched_seconds,
    user_system_seconds,
    wait_for,
)
from bench.env import free_port
from bench.net import HttpConn

RESPONSES = ("bare", "lean", "starlette")
SETTLE = 0.5  # after the last client closed: the web reads the closes and tears down


class _Stream(asyncio.Protocol):
    """GET /s; ``opened`` once the first frame is in, ``ended`` at the body's end."""

    def __init__(self, opened: "asyncio.Future[None]", ended: "asyncio.Future[None]") -> None:
        self.opened, self.ended = opened, ended
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(b"GET /s HTTP/1.1\r\nHost: bench\r\n"
                             b"Accept: text/event-stream\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        seen = self.tail + data
        self.tail = seen[-16:]
        if not self.opened.done() and b"data: open" in seen:
            self.opened.set_result(None)
        if seen.endswith(b"0\r\n\r\n") and not self.ended.done():
            assert self.transport is not None
            self.transport.close()  # as a browser's EventSource closed by the page
            self.ended.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        for f in (self.opened, self.ended):
            if not f.done():
                f.set_exception(ConnectionError(f"closed before the end: {exc!r}"))


async def ends(run: Run) -> Outcome:
    env, sz, out = run.env, run.sizes, Outcome()
    n = max(sz.latency_streams)
    per: dict[str, dict[str, list[float]]] = {r: {"cpu": [], "kernel": [], "ended": []}
                                               for r in RESPONSES}
    for r in range(sz.stream_rounds):
        for response in RESPONSES[r % 3:] + RESPONSES[:r % 3]:  # the order rotates
            port = free_port()
            web = env.spawn(f"ends-{response}",
                            [env.python, "-m", "bench.entry", "ends", str(port), response])
            try:
                row = await _round(n, port, web.pid)
            finally:
                env.stop([web])
            if row is None:
                out.check(f"ends {n} {response}: every stream opened and ended", False)
                continue
            out.check(f"ends {n} {response}: every stream opened and ended", True)
            row.update(response=response, round=r, streams=n)
            out.rounds.append(row)
            per[response]["cpu"].append(row["cpu_us"])
            per[response]["kernel"].append(row["kernel_us"])
            per[response]["ended"].append(row["ended_ms"])
            run.log(f"ends n={n} round {r} ({response}): web {row['cpu_us']:.0f} µs on a CPU "
                    f"per stream ({row['kernel_us']:.0f} in the kernel); all ended within "
                    f"{row['ended_ms']:.0f} ms")
    bare = median(per["bare"]["cpu"])
    for response in RESPONSES:
        total = median(per[response]["cpu"])
        what = f"{n} streams ending at once ({response})"
        out.rows += [
            Row("3 stream ends", f"web CPU per stream that ends, {what}", total, "µs",
                *(("bare ASGI app", bare, ratio(total, bare)) if response != "bare" else ())),
            Row("3 stream ends", f"  of which in the kernel, {what}",
                median(per[response]["kernel"]), "µs"),
            Row("3 stream ends", f"until every client saw its end, {what}",
                median(per[response]["ended"]), "ms"),
        ]
    out.notes.append("each stream's last frame, the end of its body, the client's close and "
                     "the teardown; the bare app is uvicorn's own floor (no hub, no database)")
    return out


async def _round(n: int, port: int, pid: int) -> dict[str, float] | None:
    """Open n streams, end them all with one request; None if one did not open or end."""
    loop = asyncio.get_running_loop()

    if not await wait_for(lambda: port_open(port), 20, 0.05):
        return None
    sem = asyncio.Semaphore(200)  # connects in flight: no SYN-backlog overflow
    opened = [loop.create_future() for _ in range(n)]
    ended = [loop.create_future() for _ in range(n)]
    transports: list[asyncio.BaseTransport] = []

    async def one(i: int) -> None:
        async with sem:
            t, _ = await loop.create_connection(lambda: _Stream(opened[i], ended[i]),
                                                "127.0.0.1", port)
            transports.append(t)
            await opened[i]

    try:
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 120)
        await asyncio.sleep(1.0)  # the openings' work done: only the ends are counted
        run0, k0 = sched_seconds(pid)[0], user_system_seconds([pid])[1]
        t0 = time.perf_counter()
        c = HttpConn("127.0.0.1", port)
        try:
            status, _ = await c.request("GET", "/end")
        finally:
            await c.close()
        await asyncio.wait_for(asyncio.gather(*ended), 60)
        t1 = time.perf_counter()
        await asyncio.sleep(SETTLE)
        run1, k1 = sched_seconds(pid)[0], user_system_seconds([pid])[1]
    except (TimeoutError, ConnectionError, OSError):
        return None
    finally:
        for t in transports:
            t.close()
    if status != 204:
        return None
    # on a CPU: schedstat (ns); of which in the kernel: stime (10 ms ticks, so coarse)
    return {"cpu_us": (run1 - run0) / n * 1e6, "kernel_us": (k1 - k0) / n * 1e6,
            "ended_ms": (t1 - t0) * 1000}
