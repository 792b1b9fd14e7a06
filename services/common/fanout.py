"""One handle's fan-out, the same for every producer of pictures and sound (ingest's sources, the
mixer's outputs): one rendition cache, one way to reach each kind of subscriber.

A subscription asks for a rendition (`Rendition`: size, pixel format, picture rate cap, sample
rate, channels). Subscriptions that ask for the same one share it: a picture is scaled once per
distinct size (swscale contexts kept from frame to frame), sound resampled once per distinct
format, and the same message object goes to every subscriber of the rendition. How a subscriber
gets it depends on where it is (ADR 0010, 0024, 0025):

- inline: the planes in the message (another host, or a consumer that cannot map memory);
- shared: a reference into the rendition's shared-memory ring, written once for all of them;
- pull: told the ring once (and again when it is remade); it reads the newest slot at its clock;
- sound pulled: told the rendition's sound ring once; it reads every chunk since its last look
  (ADR 0029);
- compressed: H.264 packets of one `LinkEncoder` per (size, rate cap, bit rate), each
  subscriber's packets numbered on their own; a newcomer starts at the keyframe made for it.

Every subscriber reads through its own `DropOldestQueue`: one that stops reading loses its
oldest messages (reported to `on_drop`), and nobody waits for it.

A producer calls `publish_video` in its event loop, or splits it where scaling should leave the
loop: `due_video` (the loop: which renditions take this picture), `render` (any thread: scale,
write rings, feed encoders) and `deliver` (the loop: queue the messages). Rate caps follow the
pictures' timestamps, so a producer with a steady clock and one with a jittery source cap alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from services.common.gen.baycast.v1 import media_pb2
from services.common.media import (
    DropOldestQueue,
    Scaler,
    av_planes,
    av_video_message,
    copy_i420,
    pcm_message,
    pts_us,
    ring_notice,
    shared_video_message,
)
from services.common.shared_memory import RING_SPARE_SLOTS, FrameGone, RingHolder
from services.common.sound_ring import SoundRing
from services.common.video_link import LinkEncoder, link_kbps

DEFAULT_SAMPLE_RATE = 48_000
DEFAULT_CHANNELS = 2
# swscale's area averaging: for the mixer's tile sizes it costs 0.99 ms (720p -> 384x216) and
# 1.6 ms (-> 1536x864) where the default bilinear costs 1.27 and 3.2 ms (`make bench`, whole
# path), and a downscale by averaging aliases less.
SCALE_INTERPOLATION = "AREA"
# A picture this far before a capped rendition's next due time means the producer's clock jumped
# (a reconnect, a wrap, a damaged timestamp): the cap counts again from that picture.
PTS_JUMP_US = 1_000_000
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


@dataclass(frozen=True)
class VideoKey:
    width: int  # 0: the picture's own
    height: int
    pixel_format: str
    fps: int  # 0: every picture


@dataclass(frozen=True)
class AudioKey:
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class LinkKey:
    """A compressed rendition: its size, picture rate and bit rate."""

    width: int
    height: int
    fps: int
    kbps: int


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
    pull_sound: bool = False  # shared, and reads its sound from the rendition's sound ring
    sound_ring: str = ""  # the sound ring it was last told
    link: LinkKey | None = None  # on another host, compressed: the encoder it takes packets of
    keyed: bool = False  # a compressed subscriber has had its first keyframe
    packets: int = 0  # packets sent to a compressed subscriber (its VideoPacket.sequence)
    messages: int = 0  # messages handed to its stream (keepalives aside)

    @property
    def dropped(self) -> int:
        return self.queue.dropped


@dataclass(eq=False)
class _VideoRendition:
    key: VideoKey
    subscribers: list[Subscription] = field(default_factory=list)
    scaler: Scaler = field(default_factory=lambda: Scaler(SCALE_INTERPOLATION))
    ring: RingHolder | None = None
    next_due_us: int = 0
    sequence: int = 0

    def wants(self) -> tuple[bool, bool, set[LinkKey]]:
        """(inline, shared, links): what its subscribers take."""
        raw = [s for s in self.subscribers if s.link is None]
        return (
            any(not s.shared for s in raw),
            any(s.shared for s in raw),
            {s.link for s in self.subscribers if s.link is not None},
        )

    def due(self, pts_us: int) -> bool:
        if self.next_due_us - pts_us > PTS_JUMP_US:
            self.next_due_us = 0
        return not self.key.fps or pts_us >= self.next_due_us


@dataclass(eq=False)
class Due:
    """A rendition that takes a picture, and what to make of it (read in a worker thread)."""

    rendition: _VideoRendition
    sequence: int
    inline: bool
    ring: RingHolder | None
    links: list[LinkEncoder]


Rendered = list[tuple[Due, media_pb2.MediaFrame | None, media_pb2.MediaFrame | None]]


@dataclass(frozen=True)
class _Chunk:
    samples: np.ndarray  # int16, (samples, channels)
    pts_us: int
    capture_us: int
    sequence: int


@dataclass(eq=False)
class _AudioRendition:
    key: AudioKey
    resampler: av.AudioResampler
    subscribers: list[Subscription] = field(default_factory=list)
    ring: SoundRing | None = None  # while a subscriber pulls its sound
    sequence: int = 0
    # Resampled samples not sent yet, gathered into messages of at least `message_ms`.
    pending: list[np.ndarray] = field(default_factory=list)
    pending_samples: int = 0
    pending_pts_us: int = 0
    pending_capture_us: int = 0

    def matches(self, sample_rate: int, channels: int) -> bool:
        """True when sound of this rate and channel count needs no resampling."""
        return self.key.sample_rate == sample_rate and self.key.channels == channels

    def take(self, frame: av.AudioFrame, capture_us: int, message_ms: int) -> _Chunk | None:
        """Resample `frame`; a chunk once `message_ms` of sound has gathered."""
        for out in self.resampler.resample(frame):
            pts = (
                pts_us(out.pts, out.time_base)
                if out.pts is not None and out.time_base is not None
                else capture_us
            )
            self._add(out.to_ndarray().reshape(-1, self.key.channels), pts, capture_us)
        return self._chunk(message_ms)

    def gather(
        self, samples: np.ndarray, pts: int, capture_us: int, message_ms: int
    ) -> _Chunk | None:
        """Samples already in this rendition's format (int16, (n, channels), unchanged after the
        call); a chunk once `message_ms` of sound has gathered."""
        self._add(samples, pts, capture_us)
        return self._chunk(message_ms)

    def _add(self, samples: np.ndarray, pts: int, capture_us: int) -> None:
        if not self.pending:
            self.pending_pts_us = pts
            self.pending_capture_us = capture_us
        self.pending.append(samples)
        self.pending_samples += samples.shape[0]

    def _chunk(self, message_ms: int) -> _Chunk | None:
        if not self.pending or self.pending_samples * 1000 < message_ms * self.key.sample_rate:
            return None
        self.sequence += 1
        samples = self.pending[0] if len(self.pending) == 1 else np.concatenate(self.pending)
        self.pending.clear()
        self.pending_samples = 0
        return _Chunk(samples, self.pending_pts_us, self.pending_capture_us, self.sequence)

    def publish(
        self, chunk: _Chunk, put: Callable[[Subscription, media_pb2.MediaFrame], None]
    ) -> None:
        """`chunk` into the sound ring once if a subscriber pulls it (told the ring when it is
        new to them), and as one message to every other subscriber."""
        message = ring = None
        first = 0
        for sub in self.subscribers:
            if sub.pull_sound:
                if ring is None:
                    ring = self.ring = self.ring or SoundRing()
                    first = ring.stamp + 1
                    ring.write(
                        chunk.samples,
                        self.key.sample_rate,
                        pts_us=chunk.pts_us,
                        capture_time_us=chunk.capture_us,
                        sequence=chunk.sequence,
                    )
                if sub.sound_ring != ring.name:
                    sub.sound_ring = ring.name
                    told = media_pb2.SoundRing(segment=ring.name, first=first)
                    put(sub, media_pb2.MediaFrame(sound_ring=told))
                continue
            if message is None:
                message = pcm_message(
                    chunk.samples,
                    self.key.sample_rate,
                    pts_us=chunk.pts_us,
                    capture_time_us=chunk.capture_us,
                    sequence=chunk.sequence,
                )
            put(sub, message)

    def let_go_of_ring(self) -> None:
        """Close the sound ring when nobody pulls it any more."""
        if self.ring is not None and not any(s.pull_sound for s in self.subscribers):
            self.ring.close()
            self.ring = None


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


def scaled(frame: av.VideoFrame, key: VideoKey, scaler: Scaler) -> av.VideoFrame:
    """`frame` at `key`'s size and pixel format (itself if it already is)."""
    return scaler(frame, key.width or frame.width, key.height or frame.height, key.pixel_format)


