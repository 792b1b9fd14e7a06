"""The T-bar (MixerCommand.Manual) on the real program output, checked pixel by pixel by pts."""

from __future__ import annotations

import asyncio
import contextlib
import math

import numpy as np
import pytest

from services.common import errors
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import media_pb2, mixer_pb2
from services.common.media import proto_to_i420
from services.mixer.service import MixerService
from tests.integration.mixer.conftest import CreateProduction
from tests.support.media_source import Card, FakeMediaServer
from tests.support.mixer import command, frames, production, unique, yuv_at

Cmd = mixer_pb2.MixerCommand
SMALL = media_pb2.Rendition(width=320, height=180, no_audio=True)
POINTS = ((8, 8), (160, 90), (300, 170))
# A frame rendered after a command has a pts at or after the command's reply; a few ms of slack
# cover a tick woken a little early and the wall clock read apart from the frame clock.
SLACK_US = 5_000


class ProgramRecorder:
    """Every program frame by pts, recorded in the background."""

    def __init__(self, endpoint: str, handle: str) -> None:
        self.by_pts: dict[int, np.ndarray] = {}
        self.arrived = asyncio.Event()
        self._task = asyncio.create_task(self._record(endpoint, handle))

    async def _record(self, endpoint: str, handle: str) -> None:
        async for message in frames(endpoint, handle, SMALL):
            if message.WhichOneof("body") == "video":
                self.by_pts[message.video.pts_us] = proto_to_i420(message.video)
                self.arrived.set()

    async def after(self, time_us: int, count: int = 3, timeout: float = 10.0) -> list[np.ndarray]:
        """The first `count` frames with pts at or after `time_us` (waiting for them)."""
        return [image for _pts, image in await self.timed(time_us + SLACK_US, count, timeout)]

    async def timed(
        self, time_us: int, count: int, timeout: float = 10.0
    ) -> list[tuple[int, np.ndarray]]:
        """The first `count` (pts, frame) with pts at or after `time_us`."""
        async with asyncio.timeout(timeout):
            while True:
                later = sorted(p for p in self.by_pts if p >= time_us)
                if len(later) >= count:
                    return [(p, self.by_pts[p]) for p in later[:count]]
                self.arrived.clear()
                await self.arrived.wait()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


def blend(a: tuple[int, ...], b: tuple[int, ...], position: float) -> tuple[float, ...]:
    return tuple(p * (1 - position) + q * position for p, q in zip(a, b, strict=True))


def assert_shows(images: list[np.ndarray], yuv: tuple[float, ...]) -> None:
    for image in images:
        for x, y in POINTS:
            got = yuv_at(image, x, y)
            assert all(abs(g - w) <= 3 for g, w in zip(got, yuv, strict=True)), (got, yuv)


