"""``AsyncClient``: the whole HTTP API, typed, with retries that are safe and streams that resume.

    async with AsyncClient() as ts:                  # TASKSTREAM_URL, TASKSTREAM_API_KEY
        task = await ts.submit("demo", {"duration": 3})
        async for event in ts.events(task):          # reconnects by itself, no repeats
            print(event.progress, event.message)
        result = await ts.wait(task)                 # or TaskFailed / TaskCancelled

Requests that fail in a way known to be safe to repeat are retried (see ``RetryPolicy``);
``submit`` and ``upload`` send an ``Idempotency-Key`` (a fresh one unless given), so even they
are repeated without creating a second task.
"""

from __future__ import annotations

import asyncio
import os
import uuid
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Self, TypeVar, overload

import httpx

from taskstream.client import errors
from taskstream.client.models import (
    Batch,
    BatchState,
    BatchUpload,
    DeadLetter,
    DeadLetterPage,
    Event,
    EventPage,
    EventType,
    Task,
    TaskPage,
    TaskRef,
    TaskType,
    Upload,
    task_id_of,
)
from taskstream.client.retry import DEFAULT_POLICY, RetryPolicy
from taskstream.client.streams import EventStream
from taskstream.client.uploads import FileSource, MultipartFiles, prepare
from taskstream.declaration import Params, Priority, TaskDef

P = TypeVar("P", bound=Params)

DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = "taskstream-client/0.1"

#: Statuses after which the request certainly was not processed.
_REFUSED = frozenset({429, 503})
#: Statuses worth repeating for a request that is safe to repeat anyway.
_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})


