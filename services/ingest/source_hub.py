"""One live source's side of the media plane: decoded frames in, its `fanout.Fanout` out
(subscribers are added to and removed from `hub.fanout`).

A source offers decoded frames on the event loop without waiting. `offer_video` puts a picture
in a small drop-oldest input (so a slow hub never backs up into aiortc's unbounded track queue)
that a worker takes, measures and publishes to the fan-out, scaling and writing in a worker
thread (PyAV releases the GIL). `offer_audio` measures and publishes a frame of sound at once
(microseconds of work, 50 times a second: a queue and a task's wake-up would cost more); it goes
out in messages of `AUDIO_MESSAGE_MS`. A subscriber on another host that asks for compression at a
given size and rate gets H.264 (ADR 0025; the mixer asks when BAYCAST_MIXER_SOURCE_LINK=h264).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import av
import structlog

from services.common import media
from services.common.fanout import Fanout
from services.common.media import DropOldestQueue, now_us
from services.ingest.capture_clock import CaptureClock
from services.ingest.measurements import Measurements

VIDEO_INPUT_FRAMES = 3
# Audio goes out in messages of at least 40 ms (two 20 ms Opus frames): every media-plane
# message costs the event loop its gRPC write whatever its size, and audio was half of them.
AUDIO_MESSAGE_MS = 40

log = structlog.get_logger("ingest.hub")


class SourceHub:
    """The media-plane side of one source (implements `source.FrameSink`)."""

    def __init__(
        self,
        source_id: str,
        *,
        queue_size: int,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        self.source_id = source_id
        self.measurements = Measurements()
        self.fanout = Fanout(
            f"source/{source_id}",
            queue_size,
            compress=True,
            audio_message_ms=AUDIO_MESSAGE_MS,
            on_drop=on_drop,
        )
        self._video_in: DropOldestQueue[tuple[av.VideoFrame, int]] = DropOldestQueue(
            VIDEO_INPUT_FRAMES
        )
        self._video_clock = CaptureClock()
        self._audio_clock = CaptureClock()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.first_video = asyncio.Event()

    # -- the source side -----------------------------------------------------------------------

    def offer_video(self, frame: av.VideoFrame) -> None:
        capture = self._video_clock.capture_time_us(frame.pts, frame.time_base)
        self._video_in.put((frame, capture))

    def offer_audio(self, frame: av.AudioFrame) -> None:
        if self._closed:
            return
        capture = self._audio_clock.capture_time_us(frame.pts, frame.time_base)
        self.measurements.on_audio(frame)
        self.fanout.publish_audio(frame, capture)

    @property
    def input_dropped(self) -> int:
        return self._video_in.dropped

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._video_loop(), name=f"hub-video-{self.source_id}"),
        ]

    async def close(self) -> None:
        """Stop the worker and end every subscription (their streams finish)."""
        self._closed = True
        self._video_in.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.fanout.close()

    # -- workers -------------------------------------------------------------------------------

    async def _video_loop(self) -> None:
        while True:
            item = await self._video_in.get()
            if item is None:
                return
            frame, capture = item
            self.measurements.on_video(frame)
            self.first_video.set()
            pts_us = (
                media.pts_us(frame.pts, frame.time_base)
                if frame.pts is not None and frame.time_base is not None
                else now_us()
            )
            due = self.fanout.due_video(pts_us)
            if due:
                rendered = await asyncio.to_thread(
                    self.fanout.render, frame, due, pts_us, capture, owned=True
                )
                self.fanout.deliver(rendered)
