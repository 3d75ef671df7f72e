"""service.deadlines: many deadlines on one loop timer, never early, at most a bucket late."""

import asyncio

from service.deadlines import GRANULARITY, Deadlines, of_running_loop


class Item:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.fired: list[float] = []

    def expire(self) -> None:
        self.fired.append(self.loop.time())


async def test_each_deadline_fires_once_not_early_and_at_most_a_bucket_late() -> None:
    loop = asyncio.get_running_loop()
    d = Deadlines(loop)
    now = loop.time()
    items = {Item(loop): now + delay for delay in (0.05, 0.12, 0.12, 0.3, 0.31)}
    for item, when in items.items():
        d.add(item, when)
    await asyncio.sleep(0.3 + 2 * GRANULARITY)
    for item, when in items.items():
        assert len(item.fired) == 1
        assert when <= item.fired[0] <= when + GRANULARITY + 0.05  # + the loop's own lag
    assert len(d) == 0


async def test_a_moved_deadline_replaces_the_old_and_a_discarded_one_never_fires() -> None:
    loop = asyncio.get_running_loop()
    d = Deadlines(loop)
    moved, dropped = Item(loop), Item(loop)
    now = loop.time()
    d.add(moved, now + 0.05)
    d.add(moved, now + 0.25)  # later: the first deadline is gone
    d.add(dropped, now + 0.05)
    d.discard(dropped)
    await asyncio.sleep(0.15)
    assert moved.fired == [] and dropped.fired == []
    await asyncio.sleep(0.25)
    assert len(moved.fired) == 1 and moved.fired[0] >= now + 0.25
    assert dropped.fired == []


async def test_an_earlier_deadline_rearms_the_timer() -> None:
    loop = asyncio.get_running_loop()
    d = Deadlines(loop)
    late, early = Item(loop), Item(loop)
    now = loop.time()
    d.add(late, now + 5.0)
    d.add(early, now + 0.05)
    await asyncio.sleep(0.05 + 2 * GRANULARITY)
    assert len(early.fired) == 1 and late.fired == []
    d.discard(late)


async def test_one_per_running_loop() -> None:
    assert of_running_loop() is of_running_loop()
    assert of_running_loop().loop is asyncio.get_running_loop()


async def test_an_item_that_raises_does_not_cost_the_others_their_wake_up() -> None:
    loop = asyncio.get_running_loop()
    d = Deadlines(loop)

    class Broken(Item):
        def expire(self) -> None:
            raise RuntimeError("bug")

    broken, fine = Broken(loop), Item(loop)
    now = loop.time()
    d.add(broken, now + 0.05)
    d.add(fine, now + 0.05)
    await asyncio.sleep(0.05 + 2 * GRANULARITY)
    assert len(fine.fired) == 1


async def test_ensure_keeps_an_earlier_deadline() -> None:
    loop = asyncio.get_running_loop()
    d = Deadlines(loop)
    item = Item(loop)
    now = loop.time()
    d.ensure(item, now + 0.05)
    d.ensure(item, now + 5.0)  # registered already: the earlier one stands
    await asyncio.sleep(0.05 + 2 * GRANULARITY)
    assert len(item.fired) == 1
    d.ensure(item, loop.time() + 0.05)  # fired, so not registered: this one counts
    await asyncio.sleep(0.05 + 2 * GRANULARITY)
    assert len(item.fired) == 2


async def test_an_item_moved_far_on_expiry_does_not_hold_back_nearer_deadlines() -> None:
    loop = asyncio.get_running_loop()
    d = Deadlines(loop)

    class Again(Item):
        def expire(self) -> None:
            super().expire()
            if len(self.fired) == 1:
                d.add(self, self.loop.time() + 5.0)  # a send guard's next send, say

    again, near = Again(loop), Item(loop)
    now = loop.time()
    d.add(again, now + 0.05)
    d.add(near, now + 0.3)
    await asyncio.sleep(0.3 + 2 * GRANULARITY)
    assert len(again.fired) == 1 and len(near.fired) == 1
    d.discard(again)