def video_messages(
    picture: av.VideoFrame,
    pts_us: int,
    capture_us: int,
    sequence: int,
    *,
    inline: bool = True,
    ring: RingHolder | None = None,
) -> tuple[media_pb2.MediaFrame | None, media_pb2.MediaFrame | None]:
    """A rendered picture's (inline, shared) messages: the inline one if asked, the shared one
    when given a ring to write it into."""
    inline_message = shared = None
    if inline:
        inline_message = av_video_message(
            picture, pts_us=pts_us, capture_time_us=capture_us, sequence=sequence
        )
    if ring is not None:
        with contextlib.suppress(FrameGone):  # its ring closed under us: nobody to take it
            shared = shared_video_message(
                ring,
                av_planes(picture),
                width=picture.width,
                height=picture.height,
                pixel_format=PIXEL_FORMAT_CODES[picture.format.name],
                pts_us=pts_us,
                capture_time_us=capture_us,
                sequence=sequence,
            )
    return inline_message, shared


def packed_pcm(frame: av.AudioFrame) -> np.ndarray | None:
    """A packed int16 frame's samples, shape (n, channels), read where they lie (no copy); None
    for other sample formats. Decoded Opus is packed int16."""
    if frame.format.name != "s16":
        return None
    channels = frame.layout.nb_channels
    samples = np.frombuffer(memoryview(frame.planes[0]), dtype=np.int16)
    return samples[: frame.samples * channels].reshape(-1, channels)


