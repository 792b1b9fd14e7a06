"""cancel_and_wait: a lost cancellation is repeated, and a task that never ends is given up on."""

from __future__ import annotations

import asyncio

from services.common.tasks import cancel_and_wait


async def test_a_task_that_swallows_one_cancellation_is_cancelled_again() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 2:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], timeout=5.0)
    assert task.cancelled() and swallowed == 2


async def test_a_task_that_never_ends_is_given_up_on_after_the_timeout() -> None:
    release = asyncio.Event()

    async def deaf() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(deaf(), name="deaf")
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert not await cancel_and_wait([task], timeout=0.5)
    assert 0.5 <= loop.time() - started < 5.0
    assert not task.done()
    release.set()
    task.cancel()
    await asyncio.wait([task], timeout=1.0)
    assert task.done()


async def test_finished_tasks_need_no_wait() -> None:
    async def quick() -> None:
        return None

    task = asyncio.create_task(quick())
    await task
    assert await cancel_and_wait([task], timeout=0.0)