class AsyncClient:
    """An async client for one Taskstream service.

    ``url`` defaults to ``$TASKSTREAM_URL`` (else ``http://127.0.0.1:8000``) and ``api_key``
    to ``$TASKSTREAM_API_KEY``; the key is sent as ``Authorization: Bearer <key>``.
    ``timeout`` bounds each ordinary request; an event stream waits for events without limit
    but treats ``stream_idle_timeout`` seconds of silence (no event, no keep-alive) as a dead
    connection and reconnects. Use it as ``async with`` or call ``aclose()``.
    """

    def __init__(self, url: str | None = None, *, api_key: str | None = None,
                 timeout: float = 30.0, stream_idle_timeout: float = 60.0,
                 retry: RetryPolicy = DEFAULT_POLICY,
                 headers: Mapping[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = (url or os.environ.get("TASKSTREAM_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("TASKSTREAM_API_KEY")
        base = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if key:
            base["Authorization"] = f"Bearer {key}"
        base.update(headers or {})
        self.retry_policy = retry
        self.stream_timeout = httpx.Timeout(timeout, read=stream_idle_timeout)
        self.http = httpx.AsyncClient(base_url=self.url, headers=base,
                                      timeout=httpx.Timeout(timeout), transport=transport)
        self._streams: weakref.WeakSet[EventStream] = weakref.WeakSet()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every open event stream, then the connection pool."""
        for stream in list(self._streams):
            await stream.aclose()
        await self.http.aclose()

    # --- tasks ------------------------------------------------------------------------

    @overload
    async def submit(self, type: TaskDef[P, Any], params: P, *,
                     idempotency_key: str | None = None, max_attempts: int | None = None,
                     time_limit: float | None = None,
                     soft_time_limit: float | None = None,
                     priority: Priority | str | None = None, run_at: datetime | None = None,
                     delay: float | None = None) -> Task: ...

    @overload
    async def submit(self, type: str, params: Mapping[str, Any] | None = None, *,
                     idempotency_key: str | None = None, max_attempts: int | None = None,
                     time_limit: float | None = None,
                     soft_time_limit: float | None = None,
                     priority: Priority | str | None = None, run_at: datetime | None = None,
                     delay: float | None = None) -> Task: ...

    async def submit(self, type: str | TaskDef[Any, Any],
                     params: Params | Mapping[str, Any] | None = None, *,
                     idempotency_key: str | None = None, max_attempts: int | None = None,
                     time_limit: float | None = None,
                     soft_time_limit: float | None = None,
                     priority: Priority | str | None = None, run_at: datetime | None = None,
                     delay: float | None = None) -> Task:
        """Start a task: ``submit(summarize, SummarizeParams(...))`` with a declared type
        and its parameter model (type-checked), or ``submit("summarize", {...})`` by name.
        The same ``idempotency_key`` with the same request returns the task it created the
        first time (409 if they differ).

        ``max_attempts``, ``time_limit`` and ``soft_time_limit`` override the type's retry
        budget and its hard and soft time limits in seconds (the API's ``max_attempts``,
        ``timeout`` and ``soft_timeout``).

        ``priority`` (high, normal, low) overrides the type's. ``run_at`` (an aware datetime)
        or ``delay`` (seconds), not both: the task stays pending until then.
        """
        if run_at is not None and delay is not None:
            raise ValueError("give run_at or delay, not both")
        name = type if isinstance(type, str) else type.name
        values = params.model_dump(mode="json") if isinstance(params, Params) \
            else dict(params or {})
        body: dict[str, Any] = {"type": name, "params": values}
        for name, value in (("max_attempts", max_attempts), ("timeout", time_limit),
                            ("soft_timeout", soft_time_limit),
                            ("priority", Priority(priority).value if priority else None),
                            ("run_at", run_at.isoformat() if run_at else None),
                            ("delay", delay)):
            if value is not None:
                body[name] = value
        key = idempotency_key or str(uuid.uuid4())
        r = await self.request("POST", "/tasks", json=body,
                               headers={"Idempotency-Key": key}, idempotent=True)
        return Task.model_validate_json(r.content)

    async def upload(self, file: FileSource, *, filename: str | None = None,
                     content_type: str | None = None,
                     idempotency_key: str | None = None) -> Upload:
        """Upload a file (a path, bytes or a binary file object), streamed from where it is,
        and start the ``document_process`` task on it."""
        body = MultipartFiles([await asyncio.to_thread(prepare, file, filename, content_type)])
        key = idempotency_key or str(uuid.uuid4())
        r = await self.request("POST", "/upload", body=body,
                               headers={"Idempotency-Key": key}, idempotent=body.replayable)
        return Upload.model_validate_json(r.content)

    async def upload_many(self, files: Sequence[FileSource], *, policy: str = "all",
                          threshold: int | None = None,
                          idempotency_key: str | None = None) -> BatchUpload:
        """Upload several files in one request: ONE batch with a ``document_process`` child
        per file (stored all or none). Follow it with ``follow_batch(batch.task_id)``.
        ``policy``: when the batch fails — ``all`` (default: only if no file could be
        processed), ``any`` file, or ``threshold`` files."""
        parts = [await asyncio.to_thread(prepare, f) for f in files]
        body = MultipartFiles(parts)
        key = idempotency_key or str(uuid.uuid4())
        query: dict[str, Any] = {"policy": policy}
        if threshold is not None:
            query["threshold"] = threshold
        r = await self.request("POST", "/upload", body=body, params=query,
                               headers={"Idempotency-Key": key}, idempotent=body.replayable)
        return BatchUpload.model_validate_json(r.content)

    async def submit_batch(self, tasks: Sequence[tuple[str | TaskDef[Any, Any],
                                                       Params | Mapping[str, Any]]
                                                 | Mapping[str, Any]], *,
                           policy: str = "any", threshold: int | None = None,
                           idempotency_key: str | None = None) -> Batch:
        """Submit tasks of any types as one batch, all or nothing: each item is
        ``(type, params)`` or a ``POST /tasks`` body (``{"type", "params", "priority", ...}``).
        Returns the parent (``task_id``) with its children's ids; follow it with
        ``follow_batch``. ``policy``: ``any`` child failing fails the batch (default),
        ``all`` of them, or ``threshold`` of them."""
        body: list[dict[str, Any]] = []
        for item in tasks:
            if isinstance(item, Mapping):
                body.append(dict(item))
                continue
            kind, params = item
            body.append({"type": kind if isinstance(kind, str) else kind.name,
                         "params": params.model_dump(mode="json")
                         if isinstance(params, Params) else dict(params)})
        payload: dict[str, Any] = {"tasks": body, "policy": policy}
        if threshold is not None:
            payload["threshold"] = threshold
        key = idempotency_key or str(uuid.uuid4())
        r = await self.request("POST", "/batches", json=payload,
                               headers={"Idempotency-Key": key}, idempotent=True)
        return Batch.model_validate_json(r.content)

    async def get_batch(self, batch: TaskRef) -> BatchState:
        """A batch's aggregate now: counts per status, percent, policy."""
        r = await self.request("GET", f"/batches/{_tid(batch)}", params={"children": "false"})
        return BatchState.model_validate_json(r.content)

    async def follow_batch(self, batch: TaskRef) -> AsyncIterator[BatchState]:
        """The batch's aggregate as it changes (a few updates a second at most, each with
        the children that ended since the one before), ending with the batch's own end."""
        async with self.events(batch) as stream:
            async for event in stream:
                if event.type == EventType.AGGREGATE or event.terminal:
                    yield BatchState.of(event)

    async def get(self, task: TaskRef) -> Task:
        """The task's current snapshot."""
        r = await self.request("GET", f"/tasks/{_tid(task)}")
        return Task.model_validate_json(r.content)

    async def list_page(self, *, status: str | Sequence[str] | None = None,
                        type: str | Sequence[str] | None = None, limit: int = 50,
                        cursor: str | None = None) -> TaskPage:
        """One page of the caller's tasks, newest first."""
        params: list[tuple[str, str | int]] = [("limit", limit)]
        params += [("status", s) for s in _many(status)]
        params += [("type", t) for t in _many(type)]
        if cursor:
            params.append(("cursor", cursor))
        r = await self.request("GET", "/tasks", params=params)
        return TaskPage.model_validate_json(r.content)

    async def list_tasks(self, *, status: str | Sequence[str] | None = None,
                         type: str | Sequence[str] | None = None,
                         page_size: int = 50) -> AsyncIterator[Task]:
        """Every matching task, newest first, following the pages as you iterate."""
        cursor: str | None = None
        while True:
            page = await self.list_page(status=status, type=type, limit=page_size,
                                        cursor=cursor)
            for task in page.items:
                yield task
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def cancel(self, task: TaskRef) -> Task:
        """Ask the task to stop: a pending one never starts, a running one stops shortly
        (its status turns ``cancelled`` then). Cancelling a cancelled task is harmless;
        a completed or failed one raises ``Conflict``."""
        r = await self.request("POST", f"/tasks/{_tid(task)}/cancel", idempotent=True)
        return Task.model_validate_json(r.content)

    async def retry(self, task: TaskRef) -> Task:
        """Re-drive a failed or cancelled task: it runs again under the same id."""
        r = await self.request("POST", f"/tasks/{_tid(task)}/retry")
        return Task.model_validate_json(r.content)

    async def history(self, task: TaskRef, *, after: int = 0,
                      page_size: int = 1000) -> AsyncIterator[Event]:
        """The task's recorded events after sequence number ``after``, oldest first."""
        path = f"/tasks/{_tid(task)}/events"
        while True:
            r = await self.request("GET", path, params={"after": after, "limit": page_size})
            page = EventPage.model_validate_json(r.content)
            for event in page.items:
                yield event
            if page.next_after is None or not page.items:
                return
            after = page.next_after

    async def dead_letters(self, *, page_size: int = 50) -> AsyncIterator[DeadLetter]:
        """Failed tasks, newest first, each with the events of its attempts."""
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": page_size}
            if cursor:
                params["cursor"] = cursor
            r = await self.request("GET", "/dead-letters", params=params)
            page = DeadLetterPage.model_validate_json(r.content)
            for item in page.items:
                yield item
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def task_types(self) -> list[TaskType]:
        """The catalogue: each type's description, policy and parameter JSON schema."""
        r = await self.request("GET", "/task-types")
        return [TaskType.model_validate(t) for t in r.json()]

    # --- streams ----------------------------------------------------------------------

    def events(self, task: TaskRef, *, after: int = 0) -> EventStream:
        """The task's events after ``after`` (default: all of them), live, each exactly once
        and in order, ending with its terminal event. Reconnects by itself after a dropped
        connection, a 502/503 or a restart of the service, resuming from the last event.

        It ends at the first terminal event after ``after``: to follow a task that was
        re-driven after it ended, start from its current ``last_event_id`` (``wait`` does).
        """
        return self._open(f"/tasks/{_tid(task)}/stream", lambda e: e.seq, after, True)

    def all_events(self, *, after: int | None = None) -> EventStream:
        """Events of all of the caller's tasks on one connection, keyed by ``tenant_seq``:
        from now on (``after=None``) or after a position. Never ends by itself."""
        return self._open("/stream", lambda e: e.tenant_seq, after, False)

    def _open(self, path: str, key: Any, after: int | None, ends: bool) -> EventStream:
        stream = EventStream(self.http, path, key=key, cursor=after, ends_on_terminal=ends,
                             policy=self.retry_policy, timeout=self.stream_timeout,
                             on_close=self._streams.discard)
        self._streams.add(stream)
        return stream

    async def wait(self, task: TaskRef, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Wait for the task to end, on its event stream. Returns its result; raises
        ``TaskFailed`` (with ``.error``), ``TaskCancelled`` or ``WaitTimeout``."""
        tid = _tid(task)
        last: Event | None = None
        try:
            async with asyncio.timeout(timeout):
                snap = await self.get(tid)
                if not snap.terminal:
                    async with self.events(tid, after=snap.last_event_id) as stream:
                        async for event in stream:
                            last = event
                    if last is None or not last.terminal:  # the stream said 204: look again
                        snap = await self.get(tid)
                        last = None
        except TimeoutError:
            raise errors.WaitTimeout(tid, timeout or 0.0, last) from None
        return outcome(snap, last)

    # --- plumbing ---------------------------------------------------------------------

    async def request(self, method: str, path: str, *, idempotent: bool | None = None,
                      json: Any = None, params: Any = None,
                      headers: Mapping[str, str] | None = None,
                      body: MultipartFiles | None = None) -> httpx.Response:
        """Send a request, retrying what is safe to retry; returns a 2xx response or raises
        the typed error. ``idempotent`` defaults to true for GET."""
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "OPTIONS")
        policy = self.retry_policy
        failures = 0
        while True:
            extra = dict(headers or {})
            content = None
            if body is not None:
                extra["Content-Type"] = body.header
                if body.length is not None:
                    extra["Content-Length"] = str(body.length)
                content = body.chunks()
            try:
                response = await self.http.request(method, path, json=json, params=params,
                                                   headers=extra, content=content)
            except httpx.TransportError as exc:
                failures += 1
                unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout
                                    | httpx.PoolTimeout)
                if not (unsent or idempotent) or failures >= policy.attempts or (
                        body is not None and not body.replayable):
                    raise errors.TransportError(_describe(exc, self.url)) from exc
                await asyncio.sleep(policy.delay(failures))
                continue
            if response.is_success:
                return response
            err = errors.error_for(response)
            failures += 1
            again = response.status_code in (_TRANSIENT if idempotent else _REFUSED)
            if (again and failures < policy.attempts and policy.waits_out(err.retry_after)
                    and (body is None or body.replayable)):
                await asyncio.sleep(policy.delay(failures, err.retry_after))
                continue
            raise err


def outcome(task: Task, event: Event | None = None) -> Any:
    """A finished task's result, or the error its ending calls for."""
    status = event.status if event is not None else task.status
    error = (event.error or event.message) if event is not None else task.error
    tid = task.task_id
    if status == "completed":
        return event.result if event is not None else task.result
    if status == "failed":
        raise errors.TaskFailed(tid, f"task {tid} failed: {error}", error=error, event=event,
                                task=task)
    if status == "cancelled":
        raise errors.TaskCancelled(tid, f"task {tid} was cancelled", error=error, event=event,
                                   task=task)
    raise errors.TaskstreamError(f"task {tid} is still {status}")


def _tid(task: TaskRef) -> str:
    tid = task_id_of(task)
    if not tid or "/" in tid:
        raise ValueError(f"not a task id: {tid!r}")
    return tid


def _many(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _describe(exc: httpx.TransportError, url: str) -> str:
    kind = type(exc).__name__
    text = str(exc) or kind
    return f"cannot reach Taskstream at {url}: {text}" if isinstance(
        exc, httpx.ConnectError) else f"connection to {url} failed: {kind}: {text}"
