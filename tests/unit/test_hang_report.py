"""The asyncio task report that a timed-out test prints: where the test's own tasks wait, down
the chain of awaits, and one line for every other task."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from types import FrameType

import pytest

from tests.support.hang_report import chain_task_report, task_report


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


def test_the_alarm_prints_the_report_then_runs_the_timeouts_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As pytest-timeout's SIGALRM handler is chained in conftest: the report first, then the
    handler, whose exception leaves the event loop as pytest-timeout's failure does."""

    class TimedOut(Exception):
        pass

    def timeout_handler(signum: int, frame: FrameType | None) -> None:
        raise TimedOut

    async def waits_in_a_helper() -> None:
        await asyncio.Event().wait()

    loop = asyncio.new_event_loop()
    before = signal.signal(signal.SIGALRM, timeout_handler)
    try:
        chain_task_report()
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(TimedOut):
            loop.run_until_complete(asyncio.wait_for(waits_in_a_helper(), 5))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    printed = capsys.readouterr().out
    assert printed.startswith("asyncio: 2 unfinished tasks\n")
    assert ", in waits_in_a_helper\n    await asyncio.Event().wait()\n" in printed
