"""``Client``: the async client for scripts that are not async.

Each call runs on a private event loop (``asyncio.Runner``) owned by the client, so it cannot
be used from inside a running event loop (a notebook cell, an async app): use ``AsyncClient``
there. Iterators (``list_tasks``, ``history``, ``events``, ``all_events``) pull one item per
step; close them (or exhaust them) to release their connection.

    with Client() as ts:
        task = ts.submit("demo", {"duration": 3})
        for event in ts.events(task):
            print(event.progress)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator, Iterator, Mapping, Sequence
from typing import Any, Self, TypeVar, overload

from taskstream.client.api import AsyncClient
from taskstream.client.models import (
    Batch,
    BatchState,
    BatchUpload,
    DeadLetter,
    Event,
    Task,
    TaskPage,
    TaskRef,
    TaskType,
    Upload,
)
from taskstream.client.uploads import FileSource
from taskstream.declaration import Params, TaskDef

T = TypeVar("T")
P = TypeVar("P", bound=Params)


async def _next(it: AsyncIterator[T]) -> T:
    return await anext(it)


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Client:
    """Blocking twin of ``AsyncClient``; takes the same arguments."""

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        # With a loop factory the runner leaves the thread's current event loop alone.
        self._runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
        self._closed = False
        self.aio = AsyncClient(url, **kwargs)
        self.url = self.aio.url

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.run(self.aio.aclose())
        finally:
            self._runner.close()

    def _iterate(self, it: AsyncIterator[T]) -> Generator[T, None, None]:
        try:
            while True:
                try:
                    item = self._runner.run(_next(it))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            close = getattr(it, "aclose", None)
            # Not from inside the loop (a finalizer run by the garbage collector mid-call):
            # the loop's own async-generator hooks close it then.
            if close is not None and not self._closed and not _in_loop():
                self._runner.run(close())

    @overload
    def submit(self, type: TaskDef[P, Any], params: P, *,
               idempotency_key: str | None = None, max_attempts: int | None = None,
               time_limit: float | None = None, soft_time_limit: float | None = None
               ) -> Task: ...

    @overload
    def submit(self, type: str, params: Mapping[str, Any] | None = None, *,
               idempotency_key: str | None = None, max_attempts: int | None = None,
               time_limit: float | None = None, soft_time_limit: float | None = None
               ) -> Task: ...

    def submit(self, type: str | TaskDef[Any, Any],
               params: Params | Mapping[str, Any] | None = None, *,
               idempotency_key: str | None = None, max_attempts: int | None = None,
               time_limit: float | None = None, soft_time_limit: float | None = None) -> Task:
        """``AsyncClient.submit``, blocking."""
        submit: Any = self.aio.submit  # the overloads were checked at this call's caller
        return self._runner.run(submit(  # type: ignore[no-any-return]
            type, params, idempotency_key=idempotency_key, max_attempts=max_attempts,
            time_limit=time_limit, soft_time_limit=soft_time_limit))

    def upload(self, file: FileSource, *, filename: str | None = None,
               content_type: str | None = None, idempotency_key: str | None = None) -> Upload:
        return self._runner.run(self.aio.upload(file, filename=filename,
                                                content_type=content_type,
                                                idempotency_key=idempotency_key))

    def upload_many(self, files: Sequence[FileSource], *, policy: str = "all",
                    threshold: int | None = None,
                    idempotency_key: str | None = None) -> BatchUpload:
        return self._runner.run(self.aio.upload_many(files, policy=policy, threshold=threshold,
                                                     idempotency_key=idempotency_key))

    def submit_batch(self, tasks: Sequence[tuple[str | TaskDef[Any, Any],
                                                 Params | Mapping[str, Any]]
                                           | Mapping[str, Any]], *,
                     policy: str = "any", threshold: int | None = None,
                     idempotency_key: str | None = None) -> Batch:
        return self._runner.run(self.aio.submit_batch(tasks, policy=policy,
                                                      threshold=threshold,
                                                      idempotency_key=idempotency_key))

    def get_batch(self, batch: TaskRef) -> BatchState:
        return self._runner.run(self.aio.get_batch(batch))

    def follow_batch(self, batch: TaskRef) -> Iterator[BatchState]:
        return self._iterate(self.aio.follow_batch(batch))

    def get(self, task: TaskRef) -> Task:
        return self._runner.run(self.aio.get(task))

    def list_page(self, *, status: str | Sequence[str] | None = None,
                  type: str | Sequence[str] | None = None, limit: int = 50,
                  cursor: str | None = None) -> TaskPage:
        return self._runner.run(self.aio.list_page(status=status, type=type, limit=limit,
                                                   cursor=cursor))

    def list_tasks(self, *, status: str | Sequence[str] | None = None,
                   type: str | Sequence[str] | None = None,
                   page_size: int = 50) -> Iterator[Task]:
        return self._iterate(self.aio.list_tasks(status=status, type=type,
                                                 page_size=page_size))

    def cancel(self, task: TaskRef) -> Task:
        return self._runner.run(self.aio.cancel(task))

    def retry(self, task: TaskRef) -> Task:
        return self._runner.run(self.aio.retry(task))

    def history(self, task: TaskRef, *, after: int = 0) -> Iterator[Event]:
        return self._iterate(self.aio.history(task, after=after))

    def dead_letters(self, *, page_size: int = 50) -> Iterator[DeadLetter]:
        return self._iterate(self.aio.dead_letters(page_size=page_size))

    def task_types(self) -> list[TaskType]:
        return self._runner.run(self.aio.task_types())

    def events(self, task: TaskRef, *, after: int = 0) -> Iterator[Event]:
        return self._iterate(self.aio.events(task, after=after))

    def all_events(self, *, after: int | None = None) -> Iterator[Event]:
        return self._iterate(self.aio.all_events(after=after))

    def wait(self, task: TaskRef, timeout: float | None = None) -> Any:
        return self._runner.run(self.aio.wait(task, timeout))
