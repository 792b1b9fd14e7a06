"""Previews (GfxPreview): a template drawn with its fields as it would air, as a PNG, off air.

The control room shows a lower third before it goes on air. The layer is drawn at the frame size
the production's mixer keys graphics at (the size of the production's layer stream; the service's
default size while no stream runs), at rest: after its in-animation, a ticker at the start of its
crawl, a clock at the current time. It is then scaled to the width asked for, premultiplied (so
edges stay clean), and encoded as straight-alpha RGBA PNG. Nothing on air changes; drawing and
encoding run in a worker thread.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Mapping
from datetime import datetime

from PIL import Image

from services.common import errors
from services.graphics.animation import AT_REST
from services.graphics.compositor import Compositor, InstanceFrame
from services.graphics.renderer import Renderer, Scale, TickerArt
from services.graphics.template import Template

MIN_WIDTH, MAX_WIDTH = 16, 3840

FrameSize = Callable[[str], tuple[int, int]]


class LayerPreview:
    def __init__(self, renderer: Renderer, frame_size: FrameSize) -> None:
        self.renderer = renderer
        self.frame_size = frame_size

    async def png(
        self, production: str, template: Template, fields: Mapping[str, str], width: int
    ) -> bytes:
        """The layer `template` draws with `fields` in `production`, `width` pixels wide."""
        if width and not MIN_WIDTH <= width <= MAX_WIDTH:
            raise errors.InvalidArgument(
                f"width must be {MIN_WIDTH} to {MAX_WIDTH} (0: the frame's)", field="preview.width"
            )
        frame_width, frame_height = self.frame_size(production)
        return await asyncio.to_thread(
            self._draw, template, dict(fields), frame_width, frame_height, width or frame_width
        )

    def _draw(
        self, template: Template, fields: dict[str, str], width: int, height: int, out_width: int
    ) -> bytes:
        art = self.renderer.render(template, fields, Scale(width, height), 0)
        tickers = sum(isinstance(part, TickerArt) for part in art.parts)
        composed = Compositor(width, height).compose(
            [InstanceFrame(art, AT_REST, (0,) * tickers)],
            datetime.now(self.renderer.tz),
            want_full=True,
        )
        assert composed.full is not None
        image = Image.frombytes("RGBa", (width, height), composed.full)
        if out_width != width:
            size = (out_width, max(1, round(height * out_width / width)))
            image = image.resize(size, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.convert("RGBA").save(out, format="PNG")
        return out.getvalue()
