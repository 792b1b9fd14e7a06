"""The asyncio task report that a timed-out test prints: where the test's own tasks wait, down
the chain of awaits, and one line for every other task."""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.hang_report import task_report


async def test_the_report_follows_the_tests_awaits_and_lists_the_others() -> None:
    stuck = asyncio.Event()

    async def waits_for_the_event() -> None:
        await asyncio.wait_for(stuck.wait(), 60)

    async def helper() -> None:
        await waits_for_the_event()

    ours = asyncio.create_task(helper(), name="the-helper")
    other = asyncio.create_task(asyncio.sleep(60), name="bystander")
    await asyncio.sleep(0.01)
    try:
        report = task_report(asyncio.get_running_loop())
    finally:
        for task in (ours, other):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    lines = report.splitlines()
    # This test's task and the helper run the suite's code: their stacks come first, the helper's
    # down to the future that wait_for waits on (the event's wait is wait_for's own task).
    assert lines[0] == "asyncio: 4 unfinished tasks"
    helper_at = lines.index("task the-helper (3 frames):")
    stack = lines[helper_at + 1 : helper_at + 7]
    assert [line.strip() for line in stack[1::2]] == [
        "await waits_for_the_event()",
        "await asyncio.wait_for(stuck.wait(), 60)",
        "await waiter",
    ]
    assert stack[0].endswith(", in helper") and stack[4].endswith(", in wait_for")
    others = lines[lines.index("other tasks:") + 1 :]
    assert len(others) == 2  # the bystander and wait_for's inner task, each in a line
    assert any(line.startswith("task bystander: ") and "in sleep" in line for line in others)
