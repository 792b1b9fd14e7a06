"""Test side of the graphics media plane: a real gRPC subscriber that rebuilds the layer.

It applies each LayerFrame's patches to its own premultiplied RGBA canvas, as a keyer would, and
keeps every frame it received, so tests can check timing (sequence numbers) and pixels.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from services.common.gen.baycast.v1 import media_pb2
from services.common.rpc import ChannelCache
from services.graphics.animation import AT_REST
from services.graphics.compositor import Compositor, InstanceFrame
from services.graphics.renderer import Box, Renderer, Scale
from services.graphics.settings import DEFAULT_FONT_PATH
from services.graphics.template import SHIPPED_DIR, Template, TemplateLibrary

TZ = ZoneInfo("Asia/Shanghai")


@dataclass
class Received:
    sequence: int
    full: bool
    rects: list[tuple[int, int, int, int]]
    canvas: np.ndarray  # the layer after applying this frame


@dataclass
class LayerReceiver:
    endpoint: str
    production: str
    width: int = 1920
    height: int = 1080
    fps: int = 25
    frames: list[Received] = field(default_factory=list)
    keepalives: int = 0
    canvas: np.ndarray | None = None
    _task: asyncio.Task[None] | None = None
    _channels: ChannelCache = field(default_factory=ChannelCache)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> LayerReceiver:
        self.canvas = np.zeros((self.height, self.width, 4), dtype=np.uint8)
        self._task = asyncio.create_task(self._run())
        await self.wait_for(lambda: any(f.full for f in self.frames), timeout=10)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._channels.close()

    async def _run(self) -> None:
        request = media_pb2.SubscribeRequest(
            handle=f"gfx/{self.production}",
            rendition=media_pb2.Rendition(
                width=self.width,
                height=self.height,
                fps=self.fps,
                pixel_format=media_pb2.PIXEL_FORMAT_RGBA,
            ),
            subscriber="test",
        )
        async for frame in self._channels.media(self.endpoint).Subscribe(request):
            if frame.WhichOneof("body") == "keepalive":
                self.keepalives += 1
                continue
            layer = frame.layer
            assert (layer.width, layer.height) == (self.width, self.height)
            assert self.canvas is not None
            rects = []
            for patch in layer.patches:
                r = patch.rect
                assert len(patch.rgba) == r.width * r.height * 4  # no row padding
                pixels = np.frombuffer(patch.rgba, dtype=np.uint8).reshape(r.height, r.width, 4)
                self.canvas[r.y : r.y + r.height, r.x : r.x + r.width] = pixels
                rects.append((r.x, r.y, r.x + r.width, r.y + r.height))
            self.frames.append(Received(layer.sequence, layer.full, rects, self.canvas.copy()))
            self._changed.set()

    async def wait_for(self, condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def settle(self, quiet_s: float = 0.3, timeout: float = 10.0) -> np.ndarray:
        """The canvas once no layer frame arrived for `quiet_s`."""
        async with asyncio.timeout(timeout):
            while True:
                count = len(self.frames)
                await asyncio.sleep(quiet_s)
                if len(self.frames) == count:
                    assert self.canvas is not None
                    return self.canvas.copy()


def over_rgb(picture: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """Key a premultiplied RGBA layer over an RGB picture (uint8), as the mixer does."""
    a = layer[..., 3:4].astype(np.uint16)
    out = layer[..., :3].astype(np.uint16) + (picture.astype(np.uint16) * (255 - a) + 127) // 255
    return np.minimum(out, 255).astype(np.uint8)


def shipped(name: str) -> Template:
    library = TemplateLibrary([SHIPPED_DIR], default_font=DEFAULT_FONT_PATH)
    library.scan()
    return library.templates[name]


def at_rest(
    template: Template, fields: dict[str, Any], width: int, height: int
) -> tuple[np.ndarray, Box]:
    """The layer with the instance at rest, rendered here (not by the service), and its box."""
    art = Renderer(TZ).render(template, fields, Scale(width, height), 1)
    compositor = Compositor(width, height)
    compositor.compose([InstanceFrame(art, AT_REST)], datetime.now(TZ), False)
    return compositor.canvas, art.box
