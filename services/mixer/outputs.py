"""The mixer's handles on the media plane: program, clean, preview, multiview and mix-minus.

Each handle is a `fanout.Fanout` at the production's size and rate: a picture is scaled and
turned into a message once per distinct rendition and shared by everyone who asked for it; a
subscriber on this host that pulls is told the rendition's ring once and reads it at its clock;
a subscriber on another host that asks for compression gets H.264 packets (ADR 0025).
"""

from __future__ import annotations

from collections.abc import Callable

import av
import numpy as np

from services.common import errors, shared_memory
from services.common.fanout import Fanout, Subscription
from services.common.gen.baycast.v1 import media_pb2
from services.common.media import now_us
from services.common.media_service import Feed
from services.common.renditions import rendition_problem
from services.common.video_link import compression_problem
from services.mixer import metrics
from services.mixer.pictures import Picture


class Output:
    """One handle of one production."""

    def __init__(
        self, name: str, width: int, height: int, fps: int, queue_size: int, production: str
    ) -> None:
        self.name = name
        self.width, self.height, self.fps = width, height, fps
        self.production = production
        drops = metrics.SUBSCRIBER_DROPS.labels(production)
        skips = metrics.LINK_DROPPED_PICTURES.labels(production)
        self.fanout = Fanout(
            name,
            queue_size,
            size=(width, height),
            fps=fps,
            compress=True,
            on_drop=lambda _subscriber, n: drops.inc(n),
            on_link_skip=skips.inc,
        )

    @property
    def subscribers(self) -> list[Subscription]:
        return self.fanout.subscriptions()

    def add(
        self,
        rendition: media_pb2.Rendition,
        shared: bool = False,
        pull: bool = False,
        compression: media_pb2.Compression | None = None,
        *,
        pull_sound: bool = False,
    ) -> Subscription:
        sub = self.fanout.add(
            rendition, shared=shared, pull=pull, pull_sound=pull_sound, compression=compression
        )
        metrics.SUBSCRIBERS.labels(self.production).inc()
        return sub

    def remove(self, sub: Subscription) -> None:
        if not sub.queue.closed:
            metrics.SUBSCRIBERS.labels(self.production).dec()
        self.fanout.remove(sub)

    def close(self) -> None:
        """End every subscription and release the rings and encoders."""
        for sub in self.subscribers:
            self.remove(sub)

    def video_fps(self) -> int:
        """The highest picture rate its subscribers take (the output's own when uncapped)."""
        return self.fanout.video_fps()

    def wants_video(self, pts_us: int) -> bool:
        """True when a subscriber takes the picture of `pts_us` (after its rate cap), so a
        picture only a 1 fps subscriber watches is drawn once a second, not every frame."""
        return self.fanout.wants_video(pts_us)

    def publish_video(self, picture: Picture, pts_us: int, capture_time_us: int) -> None:
        # swscale and the messages read the picture where it lies; an encoder gets a copy.
        frame = av.VideoFrame.from_numpy_buffer(picture.data, format="yuv420p")
        self.fanout.publish_video(frame, pts_us, capture_time_us, owned=False)

    def publish_audio(self, samples: np.ndarray, sample_rate: int, pts_us: int) -> None:
        self.fanout.publish_pcm(samples, sample_rate, pts_us, now_us())


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
        compression = request.compression if request.HasField("compression") else None
        if not problem and compression is not None:
            problem = compression_problem(compression)
        if problem:
            raise errors.InvalidArgument(problem)
        sub = output.add(
            r,
            shared=shared_memory.accepts(request),
            pull=request.pull,
            pull_sound=request.pull_sound,
            compression=compression,
        )
        return Feed(sub.queue, lambda: output.remove(sub))
