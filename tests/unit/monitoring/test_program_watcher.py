"""Parts of the program watcher: handle names, reading the luma plane, orphaned alerts."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest

from services.common.gen.baycast.v1 import media_pb2, monitoring_pb2
from services.common.media import i420_to_proto
from services.common.rpc import ChannelCache
from services.monitoring.alerts import AlertBook
from services.monitoring.confidence import Thresholds
from services.monitoring.program_watcher import (
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
