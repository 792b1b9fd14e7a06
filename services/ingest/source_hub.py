"""One live source's side of the media plane: decoded frames in, its `fanout.Fanout` out
(subscribers are added to and removed from `hub.fanout`).

A source offers decoded frames on the event loop without waiting. `offer_video` measures a
picture and has it scaled and written for the renditions due in a worker thread (PyAV releases
the GIL), one picture at a time: pictures offered meanwhile wait in a small drop-oldest input
(so a slow hub never backs up into the source), and the thread's completion delivers the
picture and takes the next (no task wakes up for a picture). `offer_audio` measures and
publishes a frame of sound at once (microseconds of work, 50 times a second: a queue and a
task's wake-up would cost more; decoded Opus is read in place, once for both); it goes out in
messages of `AUDIO_MESSAGE_MS`. A subscriber on another host that asks for compression at a
given size and rate gets H.264 (ADR 0025; the mixer asks when BAYCAST_MIXER_SOURCE_LINK=h264).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import Callable

import av
import structlog

from services.common import media
from services.common.fanout import Fanout, Rendered, packed_pcm
from services.common.media import now_us
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
        # Pictures offered while one is scaled (with their capture times): the newest
        # VIDEO_INPUT_FRAMES wait.
        self._video_in: deque[tuple[av.VideoFrame, int]] = deque()
        self._input_dropped = 0
        self._rendering: asyncio.Future[Rendered] | None = None
        self._video_clock = CaptureClock()
        self._audio_clock = CaptureClock()
        self._started = False
        self._closed = False
        self.first_video = asyncio.Event()

    # -- the source side -----------------------------------------------------------------------

    def offer_video(self, frame: av.VideoFrame) -> None:
        if self._closed:
            return
        capture = self._video_clock.capture_time_us(frame.pts, frame.time_base)
        if self._rendering is None and self._started:
            self._take(frame, capture)
            return
        if len(self._video_in) >= VIDEO_INPUT_FRAMES:
            self._video_in.popleft()
            self._input_dropped += 1
        self._video_in.append((frame, capture))

    def offer_audio(self, frame: av.AudioFrame) -> None:
        if self._closed:
            return
        pts, time_base = frame.pts, frame.time_base
        pcm = packed_pcm(frame)
        if pcm is None or pts is None or time_base is None:
            capture = self._audio_clock.capture_time_us(pts, time_base)
            self.measurements.on_audio(frame.to_ndarray() if pcm is None else pcm)
            self.fanout.publish_audio(frame, capture)
            return
        # Decoded Opus: its samples read in place once, for the level and for every subscriber
        # that takes its format.
        pts_us = media.pts_us(pts, time_base)
        capture = self._audio_clock.capture_time_of_us(pts_us)
        self.measurements.on_audio(pcm)
        self.fanout.publish_pcm(pcm, frame.sample_rate, pts_us, capture, frame=frame)

    @property
    def input_dropped(self) -> int:
        return self._input_dropped

    def start(self) -> None:
        """Take pictures from now (the ones offered before wait in the input)."""
        self._started = True
        self._take_next()

    async def close(self) -> None:
        """Stop taking pictures and end every subscription (their streams finish), once the
        picture being scaled is written."""
        self._closed = True
        self._video_in.clear()
        if self._rendering is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._rendering)
        self.fanout.close()

    # -- pictures ------------------------------------------------------------------------------

    def _take(self, frame: av.VideoFrame, capture: int) -> None:
        """Measure a picture and start scaling it for the renditions due (on the loop)."""
        self.measurements.on_video(frame)
        self.first_video.set()
        pts_us = (
            media.pts_us(frame.pts, frame.time_base)
            if frame.pts is not None and frame.time_base is not None
            else now_us()
        )
        due = self.fanout.due_video(pts_us)
        if not due:
            return
        render = functools.partial(self.fanout.render, frame, due, pts_us, capture, owned=True)
        self._rendering = asyncio.get_running_loop().run_in_executor(None, render)
        self._rendering.add_done_callback(self._rendered)

    def _rendered(self, future: asyncio.Future[Rendered]) -> None:
        self._rendering = None
        if self._closed or future.cancelled():
            return
        error = future.exception()
        if error is not None:
            log.error("render_failed", source=self.source_id, error=repr(error))
        else:
            self.fanout.deliver(future.result())
        self._take_next()

    def _take_next(self) -> None:
        """Take waiting pictures until one is being scaled or none is left."""
        while self._video_in and self._rendering is None and not self._closed:
            self._take(*self._video_in.popleft())
