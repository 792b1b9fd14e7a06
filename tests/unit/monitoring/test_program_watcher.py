"""Parts of the program watcher: handle names, reading the luma plane, orphaned alerts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np
import pytest

from services.common.gen.baycast.v1 import media_pb2, monitoring_pb2
from services.common.media import i420_shared_message, i420_to_proto
from services.common.rpc import ChannelCache
from services.common.shared_memory import RingHolder
from services.common.sound_ring import SoundRing
from services.common.tasks import cancel_and_wait
from services.monitoring.alerts import AlertBook
from services.monitoring.confidence import Change, Thresholds
from services.monitoring.program_watcher import (
    ProgramWatcher,
    ProgramWatchers,
    luma_plane,
    production_of,
    program_handle,
)


def test_program_handles() -> None:
    assert program_handle("qihang") == "prod/qihang/program"
    assert production_of("prod/qihang/program") == "qihang"
    for other in ("prod/qihang/preview", "source/gz", "prod//program", "prod/a/program/x"):
        assert production_of(other) is None


def test_luma_plane_drops_row_padding() -> None:
    image = np.zeros((6, 4), np.uint8)
    image[:4] = np.arange(16, dtype=np.uint8).reshape(4, 4)
    frame = i420_to_proto(image, pts_us=0)
    assert np.array_equal(luma_plane(frame), image[:4])
    padded = media_pb2.VideoFrame(
        width=4,
        height=4,
        pixel_format=media_pb2.PIXEL_FORMAT_I420,
        planes=[media_pb2.Plane(data=bytes(range(32)), stride=8)],
    )
    assert luma_plane(padded).tolist()[1] == [8, 9, 10, 11]


def test_a_short_plane_is_a_value_error() -> None:
    short = media_pb2.VideoFrame(
        width=4, height=4, planes=[media_pb2.Plane(data=b"\0" * 10, stride=4)]
    )
    with pytest.raises(ValueError):
        luma_plane(short)


class EmptyDirectory:
    """A handle directory in which no program is announced."""

    async def names(self) -> list[str]:
        return ["source/gz"]

    async def lookup(self, _name: str) -> None:
        return None


async def test_program_alerts_adopted_for_a_program_no_longer_announced_are_cleared() -> None:
    sent: list[monitoring_pb2.Alert] = []
    cleared_one = asyncio.Event()

    def publish(alert: monitoring_pb2.Alert) -> None:
        sent.append(alert)
        if alert.state == monitoring_pb2.ALERT_STATE_CLEARED:
            cleared_one.set()

    book = AlertBook("mon-1", publish)
    book.seed([monitoring_pb2.Alert(id="b1", condition="program_black", target="ended")])
    book.raise_("source_lost", "gz", "not a program alert: left alone")
    watchers = ProgramWatchers(
        EmptyDirectory(),  # type: ignore[arg-type]
        ChannelCache(),
        book,
        media_pb2.Rendition(),
        Thresholds(),
        interval_s=0.01,
        subscriber="test",
        spawn=lambda coro, name: asyncio.create_task(coro, name=name),
    )
    task = asyncio.create_task(watchers.run())
    try:
        await asyncio.wait_for(cleared_one.wait(), 2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    cleared = sent[-1]
    assert (cleared.id, cleared.target) == ("b1", "ended")
    assert [(a.condition, a.target) for a in book.firing()] == [("source_lost", "gz")]


async def test_on_the_mixers_host_the_program_is_pulled_at_the_renditions_rate() -> None:
    """The stream names the ring once; each picture written is measured once, in order."""
    holder = RingHolder(slots=8)

    def write(value: int) -> None:
        image = np.full((36 * 3 // 2, 64), value, dtype=np.uint8)
        i420_shared_message(holder, image, pts_us=value * 100_000, sequence=value)

    class RingDirectory:
        async def frames(
            self, *_args: object, pull: bool = False, **_kwargs: object
        ) -> AsyncIterator[media_pb2.MediaFrame]:
            assert pull
            yield media_pb2.MediaFrame(ring=media_pb2.VideoRing(segment=holder.segment))
            await asyncio.Event().wait()  # no further message: every picture is pulled

    write(10)
    watcher = ProgramWatcher(
        "p",
        RingDirectory(),  # type: ignore[arg-type]
        ChannelCache(),
        AlertBook("mon-1", lambda _alert: None),
        media_pb2.Rendition(width=64, height=36, fps=10),
        Thresholds(),
    )
    seen: list[int] = []
    last_seen = asyncio.Event()
    measure = watcher.monitor.video

    def video(luma: np.ndarray, now: float) -> list[Change]:
        seen.append(int(luma[0, 0]))
        if seen[-1] == 20:
            last_seen.set()
        return measure(luma, now)

    watcher.monitor.video = video  # type: ignore[method-assign]
    task = asyncio.create_task(watcher.run())
    try:
        for value in range(11, 21):
            await asyncio.sleep(0.1)
            write(value)
        await asyncio.wait_for(last_seen.wait(), 3)
    finally:
        await cancel_and_wait([task])
        holder.close()
    # In order and never twice; a tick between two writes may miss one on a busy machine.
    assert seen == sorted(set(seen)) and len(seen) >= 8 and seen[0] <= 11, seen
    assert watcher.monitor.reading.width == 64


async def test_on_the_mixers_host_the_programs_sound_is_pulled_chunk_by_chunk() -> None:
    """The stream names the sound ring once; every chunk written is measured once, in order."""
    ring = SoundRing(slots=16)

    class SoundDirectory:
        async def frames(
            self, *_args: object, pull_sound: bool = False, **_kwargs: object
        ) -> AsyncIterator[media_pb2.MediaFrame]:
            assert pull_sound
            yield media_pb2.MediaFrame(sound_ring=media_pb2.SoundRing(segment=ring.name, first=1))
            await asyncio.Event().wait()  # no further message: the sound is pulled

    watcher = ProgramWatcher(
        "p",
        SoundDirectory(),  # type: ignore[arg-type]
        ChannelCache(),
        AlertBook("mon-1", lambda _alert: None),
        media_pb2.Rendition(width=64, height=36, fps=10, audio_sample_rate=48_000),
        Thresholds(),
    )
    heard: list[int] = []
    all_heard = asyncio.Event()
    measure = watcher.monitor.audio

    def audio(pcm: np.ndarray, now: float, sample_rate: int) -> list[Change]:
        heard.append(int(pcm[0, 0]))
        if len(heard) == 12:
            all_heard.set()
        return measure(pcm, now, sample_rate)

    watcher.monitor.audio = audio  # type: ignore[method-assign]
    task = asyncio.create_task(watcher.run())
    try:
        for n in range(1, 13):  # 40 ms chunks, three of them between two of the watcher's ticks
            ring.write(np.full((1920, 2), n, dtype=np.int16), 48_000, pts_us=n * 40_000)
            await asyncio.sleep(0.04)
        await asyncio.wait_for(all_heard.wait(), 3)
    finally:
        await cancel_and_wait([task])
        ring.close()
    assert heard == list(range(1, 13)) and watcher.sound.lost == 0
