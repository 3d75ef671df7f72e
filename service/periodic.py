"""A web process's background job that runs every ``interval`` seconds until it is closed
(``service.stale``'s check of idle streams, ``service.heap``'s freezer)."""

import asyncio


class Periodic:
    def __init__(self, name: str, interval: float) -> None:
        self._name = name
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run ``tick`` every interval from now on (an interval of 0: never)."""
        if self._interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.tick()

    async def tick(self) -> None:
        raise NotImplementedError
