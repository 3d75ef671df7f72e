"""The delay between retries of something that is briefly away (PostgreSQL, Redis): it starts
short, doubles after each failure up to a cap, and starts short again after a success."""

import asyncio


class Backoff:
    def __init__(self, first: float = 0.05, cap: float = 2.0) -> None:
        self.first = first
        self.cap = cap
        self.delay = first  # what the next sleep() waits: callers log it before sleeping

    def reset(self) -> None:
        self.delay = self.first

    async def sleep(self) -> None:
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.cap)
