"""The media plane of graphics: `Media.Subscribe("gfx/<prod>", rendition)` streams a layer.

The rendition's width, height and fps choose the layer clock (the mixer asks at its production's
format; zero means the service default, 1920×1080 at 25 fps). Subscribers with the same rendition
share one clock and one composition. The stream opens with a full frame of the layer, then
carries patches only when something changed, and a keepalive every second otherwise.

Only the replica that runs a production's scene serves its layer (one that nobody runs is taken
by the replica a subscription reaches, as a command would take it). Another replica answers
NOT_FOUND, and a replica that lets a scene go ends its streams: either way the subscriber looks the
handle up again and follows the scene to the replica that runs it now.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from zoneinfo import ZoneInfo

from services.common import errors
from services.common.gen.baycast.v1 import media_pb2
from services.common.media import RGBA
from services.common.media_service import Feed
from services.common.renditions import rendition_problem
from services.graphics.desk import check_production
from services.graphics.layer_stream import KEEPALIVE_S, LayerStream
from services.graphics.renderer import Renderer
from services.graphics.scene import Scene
from services.graphics.settings import GraphicsSettings

HANDLE_PREFIX = "gfx/"

StreamKey = tuple[str, int, int, int]
# The scene of a production this replica runs (taking it if nobody does), None: not here.
SceneOf = Callable[[str], Awaitable[Scene | None]]


class Layers:
    def __init__(self, settings: GraphicsSettings, scene: SceneOf, renderer: Renderer) -> None:
        self.settings = settings
        self.scene = scene
        self.renderer = renderer
        self.tz = ZoneInfo(settings.timezone)
        self.streams: dict[StreamKey, LayerStream] = {}

    def stream(self, scene: Scene, width: int, height: int, fps: int) -> LayerStream:
        key = (scene.production, width, height, fps)
        stream = self.streams.get(key)
        if stream is None or stream.scene is not scene:
            stream = LayerStream(
                scene,
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

    async def end(self, production: str) -> None:
        """`production` no longer runs here: its streams end, so subscribers look it up again."""
        streams = [s for (prod, *_rendition), s in self.streams.items() if prod == production]
        await asyncio.gather(*(s.stop() for s in streams))

    async def close(self) -> None:
        await asyncio.gather(*(s.stop() for s in list(self.streams.values())))

    async def open(self, request: media_pb2.SubscribeRequest) -> Feed:
        """A subscriber's feed of a production's layer (`media_service.MediaService`)."""
        if not request.handle.startswith(HANDLE_PREFIX):
            raise errors.NotFound(f"no handle {request.handle!r}")
        production = request.handle[len(HANDLE_PREFIX) :]
        r = request.rendition
        width = r.width or self.settings.default_width
        height = r.height or self.settings.default_height
        fps = r.fps or self.settings.default_fps
        problem = rendition_problem(r, (RGBA,))
        try:
            check_production(production)
        except Exception:
            problem = f"not a production: {production!r}"
        if problem:
            raise errors.InvalidArgument(problem)
        scene = await self.scene(production)
        if scene is None:
            raise errors.NotFound(f"{request.handle} is served by another replica")
        stream = self.stream(scene, width, height, fps)
        sub = stream.subscribe()
        return Feed(sub.queue, lambda: stream.unsubscribe(sub), KEEPALIVE_S)
