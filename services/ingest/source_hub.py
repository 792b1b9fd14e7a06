"""One live source's fan-out: decoded frames in, one rendition per distinct request, many readers.

A source offers decoded frames without waiting (`offer_video`/`offer_audio` put them in small
drop-oldest inputs, so a slow hub never backs up into aiortc's unbounded track queue). A worker
per kind takes them, measures them, scales each frame once per distinct video rendition (in a
worker thread: PyAV releases the GIL) and resamples audio once per distinct audio format, and
hands the same encoded `MediaFrame` to every subscriber of that rendition: planes inline, or
for subscribers on this host a reference into the rendition's shared-memory ring (ADR 0010); a
subscriber that pulls is told the ring once and reads its newest frame at its own clock.
Audio goes out in messages of `AUDIO_MESSAGE_MS`. Each subscriber reads through its own
`DropOldestQueue`: one that stops reading loses its oldest frames (counted), and neither the hub
nor the other subscribers wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import numpy as np
import structlog

from services.common.gen.baycast.v1 import media_pb2
from services.common.media import (
    DropOldestQueue,
    Scaler,
    av_planes,
    av_video_message,
    now_us,
    pcm_message,
    ring_notice,
    shared_video_message,
)
from services.common.shared_memory import RING_SPARE_SLOTS, FrameGone, RingHolder
from services.ingest.capture_clock import CaptureClock
from services.ingest.measurements import Measurements

VIDEO_INPUT_FRAMES = 3
AUDIO_INPUT_FRAMES = 50  # one second of 20 ms frames
DEFAULT_SAMPLE_RATE = 48_000
DEFAULT_CHANNELS = 2
# swscale's area averaging: for the mixer's tile sizes it costs 0.99 ms (720p -> 384x216) and
# 1.6 ms (-> 1536x864) where the default bilinear costs 1.27 and 3.2 ms (`make bench`, whole
# path), and a downscale by averaging aliases less.
SCALE_INTERPOLATION = "AREA"
PTS_JUMP_US = 1_000_000
# Audio goes out in messages of at least 40 ms (two 20 ms Opus frames): every media-plane
# message costs the event loop its gRPC write whatever its size, and audio was half of them.
AUDIO_MESSAGE_MS = 40
PIXEL_FORMAT_CODES = {
    "yuv420p": media_pb2.PIXEL_FORMAT_I420,
    "rgba": media_pb2.PIXEL_FORMAT_RGBA,
    "rgb24": media_pb2.PIXEL_FORMAT_RGB24,
}
PIXEL_FORMATS = {
    media_pb2.PIXEL_FORMAT_UNSPECIFIED: "yuv420p",
    media_pb2.PIXEL_FORMAT_I420: "yuv420p",
    media_pb2.PIXEL_FORMAT_RGB24: "rgb24",
    media_pb2.PIXEL_FORMAT_RGBA: "rgba",
}

log = structlog.get_logger("ingest.hub")


@dataclass(frozen=True)
class VideoKey:
    width: int  # 0: the source's own
    height: int
    pixel_format: str
    fps: int  # 0: every frame


@dataclass(frozen=True)
class AudioKey:
    sample_rate: int
    channels: int


@dataclass(eq=False)
class Subscription:
    """One `Media.Subscribe` call: its queue and what it asked for."""

    subscriber: str
    video: VideoKey | None
    audio: AudioKey | None
    queue: DropOldestQueue[media_pb2.MediaFrame]
    shared: bool = False  # on this host: video planes through the rendition's shared ring
    pull: bool = False  # shared, and reads the ring at its own clock: told the ring, not frames
    ring: str = ""  # the ring a pulling subscriber was last told
    messages: int = 0  # messages handed to its stream (keepalives aside)

    @property
    def dropped(self) -> int:
        return self.queue.dropped


@dataclass(eq=False)
class _VideoRendition:
    key: VideoKey
    ring: RingHolder
    scaler: Scaler = field(default_factory=lambda: Scaler(SCALE_INTERPOLATION))
    subscribers: list[Subscription] = field(default_factory=list)
    next_due_us: int = 0
    sequence: int = 0

    @property
    def wants(self) -> tuple[bool, bool]:
        """(inline, shared): which kinds of message its subscribers take."""
        shared = [s.shared for s in self.subscribers]
        return (not all(shared), any(shared))


@dataclass(eq=False)
class _AudioRendition:
    key: AudioKey
    resampler: av.AudioResampler
    subscribers: list[Subscription] = field(default_factory=list)
    sequence: int = 0
    # Resampled samples not sent yet, gathered into messages of AUDIO_MESSAGE_MS.
    pending: list[np.ndarray] = field(default_factory=list)
    pending_samples: int = 0
    pending_pts_us: int = 0
    pending_capture_us: int = 0


def video_key(rendition: media_pb2.Rendition) -> VideoKey:
    return VideoKey(
        rendition.width,
        rendition.height,
        PIXEL_FORMATS.get(rendition.pixel_format, "yuv420p"),
        rendition.fps,
    )


def audio_key(rendition: media_pb2.Rendition) -> AudioKey:
    return AudioKey(
        rendition.audio_sample_rate or DEFAULT_SAMPLE_RATE,
        rendition.audio_channels or DEFAULT_CHANNELS,
    )


def render_video(
    frame: av.VideoFrame,
    key: VideoKey,
    scaler: Scaler,
    pts_us: int,
    capture_us: int,
    sequence: int,
    *,
    inline: bool = True,
    ring: RingHolder | None = None,
) -> tuple[media_pb2.MediaFrame | None, media_pb2.MediaFrame | None]:
    """Scale/convert `frame` to `key` with the rendition's `scaler` and make its (inline,
    shared) messages: the inline one if asked, the shared one when given a ring to write it
    into. Runs in a worker thread."""
    frame = scaler(frame, key.width or frame.width, key.height or frame.height, key.pixel_format)
    inline_message = shared = None
    if inline:
        inline_message = av_video_message(
            frame, pts_us=pts_us, capture_time_us=capture_us, sequence=sequence
        )
    if ring is not None:
        with contextlib.suppress(FrameGone):  # its ring closed under us: nobody to take it
            shared = shared_video_message(
                ring,
                av_planes(frame),
                width=frame.width,
                height=frame.height,
                pixel_format=PIXEL_FORMAT_CODES[frame.format.name],
                pts_us=pts_us,
                capture_time_us=capture_us,
                sequence=sequence,
            )
    return inline_message, shared


def render_all(
    frame: av.VideoFrame,
    due: list[tuple[_VideoRendition, tuple[bool, bool], int]],
    pts_us: int,
    capture_us: int,
) -> list[tuple[media_pb2.MediaFrame | None, media_pb2.MediaFrame | None]]:
    return [
        render_video(
            frame,
            r.key,
            r.scaler,
            pts_us,
            capture_us,
            seq,
            inline=wants[0],
            ring=r.ring if wants[1] else None,
        )
        for r, wants, seq in due
    ]


class SourceHub:
    """The fan-out of one source (implements `source.FrameSink`)."""

    def __init__(
        self,
        source_id: str,
        *,
        queue_size: int,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        self.source_id = source_id
        self.queue_size = queue_size
        self.measurements = Measurements()
        self._on_drop = on_drop or (lambda _subscriber, _n: None)
        self._video_in: DropOldestQueue[tuple[av.VideoFrame, int]] = DropOldestQueue(
            VIDEO_INPUT_FRAMES
        )
        self._audio_in: DropOldestQueue[tuple[av.AudioFrame, int]] = DropOldestQueue(
            AUDIO_INPUT_FRAMES
        )
        self._video_clock = CaptureClock()
        self._audio_clock = CaptureClock()
        self._video: dict[VideoKey, _VideoRendition] = {}
        self._audio: dict[AudioKey, _AudioRendition] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.first_video = asyncio.Event()
        self.closed = False

    # -- the source side -----------------------------------------------------------------------

    def offer_video(self, frame: av.VideoFrame) -> None:
        capture = self._video_clock.capture_time_us(frame.pts, frame.time_base)
        self._video_in.put((frame, capture))

    def offer_audio(self, frame: av.AudioFrame) -> None:
        capture = self._audio_clock.capture_time_us(frame.pts, frame.time_base)
        self._audio_in.put((frame, capture))

    @property
    def input_dropped(self) -> int:
        return self._video_in.dropped + self._audio_in.dropped

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._video_loop(), name=f"hub-video-{self.source_id}"),
            asyncio.create_task(self._audio_loop(), name=f"hub-audio-{self.source_id}"),
        ]

    async def close(self) -> None:
        """Stop the workers and end every subscription (their streams finish)."""
        self.closed = True
        self._video_in.close()
        self._audio_in.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in self.subscriptions():
            sub.queue.close()
        for rendition in self._video.values():
            rendition.ring.close()
        self._video.clear()
        self._audio.clear()

    # -- the subscriber side -------------------------------------------------------------------

    def subscribe(
        self,
        rendition: media_pb2.Rendition,
        subscriber: str = "",
        *,
        shared: bool = False,
        pull: bool = False,
    ) -> Subscription:
        sub = Subscription(
            subscriber=subscriber,
            video=None if rendition.no_video else video_key(rendition),
            audio=None if rendition.no_audio else audio_key(rendition),
            queue=DropOldestQueue(self.queue_size),
            shared=shared,
            pull=shared and pull,
        )
        if self.closed:
            sub.queue.close()
            return sub
        if sub.video is not None:
            video = self._video.get(sub.video)
            if video is None:
                video = _VideoRendition(sub.video, RingHolder(self.queue_size + RING_SPARE_SLOTS))
                self._video[sub.video] = video
            elif shared and video.ring.closed:  # its last same-host subscriber had left
                video.ring = RingHolder(self.queue_size + RING_SPARE_SLOTS)
            video.subscribers.append(sub)
        if sub.audio is not None:
            if sub.audio not in self._audio:
                layout = "stereo" if sub.audio.channels == 2 else "mono"
                self._audio[sub.audio] = _AudioRendition(
                    sub.audio,
                    av.AudioResampler(format="s16", layout=layout, rate=sub.audio.sample_rate),
                )
            self._audio[sub.audio].subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.queue.close()
        if sub.video is not None and sub.video in self._video:
            video = self._video[sub.video]
            with contextlib.suppress(ValueError):
                video.subscribers.remove(sub)
            if not video.subscribers:
                del self._video[sub.video]
            if not video.wants[1]:
                video.ring.close()  # a worker thread writing now finishes first (its lock)
        if sub.audio is not None and sub.audio in self._audio:
            audio = self._audio[sub.audio]
            with contextlib.suppress(ValueError):
                audio.subscribers.remove(sub)
            if not audio.subscribers:
                del self._audio[sub.audio]

    def subscriptions(self) -> list[Subscription]:
        subs = {id(s): s for r in self._video.values() for s in r.subscribers}
        subs.update({id(s): s for r in self._audio.values() for s in r.subscribers})
        return list(subs.values())

    @property
    def video_renditions(self) -> int:
        return len(self._video)

    @property
    def audio_renditions(self) -> int:
        return len(self._audio)

    def _deliver(self, subs: list[Subscription], frame: media_pb2.MediaFrame) -> None:
        for sub in subs:
            sub.messages += 1
            before = sub.queue.dropped
            sub.queue.put(frame)
            if sub.queue.dropped != before:
                self._on_drop(sub.subscriber, sub.queue.dropped - before)

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
                int(frame.pts * frame.time_base * 1_000_000)
                if frame.pts is not None and frame.time_base is not None
                else now_us()
            )
            due: list[tuple[_VideoRendition, tuple[bool, bool], int]] = []
            for rendition in list(self._video.values()):
                if rendition.next_due_us - pts_us > PTS_JUMP_US:
                    # The source's clock jumped (a reconnect, a wrap, a damaged timestamp): start
                    # counting again from this frame instead of starving the rendition.
                    rendition.next_due_us = 0
                if rendition.key.fps and pts_us < rendition.next_due_us:
                    continue
                if rendition.key.fps:
                    interval = 1_000_000 // rendition.key.fps
                    # Tolerate 10 % early frames, so 25 fps asked of a 25 fps source keeps all.
                    rendition.next_due_us = max(
                        rendition.next_due_us + interval, pts_us + interval * 9 // 10
                    )
                rendition.sequence += 1
                due.append((rendition, rendition.wants, rendition.sequence))
            if not due:
                continue
            outputs = await asyncio.to_thread(render_all, frame, due, pts_us, capture)
            for (rendition, _, _), (inline, shared) in zip(due, outputs, strict=True):
                for sub in rendition.subscribers:
                    message = shared if sub.shared else inline
                    if message is None:
                        continue
                    if sub.pull:
                        notice = ring_notice(sub.ring, message)
                        if notice is None:
                            continue
                        message, sub.ring = notice, notice.ring.segment
                    self._deliver([sub], message)

    async def _audio_loop(self) -> None:
        while True:
            item = await self._audio_in.get()
            if item is None:
                return
            frame, capture = item
            self.measurements.on_audio(frame)
            for rendition in list(self._audio.values()):
                for out in rendition.resampler.resample(frame):
                    pcm = out.to_ndarray().reshape(-1, rendition.key.channels)
                    if not rendition.pending:
                        rendition.pending_pts_us = (
                            int(out.pts * out.time_base * 1_000_000)
                            if out.pts is not None and out.time_base is not None
                            else capture
                        )
                        rendition.pending_capture_us = capture
                    rendition.pending.append(pcm)
                    rendition.pending_samples += pcm.shape[0]
                if rendition.pending_samples * 1000 >= AUDIO_MESSAGE_MS * rendition.key.sample_rate:
                    self._send_audio(rendition)

    def _send_audio(self, rendition: _AudioRendition) -> None:
        rendition.sequence += 1
        samples = np.concatenate(rendition.pending)
        rendition.pending.clear()
        rendition.pending_samples = 0
        self._deliver(
            rendition.subscribers,
            pcm_message(
                samples,
                rendition.key.sample_rate,
                pts_us=rendition.pending_pts_us,
                capture_time_us=rendition.pending_capture_us,
                sequence=rendition.sequence,
            ),
        )
