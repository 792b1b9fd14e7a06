"""Source feeds: each (source, size, rate) a subscription holding the newest good frame.

On one host a feed pulls: ingest names the rendition's shared-memory ring once, and the frame
clock reads the newest frame of every ring at the start of each tick (`FeedSet.pull`); elsewhere
frames come as messages and the newest one is held as it arrives.

A box asks for its source at the box's size, so ingest scales once and a city travels at tile
size. Program and preview take the production's frame rate; a monitor (the multiview) may take
fewer frames a second, so a thumbnail watched once a second does not cost ingest a scaled frame
every frame. A feed nobody has looked at for a while is unsubscribed. Audio comes on one audio-only
subscription per source, straight into the audio mixer's buffers: on one host the frame clock
reads every chunk written since the tick before from the source's sound ring (ADR 0029),
elsewhere each message as it arrives.

A local source (a clip or still the mixer plays itself, clips.py) has one feed at the
production's size that its player fills every tick; boxes of other sizes scale it as they draw.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import structlog

from services.common.gen.baycast.v1 import media_pb2
from services.common.handles import HandleDirectory
from services.common.media import I420, PulledVideo, plane_rows, proto_to_pcm, video_planes
from services.common.rpc import ChannelCache
from services.common.shared_memory import FrameGone
from services.common.sound_ring import PulledSound
from services.mixer.pictures import Picture

log = structlog.get_logger("mixer.feeds")


def source_handle(source: str) -> str:
    return f"source/{source}"


@dataclass
class Held:
    picture: Picture
    received: float  # monotonic seconds
    capture_time_us: int


@dataclass
class VideoFeed:
    source: str
    width: int
    height: int
    fps: int
    created: float
    last_used: float
    latest: Held | None = None
    frames: int = 0
    lost: int = 0  # frames whose shared-memory slot was reused before they were read
    # On this host the feed pulls: its subscription names the ring, and `FeedSet.pull` reads the
    # newest frame from it at every tick (no message per frame).
    ring: PulledVideo = field(default_factory=PulledVideo, repr=False)
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def hold(self, frame: media_pb2.VideoFrame, now: float) -> bool:
        """Keep `frame` as the newest picture; False when it is gone or malformed."""
        try:
            picture = received_picture(frame)
        except FrameGone:
            self.lost += 1  # its shared slot was reused: a newer frame is on its way
            return False
        except ValueError:
            return False  # malformed: never let a bad frame reach the compositor
        self.latest = Held(picture, now, frame.capture_time_us)
        self.frames += 1
        return True


class FeedSet:
    """The video and audio subscriptions of one production."""

    def __init__(
        self,
        directory: HandleDirectory,
        channels: ChannelCache,
        fps: int,
        subscriber: str,
        idle_seconds: float,
        on_audio: Callable[[str, np.ndarray], None],
        clock: Callable[[], float] = time.monotonic,
        *,
        hold_s: float = 0.5,
        clear_s: float = 3.0,
        compression: media_pb2.Compression | None = None,
        on_sound_lost: Callable[[int], None] = lambda _chunks: None,
    ) -> None:
        self.directory = directory
        self.on_sound_lost = on_sound_lost
        self.compression = compression  # asked of sources on another host
        self.channels = channels
        self.fps = fps
        self.subscriber = subscriber
        self.idle_seconds = idle_seconds
        self.on_audio = on_audio
        self.clock = clock
        self.hold_s = hold_s
        self.clear_s = clear_s
        self.video: dict[tuple[str, int, int, int], VideoFeed] = {}
        self.last_seen: dict[str, float] = {}
        self.first_wanted: dict[str, float] = {}
        # Sources back after a loss, with the time since which they have delivered without a gap.
        self.returned: dict[str, float] = {}
        self.local: dict[str, VideoFeed] = {}
        self._audio_tasks: dict[str, asyncio.Task[None]] = {}
        self._sound: dict[str, PulledSound] = {}

    def get(self, source: str, width: int, height: int, fps: int = 0) -> VideoFeed:
        """The feed of `source` at this size and at least `fps` frames a second (the
        production's rate if 0), subscribing on first use. A feed of the same size at the full
        rate serves any rate."""
        fps = min(fps, self.fps) if fps else self.fps
        now = self.clock()
        local = self.local.get(source)
        if local is not None:
            local.last_used = now
            return local
        feed = self.video.get((source, width, height, self.fps))
        if feed is None:
            feed = self.video.get((source, width, height, fps))
        if feed is None:
            if not any(f.source == source for f in self.video.values()):
                # Nothing of this source is subscribed: its liveness starts over from now, so a
                # source not shown for a while is not taken for dead while it reconnects.
                self.last_seen.pop(source, None)
                self.returned.pop(source, None)
                self.first_wanted[source] = now
            feed = VideoFeed(source, width, height, fps, created=now, last_used=now)
            feed.task = asyncio.create_task(self._run_video(feed), name=f"feed-{source}")
            self.video[(source, width, height, fps)] = feed
        feed.last_used = now
        return feed

    def pull(self) -> None:
        """Take the newest frame of every feed that pulls from a ring, and the sound written
        since the tick before of every source that pulls it (once a tick)."""
        self._pull_sound()
        now = self.clock()
        for feed in self.video.values():
            try:
                frame = feed.ring.take()
            except FrameGone:
                feed.lost += 1
                continue
            except ValueError as exc:
                log.warning("ring_unreadable", source=feed.source, error=str(exc))
                feed.ring.follow("")
                continue
            if frame is not None and feed.hold(frame, now):
                self._seen(feed.source, now)

    def _pull_sound(self) -> None:
        for source, sound in self._sound.items():
            lost = sound.lost
            chunks = sound.chunks()
            if sound.lost != lost:
                self.on_sound_lost(sound.lost - lost)
            for chunk in chunks:
                if chunk.sample_rate == 48_000:
                    self.on_audio(source, chunk.samples)

    def age(self, source: str) -> float:
        """Seconds since `source` last delivered video (since first wanted, if never)."""
        now = self.clock()
        seen = self.last_seen.get(source)
        if seen is None:
            return now - self.first_wanted.get(source, now)
        return now - seen

    def clearing(self, source: str) -> bool:
        """True while `source`, back after a loss, has not yet delivered for `clear_s` unbroken.

        A gap longer than the hold time restarts the count, so a feed flapping on and off is kept
        off program (slate or backup) until it has been steady for the whole clear time.
        """
        since = self.returned.get(source)
        if since is None:
            return False
        now = self.clock()
        if now - self.last_seen.get(source, since) > self.hold_s:
            return True  # lost again; the next frame restarts the count
        if now - since >= self.clear_s:
            del self.returned[source]
            return False
        return True

    def _seen(self, source: str, now: float) -> None:
        previous = self.last_seen.get(source)
        if previous is not None and now - previous > self.hold_s:
            self.returned[source] = now  # back after a loss: the clear time starts over
        self.last_seen[source] = now

    def subscribed_elsewhere(self, source: str, width: int, height: int) -> bool:
        """True when `source` has a feed at a size other than `width`x`height` in use now."""
        now = self.clock()
        return any(
            f.source == source
            and (f.width, f.height) != (width, height)
            and now - f.last_used <= self.hold_s
            for f in self.video.values()
        )

    def any_frame(self, source: str) -> Held | None:
        """The newest frame of `source` at any size (for a box whose own size is on its way)."""
        local = self.local.get(source)
        if local is not None:
            return local.latest
        best: Held | None = None
        for feed in self.video.values():
            held = feed.latest
            if feed.source == source and held and (best is None or held.received > best.received):
                best = held
        return best

    def add_local(self, source: str) -> None:
        """`source` is played by the mixer itself: its frames come through `put_local`."""
        now = self.clock()
        self.local[source] = VideoFeed(source, 0, 0, self.fps, created=now, last_used=now)
        self.first_wanted[source] = now

    def put_local(self, source: str, picture: Picture, now: float, capture_time_us: int) -> None:
        feed = self.local[source]
        feed.latest = Held(picture, now, capture_time_us)
        feed.frames += 1
        self.last_seen[source] = now  # a clip is never "back after a loss": no clear time

    def clear_local(self, source: str) -> None:
        """Nothing to show of `source` now (its slate shows)."""
        self.local[source].latest = None

    def remove_local(self, source: str) -> None:
        self.local.pop(source, None)
        self.last_seen.pop(source, None)
        self.first_wanted.pop(source, None)

    def start_audio(self, sources: list[str]) -> None:
        for source in sources:
            if source in self.local:
                continue  # its player pushes its sound
            if source not in self._audio_tasks:
                self._audio_tasks[source] = asyncio.create_task(
                    self._run_audio(source), name=f"audio-{source}"
                )

    def stop_audio(self, sources: list[str]) -> None:
        """Stop following the audio of sources the production no longer has."""
        for source in sources:
            task = self._audio_tasks.pop(source, None)
            if task is not None:
                task.cancel()
            self._sound.pop(source, None)

    def reap(self) -> None:
        """Unsubscribe renditions nobody has used for `idle_seconds`."""
        now = self.clock()
        for key, feed in list(self.video.items()):
            if now - feed.last_used > self.idle_seconds and feed.task is not None:
                feed.task.cancel()
                del self.video[key]

    async def close(self) -> None:
        tasks = [f.task for f in self.video.values() if f.task] + list(self._audio_tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.video.clear()
        self._audio_tasks.clear()
        self._sound.clear()

    async def _run_video(self, feed: VideoFeed) -> None:
        rendition = media_pb2.Rendition(
            width=feed.width, height=feed.height, pixel_format=I420, fps=feed.fps, no_audio=True
        )
        frames = self.directory.frames(
            self.channels,
            source_handle(feed.source),
            rendition,
            subscriber=self.subscriber,
            pull=True,
            compression=self.compression,
        )
        async for message in frames:
            body = message.WhichOneof("body")
            if body == "ring":
                feed.ring.follow(message.ring.segment)
                continue
            if body != "video":
                continue
            frame = message.video
            feed.ring.follow("")  # frames by message: the producer is elsewhere
            if frame.pixel_format not in (I420, media_pb2.PIXEL_FORMAT_UNSPECIFIED):
                continue
            now = self.clock()
            if feed.hold(frame, now):
                self._seen(feed.source, now)

    async def _run_audio(self, source: str) -> None:
        rendition = media_pb2.Rendition(audio_sample_rate=48_000, audio_channels=2, no_video=True)
        frames = self.directory.frames(
            self.channels,
            source_handle(source),
            rendition,
            subscriber=f"{self.subscriber}/audio",
            pull_sound=True,
        )
        sound = self._sound[source] = PulledSound()
        async for message in frames:
            body = message.WhichOneof("body")
            if body == "sound_ring":
                sound.follow(message.sound_ring.segment, message.sound_ring.first)
                continue
            if body != "audio":
                continue
            sound.follow("")  # sound by message: the producer is elsewhere
            audio = message.audio
            if audio.sample_rate != 48_000 or audio.channels not in (1, 2):
                continue
            self.on_audio(source, proto_to_pcm(audio))


def received_picture(frame: media_pb2.VideoFrame) -> Picture:
    """A received I420 frame as a read-only picture over its planes' bytes: no copy of its own
    (a shared frame's planes are the reader's one copy out of the ring, `video_planes`).

    FrameGone when a shared frame's slot was reused, ValueError when the frame is malformed
    (odd or zero size, missing or short planes).
    """
    w, h = frame.width, frame.height
    if w % 2 or h % 2 or not w or not h or len(frame.planes) != 3:
        raise ValueError(f"not an I420 frame: {w}x{h}, {len(frame.planes)} planes")
    y, u, v = video_planes(frame)
    strides = [p.stride for p in frame.planes]
    return Picture.from_planes(
        w,
        h,
        plane_rows(y, strides[0], w, h),
        plane_rows(u, strides[1], w // 2, h // 2),
        plane_rows(v, strides[2], w // 2, h // 2),
    )
