"""The one frame clock's late policy: every tick runs in order while it is under a second late
(each saying how late), a stall past a second jumps to the tick due now and reports the skip."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.common.frame_clock import MAX_LATE_S, FrameClock, Tick

FPS = 50


async def test_on_time_ticks_keep_the_rate_and_start_where_asked() -> None:
    clock = FrameClock(FPS, start_index=7)
    loop = asyncio.get_running_loop()
    began = loop.time()
    ticks: list[Tick] = []
    async for tick in clock.ticks():
        ticks.append(tick)
        if len(ticks) == 25:
            break
    elapsed = loop.time() - began
    assert [t.index for t in ticks] == list(range(7, 32))
    assert clock.index == 32
    assert 24 / FPS <= elapsed < 24 / FPS + 0.2  # the first is due at once, the 25th 0.48 s on
    assert sum(t.late_s < 0.02 for t in ticks) >= 20


async def test_a_stall_under_a_second_runs_every_tick_late() -> None:
    skipped: list[int] = []
    ticks: list[Tick] = []
    async for tick in FrameClock(FPS, on_skip=skipped.append).ticks():
        ticks.append(tick)
        if tick.index == 2:
            time.sleep(0.3)  # noqa: ASYNC251 - the loop held: the next ticks start late
        if tick.index == 30:
            break
    assert skipped == []
    assert [t.index for t in ticks] == list(range(31))
    late = [t.late_s for t in ticks[3:10]]
    assert 0.25 < late[0] < 0.5
    assert late == sorted(late, reverse=True)  # run back to back: each less late than before


async def test_a_stall_past_a_second_jumps_to_now_and_reports_the_skip() -> None:
    skipped: list[int] = []
    ticks: list[Tick] = []
    async for tick in FrameClock(FPS, on_skip=skipped.append).ticks():
        ticks.append(tick)
        if tick.index == 2:
            time.sleep(MAX_LATE_S + 0.3)  # noqa: ASYNC251 - the loop held past a second
        if len(ticks) == 6:
            break
    assert len(skipped) == 1
    assert (MAX_LATE_S + 0.2) * FPS <= skipped[0] <= (MAX_LATE_S + 0.6) * FPS
    assert [t.index for t in ticks] == [0, 1, 2, *range(3 + skipped[0], 6 + skipped[0])]
    assert ticks[3].late_s < 1 / FPS


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FrameClock(0)
