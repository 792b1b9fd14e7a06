"""The media plane of graphics: `Media.Subscribe("gfx/<prod>", rendition)` streams a layer.

The rendition's width, height and fps choose the layer clock (the mixer asks at its production's
format; zero means the service default, 1920×1080 at 25 fps). Subscribers with the same rendition
share one clock and one composition. The stream opens with a full frame of the layer, then
carries patches only when something changed, and a keepalive every second otherwise.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from zoneinfo import ZoneInfo

import grpc

from services.common.gen.baycast.v1 import media_pb2, media_pb2_grpc
from services.common.media import RGBA, queue_stream
from services.graphics.desk import check_production
from services.graphics.layer_stream import KEEPALIVE_S, LayerStream
from services.graphics.renderer import Renderer
from services.graphics.scene import Scene
from services.graphics.settings import GraphicsSettings

HANDLE_PREFIX = "gfx/"
MAX_WIDTH, MAX_HEIGHT, MAX_FPS = 7680, 4320, 120

StreamKey = tuple[str, int, int, int]


class Layers(media_pb2_grpc.MediaServicer):
    def __init__(
        self, settings: GraphicsSettings, scene: Callable[[str], Scene], renderer: Renderer
    ) -> None:
        self.settings = settings
        self.scene = scene
        self.renderer = renderer
        self.tz = ZoneInfo(settings.timezone)
        self.streams: dict[StreamKey, LayerStream] = {}

    def stream(self, production: str, width: int, height: int, fps: int) -> LayerStream:
        key = (production, width, height, fps)
        stream = self.streams.get(key)
        if stream is None:
            stream = LayerStream(
                self.scene(production),
                self.renderer,
                width,
                height,
                fps,
                self.tz,
                idle_stop_s=self.settings.idle_stop_s,
                on_stop=functools.partial(self._stopped, key),
            )
            self.streams[key] = stream
            stream.start()
        return stream

    def frame_size(self, production: str) -> tuple[int, int]:
        """The size `production`'s graphics are keyed at: its largest layer stream's (the
        mixer asks at the production's format), else the service's default."""
        sizes = [(w, h) for (prod, w, h, _fps) in self.streams if prod == production]
        if not sizes:
            return self.settings.default_width, self.settings.default_height
        return max(sizes, key=lambda size: size[0] * size[1])

    def _stopped(self, key: StreamKey, stream: LayerStream) -> None:
        if self.streams.get(key) is stream:
            del self.streams[key]

    async def close(self) -> None:
        await asyncio.gather(*(s.stop() for s in list(self.streams.values())))

    async def Subscribe(
        self, request: media_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[media_pb2.MediaFrame]:
        if not request.handle.startswith(HANDLE_PREFIX):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no handle {request.handle!r}")
        production = request.handle[len(HANDLE_PREFIX) :]
        r = request.rendition
        width = r.width or self.settings.default_width
        height = r.height or self.settings.default_height
        fps = r.fps or self.settings.default_fps
        problem = ""
        try:
            check_production(production)
        except Exception:
            problem = f"not a production: {production!r}"
        if r.pixel_format not in (media_pb2.PIXEL_FORMAT_UNSPECIFIED, RGBA):
            problem = "graphics layers are premultiplied RGBA only"
        elif not (2 <= width <= MAX_WIDTH and 2 <= height <= MAX_HEIGHT and fps <= MAX_FPS):
            problem = f"rendition {width}x{height}@{fps} is out of range"
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        stream = self.stream(production, width, height, fps)
        sub = stream.subscribe()
        try:
            async for frame in queue_stream(sub.queue, KEEPALIVE_S):
                yield frame
        finally:
            stream.unsubscribe(sub)
