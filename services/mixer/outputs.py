"""The mixer's handles on the media plane: program, clean, preview, multiview and mix-minus.

Each handle fans out to its subscribers through DropOldestQueues. A frame is scaled and turned
into a protobuf message once per distinct rendition and shared by everyone who asked for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import av
import grpc
import numpy as np

from services.common.gen.baycast.v1 import media_pb2, media_pb2_grpc
from services.common.media import DropOldestQueue, i420_message, now_us, pcm_message, queue_stream
from services.mixer import metrics
from services.mixer.pictures import Picture

RenditionKey = tuple[int, int, int, bool, bool, int]


def rendition_key(r: media_pb2.Rendition, width: int, height: int) -> RenditionKey:
    w, h = r.width or width, r.height or height
    if not r.width and r.height:
        w = max(2, round(width * r.height / height / 2) * 2)
    if not r.height and r.width:
        h = max(2, round(height * r.width / width / 2) * 2)
    return (w // 2 * 2, h // 2 * 2, r.fps, r.no_video, r.no_audio, r.audio_channels or 2)


@dataclass
class Subscriber:
    key: RenditionKey
    queue: DropOldestQueue[media_pb2.MediaFrame]
    sequence: int = 0


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

    def add(self, rendition: media_pb2.Rendition) -> Subscriber:
        sub = Subscriber(
            rendition_key(rendition, self.width, self.height), DropOldestQueue(self.queue_size)
        )
        self.subscribers.append(sub)
        metrics.SUBSCRIBERS.labels(self.production).inc()
        return sub

    def remove(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)
            metrics.SUBSCRIBERS.labels(self.production).dec()
            sub.queue.close()

    @property
    def wants_video(self) -> bool:
        return any(not s.key[3] for s in self.subscribers)

    def publish_video(
        self, picture: Picture, frame_index: int, pts_us: int, capture_time_us: int
    ) -> None:
        self.video_sequence += 1
        shared: dict[tuple[int, int], media_pb2.MediaFrame] = {}
        for sub in self.subscribers:
            w, h, fps, no_video, _no_audio, _ch = sub.key
            if no_video or (fps and fps < self.fps and not _decimate(frame_index, self.fps, fps)):
                continue
            message = shared.get((w, h))
            if message is None:
                image = (
                    picture.data
                    if (w, h) == (picture.width, picture.height)
                    else _scale(picture, w, h)
                )
                message = i420_message(
                    image,
                    pts_us=pts_us,
                    capture_time_us=capture_time_us,
                    sequence=self.video_sequence,
                )
                shared[(w, h)] = message
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


def _scale(picture: Picture, width: int, height: int) -> np.ndarray:
    frame = av.VideoFrame.from_ndarray(picture.data, format="yuv420p")
    return frame.reformat(width=width, height=height, interpolation="BILINEAR").to_ndarray()


class MixerMedia(media_pb2_grpc.MediaServicer):
    """Media.Subscribe for `prod/<prod>/...` handles of the productions this instance runs."""

    def __init__(self, find: Callable[[str], Output | None]) -> None:
        self.find = find

    async def Subscribe(
        self, request: media_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[media_pb2.MediaFrame]:
        output = self.find(request.handle)
        if output is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no handle {request.handle!r} here")
            return
        r = request.rendition
        if r.audio_sample_rate not in (0, 48_000) or r.audio_channels not in (0, 1, 2):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "audio must be 48000 Hz, 1 or 2 channels"
            )
            return
        if r.pixel_format not in (media_pb2.PIXEL_FORMAT_UNSPECIFIED, media_pb2.PIXEL_FORMAT_I420):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the mixer serves I420 only")
            return
        if r.width > 4096 or r.height > 4096 or r.width % 2 or r.height % 2:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "width/height: even, <= 4096")
            return
        sub = output.add(r)
        try:
            async for message in queue_stream(sub.queue):
                yield message
        finally:
            output.remove(sub)
