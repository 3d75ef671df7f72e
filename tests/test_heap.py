"""The web process's heap freezer (service.heap): what it freezes, and that a full collection
reclaims cycles that died frozen. It changes this process's collector: every test restores it."""

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from service.heap import HeapFreezer
from taskstream.core.settings import Settings


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


@pytest.fixture
def collector() -> Iterator[None]:
    gc.unfreeze()  # an app started in this process froze its start-up objects
    gc.collect()
    yield
    gc.unfreeze()
    gc.collect()


async def test_freezes_what_is_alive_on_its_interval(collector: None) -> None:
    freezer = HeapFreezer(interval=0.05, full_interval=0)
    assert gc.get_freeze_count() == 0
    freezer.start()
    try:
        await asyncio.sleep(0.2)
        assert gc.get_freeze_count() > 0
    finally:
        await freezer.close()


def test_a_full_collection_frees_cycles_that_died_frozen(collector: None) -> None:
    """What the module assumes of CPython: a frozen cycle survives ``gc.collect()``, and
    unfreezing lets the next collection free it."""
    node = Node()
    dead = weakref.ref(node)
    gc.freeze()
    del node
    gc.collect()
    assert dead() is not None  # held: frozen objects are not walked
    freezer = HeapFreezer(interval=1.0, full_interval=600)
    assert freezer.collect_all() >= 1
    assert dead() is None
    assert freezer.full_collections == 1
    assert gc.get_freeze_count() > 0  # frozen again after the collection


async def test_a_full_collection_follows_every_n_ended_streams(collector: None) -> None:
    """sse-starlette's ended streams leave cycles that freezing holds: their count bounds
    how many, whatever the time schedule says."""
    ended = 0
    freezer = HeapFreezer(interval=0.02, full_interval=0, ended=lambda: ended, full_after=3)
    freezer.start()
    try:
        node = Node()
        dead = weakref.ref(node)
        await asyncio.sleep(0.1)  # frozen
        del node
        ended = 2
        await asyncio.sleep(0.1)
        assert freezer.full_collections == 0 and dead() is not None  # 2 < 3: held
        ended = 3
        await asyncio.sleep(0.1)
        assert freezer.full_collections == 1 and dead() is None
        ended = 5
        await asyncio.sleep(0.1)
        assert freezer.full_collections == 1  # counted from the last full collection
        ended = 6
        await asyncio.sleep(0.1)
        assert freezer.full_collections == 2
    finally:
        await freezer.close()


def test_defaults_freeze_with_both_responses_and_bound_starlettes_cycles() -> None:
    for response in ("lean", "starlette"):
        assert Settings(sse_response=response).gc_freeze_interval == 1.0
    assert Settings(sse_response="starlette").heap_full_after_streams() == 5_000
    assert Settings(sse_response="lean").heap_full_after_streams() == 0
    assert Settings(sse_response="lean",
                    gc_full_after_streams=500).heap_full_after_streams() == 500
