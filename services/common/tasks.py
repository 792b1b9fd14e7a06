"""Stopping background tasks so that a stop always ends.

A cancellation can be lost: Python 3.11's `asyncio.wait_for` (used inside nats-py) swallows it
when the awaited call completes in the same loop step, and the task then runs on. A bare
`gather` after `cancel()` waits on such a task forever; `cancel_and_wait` cancels again until the
task is done, and gives up (logging the names) after `timeout` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

log = structlog.get_logger("baycast.tasks")

RECANCEL_INTERVAL_S = 0.2


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], timeout: float = 5.0) -> bool:
    """Cancel `tasks` and wait for them; True when all ended within `timeout` seconds."""
    pending = {t for t in tasks if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.error("tasks_did_not_stop", tasks=sorted(t.get_name() for t in pending))
            return False
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_INTERVAL_S, remaining))
    return True
