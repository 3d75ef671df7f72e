"""A worker's shutdown stops its background loops (``worker.main._stop``) and goes on even
when one swallows its cancellation, as Python 3.11's ``asyncio.wait_for`` does when the
awaited thing finishes in the same loop turn as the cancel."""

import asyncio

import pytest

from worker.main import _stop


async def test_a_loop_that_swallows_its_cancellation_is_cancelled_again(
        caplog: pytest.LogCaptureFixture) -> None:
    cancels = 0

    async def stubborn() -> None:
        nonlocal cancels
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancels += 1
                if cancels == 1:
                    continue  # swallowed, as a library might
                raise

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    await asyncio.wait_for(_stop(task), 10)
    assert task.cancelled() and cancels == 2
    assert "background loop stubborn still running 1s after its cancellation" in caplog.text


async def test_a_loop_that_ended_with_an_error_reports_it() -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="boom"):
        await _stop(task)
