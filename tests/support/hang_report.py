"""What an asyncio test was waiting on when pytest-timeout ended it.

pytest-timeout's dump shows the threads: for an asyncio test the main thread is only ever in the
loop's `select`. This report adds the loop's tasks: the full coroutine stacks of the tasks that run
code of the test suite (the test and its helpers, where the wait is), then one line per other task
(the services' own tasks), each with the line it waits at.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

TESTS_DIR = str(Path(__file__).resolve().parent.parent)
MAX_OTHER_TASKS = 60


def _where(frame: FrameType) -> str:
    code = frame.f_code
    return f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"


def awaiting_frames(task: asyncio.Task[Any]) -> list[FrameType]:
    """The task's frames from its coroutine down the chain of awaits (`Task.get_stack` stops at
    the outermost coroutine of a suspended task)."""
    frames: list[FrameType] = []
    step: Any = task.get_coro()
    while step is not None and len(frames) < 60:
        frame = getattr(step, "cr_frame", None) or getattr(step, "gi_frame", None)
        frame = frame or getattr(step, "ag_frame", None)
        if frame is not None:
            frames.append(frame)
        step = (
            getattr(step, "cr_await", None)
            or getattr(step, "gi_yieldfrom", None)
            or getattr(step, "ag_await", None)
        )
    return frames


def task_report(loop: asyncio.AbstractEventLoop) -> str:
    """The loop's unfinished tasks: suite tasks with stacks first, then the others in a line."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    ours: list[str] = []
    others: list[str] = []
    for task in sorted(tasks, key=lambda t: t.get_name()):
        stack = awaiting_frames(task)
        if any(f.f_code.co_filename.startswith(TESTS_DIR) for f in stack):
            lines = [f"task {task.get_name()} ({len(stack)} frames):"]
            lines += [
                "  " + line.rstrip("\n")
                for line in traceback.format_list(
                    traceback.StackSummary.extract((f, f.f_lineno) for f in stack)
                )
            ]
            ours.append("\n".join(lines))
        else:
            innermost = _where(stack[-1]) if stack else "(not started)"
            others.append(f"task {task.get_name()}: {innermost}")
    shown = others[:MAX_OTHER_TASKS]
    if len(others) > len(shown):
        shown.append(f"... and {len(others) - len(shown)} more")
    head = f"asyncio: {len(tasks)} unfinished tasks"
    return "\n".join([head, *ours, "other tasks:", *shown])


def chain_task_report() -> None:
    """Put the task report in front of the SIGALRM handler that pytest-timeout installed."""
    timeout_handler = signal.getsignal(signal.SIGALRM)
    if not callable(timeout_handler):
        return
    then: Callable[[int, FrameType | None], Any] = timeout_handler

    def report_then_time_out(signum: int, frame: FrameType | None) -> None:
        loop = asyncio.events._get_running_loop()
        if loop is not None:
            try:
                report = task_report(loop)
            except Exception as exc:  # a report must never hide the timeout itself
                report = f"asyncio task report failed: {exc!r}"
            print(report, file=sys.stdout, flush=True)  # ahead of pytest-timeout's dump
        then(signum, frame)

    signal.signal(signal.SIGALRM, report_then_time_out)