async def test_the_tbar_mixes_completes_and_abandons(
    bus: Bus,
    media: FakeMediaServer,
    announce,
    mixer: MixerService,
    create_production: CreateProduction,
) -> None:
    prod_id = unique("tbar")
    mine: list[mixer_pb2.MixerState] = []

    async def on_state(state: mixer_pb2.MixerState, _subject: str) -> None:
        mine.append(state)

    sub = await bus.subscribe(
        subject("prod", prod_id, "mixer", "state"), mixer_pb2.MixerState, on_state
    )
    a = media.add(Card(f"source/{prod_id}-gz", (60, 100, 160)))
    b = media.add(Card(f"source/{prod_id}-sz", (180, 160, 90)))
    await announce()
    sa, sb = (c.name.removeprefix("source/") for c in (a, b))
    await create_production(production(prod_id, [a, b]))
    recorder = ProgramRecorder(mixer.grpc_endpoint, f"prod/{prod_id}/program")
    try:
        ready = await command(bus, prod_id, Cmd(preview=Cmd.Preview(source=sb)))
        assert (ready.switcher.program, ready.switcher.preview) == (sa, sb)
        assert_shows(await recorder.after(ready.time_us), a.yuv)

        half = await command(bus, prod_id, Cmd(manual=Cmd.Manual(position=0.5)))
        t = half.transition
        assert t.active and t.manual and t.position == 0.5 and t.transition.type == "mix"
        assert (half.switcher.program, half.switcher.preview) == (sa, sb)
        # Every frame after the command shows the new position: the mean of A and B.
        assert_shows(await recorder.after(half.time_us), blend(a.yuv, b.yuv, 0.5))

        done = await command(bus, prod_id, Cmd(manual=Cmd.Manual(position=1.0)))
        assert (done.switcher.program, done.switcher.preview) == (sb, sa)
        assert not done.transition.active
        assert_shows(await recorder.after(done.time_us), b.yuv)
        tally = {e.source: (e.program, e.preview) for e in done.tally.sources}
        assert tally == {sa: (False, True), sb: (True, False)}

        back = await command(bus, prod_id, Cmd(manual=Cmd.Manual(position=0.3)))
        assert back.transition.manual and back.transition.position == pytest.approx(0.3)
        assert (back.switcher.program, back.switcher.preview) == (sb, sa)
        assert_shows(await recorder.after(back.time_us), blend(b.yuv, a.yuv, 0.3))

        rest = await command(bus, prod_id, Cmd(manual=Cmd.Manual(position=0.0)))
        assert not rest.transition.active
        assert (rest.switcher.program, rest.switcher.preview) == (sb, sa)
        assert rest.switcher.revision == done.switcher.revision  # nothing swapped
        assert_shows(await recorder.after(rest.time_us), b.yuv)

        for bad in (1.5, -0.2, math.nan):
            with pytest.raises(errors.InvalidArgument) as info:
                await command(bus, prod_id, Cmd(manual=Cmd.Manual(position=bad)))
            assert info.value.field == "manual.position"
    finally:
        await recorder.close()
        await sub.unsubscribe()

    held = [s for s in mine if s.transition.manual]
    assert {round(s.transition.position, 2) for s in held} == {0.5, 0.3}
    # While held, both sources are on program in the tally (as during AUTO).
    both = [s for s in held if all(e.program for e in s.tally.sources)]
    assert both and all(s.transition.active for s in held)
    assert not mine[-1].transition.active and mine[-1].switcher.program == sb


async def test_auto_carries_on_from_the_bar_and_cut_completes_it(
    bus: Bus,
    media: FakeMediaServer,
    announce,
    mixer: MixerService,
    create_production: CreateProduction,
) -> None:
    prod_id = unique("tbauto")
    a = media.add(Card(f"source/{prod_id}-gz", (60, 100, 160)))
    b = media.add(Card(f"source/{prod_id}-sz", (180, 160, 90)))
    await announce()
    sa, sb = (c.name.removeprefix("source/") for c in (a, b))
    await create_production(production(prod_id, [a, b]))
    recorder = ProgramRecorder(mixer.grpc_endpoint, f"prod/{prod_id}/program")
    try:
        held = await command(bus, prod_id, Cmd(manual=Cmd.Manual(position=0.5)))
        assert_shows(await recorder.after(held.time_us), blend(a.yuv, b.yuv, 0.5))
        auto = Cmd.Auto(transition=mixer_pb2.Transition(type="mix", duration_ms=1000))
        running = await command(bus, prod_id, Cmd(auto=auto))
        t = running.transition
        assert t.active and not t.manual and t.position >= 0.5
        assert (running.switcher.program, running.switcher.preview) == (sb, sa)
        # From 0.5 to 1 over half of the AUTO's second: 12 frames of 1/24 each.
        start = t.start_pts_us
        ramp = await recorder.timed(start + 1, 14)
        for pts, image in ramp:
            steps = round((pts - start) / 40_000)
            position = min(1.0, 0.5 + 0.5 * steps / 12)
            assert_shows([image], blend(a.yuv, b.yuv, position))
        assert ramp[-1][0] >= start + 12 * 40_000  # done after 12 frames, B alone

        again = await command(bus, prod_id, Cmd(manual=Cmd.Manual(position=0.4)))
        assert again.transition.manual
        assert_shows(await recorder.after(again.time_us), blend(b.yuv, a.yuv, 0.4))
        cut = await command(bus, prod_id, Cmd(cut=Cmd.Cut()))
        assert not cut.transition.active
        assert (cut.switcher.program, cut.switcher.preview) == (sa, sb)
        assert_shows(await recorder.after(cut.time_us), a.yuv)
    finally:
        await recorder.close()
