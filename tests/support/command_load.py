"""A steady stream of commands, each retried as `baycast ctl` retries it (one command id,
through UNAVAILABLE), for tests that break the bus or a service underneath."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from services.common import errors

R = TypeVar("R")


async def retried(call: Callable[[], Awaitable[R]], retry_for_s: float = 30.0) -> R:
    """`call()` (which sends one command with its id) until it is answered, UNAVAILABLE aside."""
    deadline = time.monotonic() + retry_for_s
    while True:
        try:
            return await call()
        except errors.Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def every(
    interval_s: float, most: int, stop: asyncio.Event, send: Callable[[int], Awaitable[None]]
) -> list[asyncio.Task[None]]:
    """Start `send(n)` every `interval_s` until `stop` is set, `most` at the most (bounded)."""
    tasks = []
    for n in range(most):
        if stop.is_set():
            break
        tasks.append(asyncio.create_task(send(n)))
        await asyncio.sleep(interval_s)
    return tasks
