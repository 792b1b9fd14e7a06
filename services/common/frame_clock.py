"""The one frame clock of the media plane: the mixer's program, graphics' layers and
distribution's encoder tick by it (ADR 0023).

Tick `i` is due at `start + i / fps` on the event loop's monotonic clock, whatever the media
does, so a clock never drifts. One policy for running late: every tick runs, in order, however
late (a consumer sheds work by `Tick.late_s`: distribution skips a picture's encode, graphics a
layer's render); a tick due more than `MAX_LATE_S` ago is not run at all: the clock jumps to the
tick due now and reports how many it skipped, so a stall (a frozen machine, a debugger) costs a
gap instead of a burst of catch-up ticks and a latency that never comes back down.

    clock = FrameClock(25, on_skip=lambda n: SKIPPED.inc(n))
    async for tick in clock.ticks():
        render(tick.index)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

MAX_LATE_S = 1.0


@dataclass(frozen=True, slots=True)
class Tick:
    index: int
    late_s: float  # how long after it was due it starts (0 when on time)


class FrameClock:
    def __init__(
        self,
        fps: float,
        *,
        on_skip: Callable[[int], None] = lambda _skipped: None,
        start_index: int = 0,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"a frame clock needs a positive rate, not {fps}")
        self.interval = 1 / fps
        self.on_skip = on_skip
        self.index = start_index

    async def ticks(self) -> AsyncIterator[Tick]:
        """The ticks from `start_index`, the first one due now; `index` is the next one's."""
        loop = asyncio.get_running_loop()
        start = loop.time() - self.index * self.interval
        while True:
            late = loop.time() - (start + self.index * self.interval)
            if late < 0:
                await asyncio.sleep(-late)
            elif late > MAX_LATE_S:
                skipped = int(late / self.interval)
                self.index += skipped
                self.on_skip(skipped)
                late -= skipped * self.interval
            tick = Tick(self.index, max(0.0, late))
            self.index += 1
            yield tick
            if late >= 0:
                await asyncio.sleep(0)  # behind: still let the loop breathe between frames
