"""Processes the bench starts: ``python -m bench.entry KIND ...``.

* ``web PORT`` / ``worker`` — the product's own web app (``service.app:create_app`` under
  uvicorn, as the Procfile runs it) and worker (``worker.main.build_worker``), unchanged, plus
  one bench-only task type, ``bench_tick``: it reports progress on a schedule, stamping each
  event with the wall-clock time the worker reported it, so clients can measure push latency.
* ``arq-worker`` — the raw-arq baseline: an arq worker with a no-op job, same worker settings.
* ``onebyone`` — the progress-events baseline: one INSERT and one PUBLISH per event.
* ``polling PORT`` — the seed's SSE design (section 4.4): each stream reads the task row once
  a second and sends it. It takes a connection from a pool per query (the seed holds one
  session per stream for the stream's life, which would not even fit in max_connections).
"""

import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any


def web(port: int) -> None:
    import uvicorn

    uvicorn.run("service.app:create_app", factory=True, host="127.0.0.1", port=port,
                log_level="warning", access_log=False)


def worker() -> None:
    import logging

    from taskstream.core.settings import Settings
    from worker.main import build_worker, use_uvloop

    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    use_uvloop()
    w = build_worker(settings)
    startup = w.on_startup
    assert startup is not None

    async def ready(ctx: dict[str, Any]) -> None:
        await startup(ctx)
        await ctx["redis"].set(f"{settings.namespace}:benchready:{os.getpid()}", 1, ex=3600)

    w.on_startup = ready
    w.run()


def arq_worker(redis_url: str, queue: str, prefix: str, max_jobs: int, poll_delay: float) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    done_key = f"{prefix}:done"

    async def noop(ctx: dict[str, Any]) -> None:
        await ctx["redis"].incr(done_key)

    async def ready(ctx: dict[str, Any]) -> None:
        await ctx["redis"].set(f"{prefix}:ready:{os.getpid()}", 1, ex=3600)

    Worker(functions=[func(noop, name="noop")], queue_name=queue,
           redis_settings=RedisSettings.from_dsn(redis_url), max_jobs=max_jobs,
           poll_delay=poll_delay, keep_result=0, on_startup=ready, log_results=False).run()


async def onebyone(db_url: str, redis_url: str, channel: str, tasks: int, events: int,
                   concurrency: int, pool_size: int) -> None:
    import asyncpg
    from redis.asyncio import Redis

    pool = await asyncpg.create_pool(db_url, min_size=pool_size, max_size=pool_size)
    assert pool is not None
    redis = Redis.from_url(redis_url)
    todo: asyncio.Queue[str] = asyncio.Queue()
    for _ in range(tasks):
        todo.put_nowait(str(uuid.uuid4()))

    async def producer() -> None:
        while not todo.empty():
            tid = todo.get_nowait()
            for seq in range(1, events + 1):
                payload = json.dumps({"task_id": tid, "seq": seq, "type": "progress",
                                      "status": "running", "progress": 100 * seq / events,
                                      "message": None, "data": None, "t": time.time()},
                                     separators=(",", ":"))
                await pool.execute(
                    "INSERT INTO bench_events (task_id, seq, payload) VALUES ($1, $2, $3)",
                    uuid.UUID(tid), seq, payload)
                await redis.publish(channel, payload)

    await asyncio.gather(*(producer() for _ in range(concurrency)))
    await redis.aclose()
    await pool.close()


def polling(port: int, db_url: str, interval: float) -> None:
    import asyncpg
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    state: dict[str, asyncpg.Pool] = {}

    async def stream(request: Request) -> StreamingResponse:
        task_id = uuid.UUID(request.path_params["task_id"])
        pool = state["pool"]

        async def gen() -> Any:
            while True:  # the seed: query the row, send it, stop on terminal, sleep a second
                row = await pool.fetchrow(
                    "SELECT status, progress, result, message FROM tasks WHERE task_id = $1",
                    task_id)
                if row is None:
                    yield f"data: {json.dumps({'error': 'Task not found'})}\n\n"
                    break
                data = {"task_id": str(task_id), "status": row["status"],
                        "progress": row["progress"], "result": row["result"],
                        "message": row["message"]}
                yield f"data: {json.dumps(data)}\n\n"
                if row["status"] in ("completed", "failed", "cancelled"):
                    break
                await asyncio.sleep(interval)

        return StreamingResponse(gen(), media_type="text/event-stream")

    async def lifespan(app: Starlette) -> Any:
        pool = await asyncpg.create_pool(db_url, min_size=2, max_size=20)
        assert pool is not None
        state["pool"] = pool
        yield
        await pool.close()

    app = Starlette(routes=[Route("/tasks/{task_id}/stream", stream),
                           Route("/health", lambda r: StreamingResponse(iter([b"{}"])))],
                    lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def ends(port: int, response: str) -> None:
    """Streams that all end on one request (``GET /end``), with nothing of the product but
    its SSE response (``lean``, ``starlette``) or none (``bare``: the ASGI messages written
    by hand): what the web server itself costs per stream that ends (scenario ``ends``)."""
    import uvicorn
    from starlette.types import Receive, Scope, Send

    from service.sse import StarletteEventStream
    from service.sse_lean import LastChunk, LeanEventStream

    end: asyncio.Event | None = None

    async def frames(ended: asyncio.Event) -> Any:  # the product's shape: a last chunk
        yield b"data: open\n\n"
        await ended.wait()
        yield LastChunk(b"data: end\n\n")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal end
        if scope["type"] != "http":
            return
        if end is None:
            end = asyncio.Event()
        if scope["path"] == "/end":
            end.set()
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        elif response == "lean":
            await LeanEventStream(frames(end), send_timeout=30.0)(scope, receive, send)
        elif response == "starlette":
            await StarletteEventStream(frames(end), send_timeout=30.0)(scope, receive, send)
        else:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            await send({"type": "http.response.body", "body": b"data: open\n\n",
                        "more_body": True})
            await end.wait()
            await send({"type": "http.response.body", "body": b"data: end\n\n",
                        "more_body": False})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                lifespan="off")


def main(argv: list[str]) -> None:
    kind, args = argv[0], argv[1:]
    if kind == "web":
        web(int(args[0]))
    elif kind == "worker":
        worker()
    elif kind == "arq-worker":
        arq_worker(args[0], args[1], args[2], int(args[3]), float(args[4]))
    elif kind == "onebyone":
        asyncio.run(onebyone(args[0], args[1], args[2], int(args[3]), int(args[4]),
                             int(args[5]), int(args[6])))
    elif kind == "polling":
        polling(int(args[0]), args[1], float(args[2]))
    elif kind == "ends":
        ends(int(args[0]), args[1])
    else:
        raise SystemExit(f"unknown kind {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