def pcm_frame(samples: np.ndarray, sample_rate: int, pts_us: int) -> av.AudioFrame:
    """Interleaved int16 samples (shape (n, channels)) as an audio frame for `publish_audio`."""
    layout = "stereo" if samples.shape[1] == 2 else "mono"
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout=layout)
    frame.sample_rate = sample_rate
    frame.pts = pts_us * sample_rate // 1_000_000
    frame.time_base = Fraction(1, sample_rate)
    return frame


class Fanout:
    """The subscribers of one handle.

    `size` and `fps`: the producer's picture when it is fixed (the mixer's outputs); a rendition
    that names no size takes it, and a cap at or above `fps` is no cap. `compress`: subscribers
    on other hosts may ask for H.264 (`add(compression=...)`) for an I420 rendition whose size and
    rate are known; otherwise they get raw pictures.
    `audio_message_ms`: sound goes out in messages of at least this much (0: one message per
    `publish_audio`).
    """

    def __init__(
        self,
        name: str,
        queue_size: int,
        *,
        size: tuple[int, int] | None = None,
        fps: int = 0,
        compress: bool = False,
        audio_message_ms: int = 0,
        on_drop: Callable[[str, int], None] | None = None,
        on_link_skip: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.queue_size = queue_size
        self.size, self.fps, self.compress = size, fps, compress
        self.audio_message_ms = audio_message_ms
        self._on_drop = on_drop or (lambda _subscriber, _n: None)
        self._on_link_skip = on_link_skip or (lambda: None)
        self._video: dict[VideoKey, _VideoRendition] = {}
        self._audio: dict[AudioKey, _AudioRendition] = {}
        self._links: dict[LinkKey, LinkEncoder] = {}
        self.closed = False

    # -- subscribers ---------------------------------------------------------------------------

    def add(
        self,
        rendition: media_pb2.Rendition,
        subscriber: str = "",
        *,
        shared: bool = False,
        pull: bool = False,
        pull_sound: bool = False,
        compression: media_pb2.Compression | None = None,
    ) -> Subscription:
        """A new subscription (in the event loop). The caller has validated the request
        (`renditions.rendition_problem`, `video_link.compression_problem`)."""
        sub = Subscription(
            subscriber=subscriber,
            video=None if rendition.no_video else self._video_key(rendition),
            audio=None if rendition.no_audio else audio_key(rendition),
            queue=DropOldestQueue(self.queue_size),
            shared=shared,
            pull=shared and pull,
            pull_sound=shared and pull_sound,
        )
        if self.closed:
            sub.queue.close()
            return sub
        if sub.video is not None:
            video = self._video.get(sub.video)
            if video is None:
                video = self._video[sub.video] = _VideoRendition(sub.video)
            video.subscribers.append(sub)
            if compression is not None and self.compress and not shared and self._sized(sub.video):
                sub.link = self._open_link(sub.video, compression)
        if sub.audio is not None:
            audio = self._audio.get(sub.audio)
            if audio is None:
                layout = "stereo" if sub.audio.channels == 2 else "mono"
                resampler = av.AudioResampler(
                    format="s16", layout=layout, rate=sub.audio.sample_rate
                )
                audio = self._audio[sub.audio] = _AudioRendition(sub.audio, resampler)
            audio.subscribers.append(sub)
        return sub

    def remove(self, sub: Subscription) -> None:
        """Forget `sub` and end its stream; a rendition, ring or encoder nobody takes goes."""
        sub.queue.close()
        video = self._video.get(sub.video) if sub.video is not None else None
        if video is not None:
            with contextlib.suppress(ValueError):
                video.subscribers.remove(sub)
            if not video.subscribers:
                del self._video[video.key]
            if video.ring is not None and not video.wants()[1]:
                video.ring.close()  # a worker thread writing now finishes first (its lock)
                video.ring = None
        audio = self._audio.get(sub.audio) if sub.audio is not None else None
        if audio is not None:
            with contextlib.suppress(ValueError):
                audio.subscribers.remove(sub)
            audio.let_go_of_ring()
            if not audio.subscribers:
                del self._audio[audio.key]
        links = {s.link for r in self._video.values() for s in r.subscribers}
        for key in set(self._links) - links:
            self._links.pop(key).close()

    def close(self) -> None:
        """End every subscription and release the rings and encoders."""
        self.closed = True
        for sub in self.subscriptions():
            self.remove(sub)

    def subscriptions(self) -> list[Subscription]:
        subs = {id(s): s for r in self._video.values() for s in r.subscribers}
        subs.update({id(s): s for r in self._audio.values() for s in r.subscribers})
        return list(subs.values())

    @property
    def encoders(self) -> dict[LinkKey, LinkEncoder]:
        """The compressed renditions' encoders."""
        return dict(self._links)

    @property
    def video_renditions(self) -> int:
        return len(self._video)

    @property
    def audio_renditions(self) -> int:
        return len(self._audio)

    def video_fps(self) -> int:
        """The highest picture rate its subscribers take (the producer's own when uncapped)."""
        return max((k.fps or self.fps for k in self._video), default=0)

    def wants_video(self, pts_us: int) -> bool:
        """Whether a subscriber takes a picture of `pts_us` (after its rate cap), so that a
        picture only a 1 fps subscriber watches is drawn once a second."""
        return any(r.due(pts_us) for r in self._video.values())

    def _video_key(self, r: media_pb2.Rendition) -> VideoKey:
        key = video_key(r)
        if self.size is not None and not key.width:
            key = VideoKey(*self.size, key.pixel_format, key.fps)
        if self.fps and key.fps >= self.fps:
            key = VideoKey(key.width, key.height, key.pixel_format, 0)  # every picture
        return key

    def _sized(self, key: VideoKey) -> bool:
        """Whether a rendition's size and rate are known before its first picture (an encoder
        needs both; a rendition "at the source's own size" of a producer whose size varies is
        served raw)."""
        return bool(key.width and (key.fps or self.fps) and key.pixel_format == "yuv420p")

    def _open_link(self, key: VideoKey, compression: media_pb2.Compression) -> LinkKey:
        link = LinkKey(
            key.width,
            key.height,
            key.fps or self.fps,
            link_kbps(compression, key.width, key.height),
        )
        encoder = self._links.get(link)
        if encoder is not None:
            encoder.keyframe()  # the newcomer starts at the next picture
            return link
        loop = asyncio.get_running_loop()

        def deliver(packet: media_pb2.VideoPacket) -> None:  # in the encoder's thread
            with contextlib.suppress(RuntimeError):  # the loop closed under a last packet
                loop.call_soon_threadsafe(self._send_packet, link, packet)

        self._links[link] = LinkEncoder(
            link.width,
            link.height,
            link.fps,
            link.kbps,
            deliver,
            name=f"{self.name}@{link.width}x{link.height}",
        )
        return link

    # -- pictures ------------------------------------------------------------------------------

    def publish_video(
        self, frame: av.VideoFrame, pts_us: int, capture_us: int, *, owned: bool
    ) -> None:
        """A picture to every subscriber that takes it, all in the calling (event loop) thread.
        `owned`: the frame's memory stays as it is (False: the caller reuses it, so an encoder
        gets a copy)."""
        due = self.due_video(pts_us)
        if due:
            self.deliver(self.render(frame, due, pts_us, capture_us, owned=owned))

    def due_video(self, pts_us: int) -> list[Due]:
        """The renditions that take a picture of `pts_us`, their rate caps stepped on (the event
        loop)."""
        due: list[Due] = []
        for r in self._video.values():
            if not r.due(pts_us):
                continue
            if r.key.fps:
                interval = 1_000_000 // r.key.fps
                # Tolerate 10 % early pictures, so 25 fps asked of a 25 fps source keeps all.
                r.next_due_us = max(r.next_due_us + interval, pts_us + interval * 9 // 10)
            inline, shared, links = r.wants()
            if shared and (r.ring is None or r.ring.closed):
                r.ring = RingHolder(self.queue_size + RING_SPARE_SLOTS)
            r.sequence += 1
            encoders = [self._links[k] for k in links if k in self._links]
            due.append(Due(r, r.sequence, inline, r.ring if shared else None, encoders))
        return due

    def render(
        self, frame: av.VideoFrame, due: list[Due], pts_us: int, capture_us: int, *, owned: bool
    ) -> Rendered:
        """Scale `frame` once per distinct size, write the rings, feed the encoders: the
        messages for `deliver`. Any thread, one call at a time."""
        out: Rendered = []
        pictures: dict[tuple[int, int, str], av.VideoFrame] = {}
        for d in due:
            key = d.rendition.key
            size = (key.width or frame.width, key.height or frame.height, key.pixel_format)
            picture = pictures.get(size)
            if picture is None:
                picture = pictures[size] = scaled(frame, key, d.rendition.scaler)
            inline, shared = video_messages(
                picture, pts_us, capture_us, d.sequence, inline=d.inline, ring=d.ring
            )
            if d.links:
                if picture is frame and not owned:
                    picture = pictures[size] = copy_i420(picture)
                for encoder in d.links:
                    skipped = encoder.skipped
                    encoder.submit(picture, pts_us, capture_us)
                    if encoder.skipped != skipped:
                        self._on_link_skip()
            out.append((d, inline, shared))
        return out

    def deliver(self, rendered: Rendered) -> None:
        """Queue rendered pictures for their subscribers (the event loop)."""
        for d, inline, shared in rendered:
            for sub in d.rendition.subscribers:
                message = shared if sub.shared else inline
                if sub.link is not None or message is None:
                    continue
                if sub.pull:
                    notice = ring_notice(sub.ring, message)
                    if notice is None:
                        continue
                    message, sub.ring = notice, notice.ring.segment
                self._put(sub, message)

    def _send_packet(self, link: LinkKey, packet: media_pb2.VideoPacket) -> None:
        """An encoded picture to every subscriber of its rendition, each with its own sequence;
        a subscriber that joined since the last keyframe waits for the next."""
        for r in self._video.values():
            for sub in r.subscribers:
                if sub.link != link or not (sub.keyed or packet.keyframe):
                    continue
                sub.keyed = True
                message = media_pb2.MediaFrame()
                message.packet.CopyFrom(packet)
                message.packet.sequence = sub.packets
                sub.packets += 1
                self._put(sub, message)

    # -- sound ---------------------------------------------------------------------------------

    def publish_audio(self, frame: av.AudioFrame, capture_us: int) -> None:
        """Sound to every subscriber, resampled once per distinct format (the event loop)."""
        pcm = packed_pcm(frame)
        if pcm is None or frame.pts is None or frame.time_base is None:
            for r in list(self._audio.values()):
                self._publish_chunk(r, r.take(frame, capture_us, self.audio_message_ms))
            return
        pts = pts_us(frame.pts, frame.time_base)
        self.publish_pcm(pcm, frame.sample_rate, pts, capture_us, frame=frame)

    def publish_pcm(
        self,
        samples: np.ndarray,
        sample_rate: int,
        pts: int,
        capture_us: int,
        *,
        frame: av.AudioFrame | None = None,
    ) -> None:
        """Interleaved int16 samples (shape (n, channels), unchanged after the call) to every
        subscriber: as they are where the format matches (most do), resampled from `frame` (or a
        frame made of them) where it does not."""
        for r in list(self._audio.values()):
            if r.matches(sample_rate, samples.shape[1]):
                chunk = r.gather(samples, pts, capture_us, self.audio_message_ms)
            else:
                frame = frame or pcm_frame(samples, sample_rate, pts)
                chunk = r.take(frame, capture_us, self.audio_message_ms)
            self._publish_chunk(r, chunk)

    def _publish_chunk(self, rendition: _AudioRendition, chunk: _Chunk | None) -> None:
        if chunk is not None:
            rendition.publish(chunk, self._put)

    def _put(self, sub: Subscription, message: media_pb2.MediaFrame) -> None:
        sub.messages += 1
        before = sub.queue.dropped
        sub.queue.put(message)
        if sub.queue.dropped != before:
            self._on_drop(sub.subscriber, sub.queue.dropped - before)
