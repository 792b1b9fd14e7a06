"""The mixer's handles on the media plane: program, clean, preview, multiview and mix-minus.

Each handle fans out to its subscribers through DropOldestQueues. A frame is scaled and turned
into a protobuf message once per distinct rendition and shared by everyone who asked for it; a
subscriber on this host that pulls is told the rendition's ring once and reads it at its clock.
A subscriber on another host that asks for compression gets the rendition as H.264 packets,
encoded once for every such subscriber of that rendition and rate (ADR 0025).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import numpy as np

from services.common import errors, shared_memory
from services.common.gen.baycast.v1 import media_pb2
from services.common.media import (
    DropOldestQueue,
    Scaler,
    i420_message,
    i420_shared_message,
    now_us,
    pcm_message,
    ring_notice,
)
from services.common.media_service import Feed
from services.common.renditions import rendition_problem
from services.common.shared_memory import RING_SPARE_SLOTS, RingHolder
from services.common.video_link import LinkEncoder, compression_problem, link_kbps
from services.mixer import metrics
from services.mixer.pictures import Picture

RenditionKey = tuple[int, int, int, bool, bool, int]
LinkKey = tuple[int, int, int, int]  # width, height, fps, kbps of a compressed rendition


def rendition_key(r: media_pb2.Rendition, width: int, height: int) -> RenditionKey:
    """(width, height, fps, no_video, no_audio, channels) of a valid rendition (both sizes or
    neither: `renditions.rendition_problem`) of an output of `width`x`height`."""
    w, h = r.width or width, r.height or height
    return (w, h, r.fps, r.no_video, r.no_audio, r.audio_channels or 2)


@dataclass
class Subscriber:
    key: RenditionKey
    queue: DropOldestQueue[media_pb2.MediaFrame]
    shared: bool = False  # on this host: video planes through a shared-memory ring
    pull: bool = False  # shared, and reads the ring at its own clock: told the ring, not frames
    ring: str = ""  # the ring a pulling subscriber was last told
    link: LinkKey | None = None  # on another host, compressed: the encoder it takes packets of
    keyed: bool = False  # a compressed subscriber has had its first keyframe
    packets: int = 0  # packets sent to a compressed subscriber (its VideoPacket.sequence)


@dataclass
class Output:
    """One handle of one production."""

    name: str
    width: int
    height: int
    fps: int
    queue_size: int
    production: str
    subscribers: list[Subscriber] = field(default_factory=list)
    video_sequence: int = 0
    audio_sequence: int = 0
    # One shared-memory ring per picture size that same-host subscribers take.
    rings: dict[tuple[int, int], RingHolder] = field(default_factory=dict)
    scalers: dict[tuple[int, int], Scaler] = field(default_factory=dict)
    # One encoder per compressed rendition that subscribers on other hosts take.
    links: dict[LinkKey, LinkEncoder] = field(default_factory=dict)

    def add(
        self,
        rendition: media_pb2.Rendition,
        shared: bool = False,
        pull: bool = False,
        compression: media_pb2.Compression | None = None,
    ) -> Subscriber:
        sub = Subscriber(
            rendition_key(rendition, self.width, self.height),
            DropOldestQueue(self.queue_size),
            shared=shared,
            pull=shared and pull,
        )
        w, h, fps, no_video, _no_audio, _ch = sub.key
        if compression is not None and not shared and not no_video:
            sub.link = (w, h, min(fps, self.fps) if fps else self.fps, link_kbps(compression, w, h))
            link = self.links.get(sub.link)
            if link is not None:
                link.keyframe()  # the newcomer starts at the next picture
        self.subscribers.append(sub)
        metrics.SUBSCRIBERS.labels(self.production).inc()
        return sub

    def remove(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)
            metrics.SUBSCRIBERS.labels(self.production).dec()
            sub.queue.close()
        in_use = {s.key[:2] for s in self.subscribers if s.shared}
        for size in set(self.rings) - in_use:
            self.rings.pop(size).close()
        sizes = {s.key[:2] for s in self.subscribers}
        for size in set(self.scalers) - sizes:
            del self.scalers[size]
        links = {s.link for s in self.subscribers}
        for key in set(self.links) - links:
            self.links.pop(key).close()

    def close(self) -> None:
        """End every subscription and release the rings."""
        for sub in list(self.subscribers):
            self.remove(sub)

    def _scale(self, picture: Picture, width: int, height: int) -> np.ndarray:
        scaler = self.scalers.get((width, height))
        if scaler is None:
            # Area averaging: the subscribers' sizes are mostly smaller (a return at 360p of a
            # 1080p program), where it is both the cleanest filter and swscale's cheaper one.
            scaler = self.scalers[(width, height)] = Scaler("AREA")
        # swscale reads the picture where it lies (no copy into a frame of PyAV's own); only the
        # scaled, smaller picture is copied out.
        frame = av.VideoFrame.from_numpy_buffer(picture.data, format="yuv420p")
        image: np.ndarray = scaler(frame, width, height).to_ndarray()
        return image

    def video_fps(self) -> int:
        """The highest picture rate its subscribers take (the output's own when uncapped)."""
        rates = [
            min(fps, self.fps) if fps else self.fps
            for _w, _h, fps, no_video, _no_audio, _ch in (s.key for s in self.subscribers)
            if not no_video
        ]
        return max(rates, default=0)

    def wants_frame(self, frame_index: int) -> bool:
        """True when a subscriber takes this frame's picture (after its frame-rate cap), so a
        picture only a 1 fps subscriber watches is drawn once a second, not every frame."""
        return any(
            not no_video and (not fps or fps >= self.fps or _decimate(frame_index, self.fps, fps))
            for _w, _h, fps, no_video, _no_audio, _ch in (s.key for s in self.subscribers)
        )

    def publish_video(
        self, picture: Picture, frame_index: int, pts_us: int, capture_time_us: int
    ) -> None:
        self.video_sequence += 1
        made: dict[tuple[int, int, bool], media_pb2.MediaFrame] = {}
        images: dict[tuple[int, int], np.ndarray] = {}
        encoded: set[LinkKey] = set()
        for sub in self.subscribers:
            w, h, fps, no_video, _no_audio, _ch = sub.key
            if no_video or (fps and fps < self.fps and not _decimate(frame_index, self.fps, fps)):
                continue
            image = images.get((w, h))
            if image is None:
                image = (
                    picture.data
                    if (w, h) == (picture.width, picture.height)
                    else self._scale(picture, w, h)
                )
                images[(w, h)] = image
            if sub.link is not None:
                if sub.link not in encoded:
                    encoded.add(sub.link)
                    link = self._link(sub.link)
                    skipped = link.skipped
                    link.submit(image, pts_us, capture_time_us)
                    if link.skipped != skipped:
                        metrics.LINK_DROPPED_PICTURES.labels(self.production).inc()
                continue
            message = made.get((w, h, sub.shared))
            if message is None:
                if sub.shared:
                    ring = self.rings.setdefault(
                        (w, h), RingHolder(self.queue_size + RING_SPARE_SLOTS)
                    )
                    message = i420_shared_message(
                        ring,
                        image,
                        pts_us=pts_us,
                        capture_time_us=capture_time_us,
                        sequence=self.video_sequence,
                    )
                else:
                    message = i420_message(
                        image,
                        pts_us=pts_us,
                        capture_time_us=capture_time_us,
                        sequence=self.video_sequence,
                    )
                made[(w, h, sub.shared)] = message
            if sub.pull:
                notice = ring_notice(sub.ring, message)
                if notice is None:
                    continue
                message, sub.ring = notice, notice.ring.segment
            _put(sub, message, self.production)

    def _link(self, key: LinkKey) -> LinkEncoder:
        link = self.links.get(key)
        if link is None:
            w, h, fps, kbps = key
            loop = asyncio.get_running_loop()

            def deliver(packet: media_pb2.VideoPacket) -> None:  # in the encoder's thread
                with contextlib.suppress(RuntimeError):  # the loop closed under a last packet
                    loop.call_soon_threadsafe(self._send_packet, key, packet)

            link = self.links[key] = LinkEncoder(
                w, h, fps, kbps, deliver, name=f"{self.name}@{w}x{h}"
            )
        return link

    def _send_packet(self, key: LinkKey, packet: media_pb2.VideoPacket) -> None:
        """An encoded picture to every subscriber of its rendition, each with its own sequence;
        a subscriber that joined since the last keyframe waits for the next."""
        for sub in self.subscribers:
            if sub.link != key or not (sub.keyed or packet.keyframe):
                continue
            sub.keyed = True
            message = media_pb2.MediaFrame()
            message.packet.CopyFrom(packet)
            message.packet.sequence = sub.packets
            sub.packets += 1
            _put(sub, message, self.production)

    def publish_audio(self, samples: np.ndarray, sample_rate: int, pts_us: int) -> None:
        self.audio_sequence += 1
        shared: dict[int, media_pb2.MediaFrame] = {}
        for sub in self.subscribers:
            channels = sub.key[5]
            if sub.key[4]:
                continue
            message = shared.get(channels)
            if message is None:
                data = samples
                if channels == 1 and samples.shape[1] == 2:
                    data = (samples.astype(np.int32).sum(axis=1) // 2).astype(np.int16)[:, None]
                message = pcm_message(
                    data,
                    sample_rate,
                    pts_us=pts_us,
                    capture_time_us=now_us(),
                    sequence=self.audio_sequence,
                )
                shared[channels] = message
            _put(sub, message, self.production)


def _decimate(frame_index: int, fps: int, wanted: int) -> bool:
    """True for the frames to keep when a subscriber wants fewer frames per second."""
    return frame_index * wanted // fps != (frame_index - 1) * wanted // fps


def _put(sub: Subscriber, message: media_pb2.MediaFrame, production: str) -> None:
    before = sub.queue.dropped
    sub.queue.put(message)
    if sub.queue.dropped != before:
        metrics.SUBSCRIBER_DROPS.labels(production).inc()


class OutputFeeds:
    """Feeds of `prod/<prod>/...` handles of the productions this instance runs."""

    def __init__(self, find: Callable[[str], Output | None]) -> None:
        self.find = find

    async def open(self, request: media_pb2.SubscribeRequest) -> Feed:
        output = self.find(request.handle)
        if output is None:
            raise errors.NotFound(f"no handle {request.handle!r} here")
        r = request.rendition
        problem = rendition_problem(r, (media_pb2.PIXEL_FORMAT_I420,))
        if not problem and r.audio_sample_rate not in (0, 48_000):
            problem = "the mixer's sound is 48000 Hz only"
        compression = request.compression if request.HasField("compression") else None
        if not problem and compression is not None:
            problem = compression_problem(compression)
        if problem:
            raise errors.InvalidArgument(problem)
        sub = output.add(
            r, shared=shared_memory.accepts(request), pull=request.pull, compression=compression
        )
        return Feed(sub.queue, lambda: output.remove(sub))
