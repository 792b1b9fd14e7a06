"""The layer clock keeps its rate while an instance renders slowly in a worker thread."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from zoneinfo import ZoneInfo

import numpy as np

from services.common.gen.baycast.v1 import graphics_pb2, media_pb2
from services.graphics.layer_stream import LayerStream
from services.graphics.renderer import InstanceArt, Renderer, Scale
from services.graphics.scene import OnAir, Scene
from services.graphics.settings import DEFAULT_FONT_PATH
from services.graphics.template import Template, parse_template

TZ = ZoneInfo("Asia/Shanghai")
SLOW_S = 0.8

CRAWL = """
name: crawl
fields: {items: {kind: list, default: ["滚动新闻 crawl"]}}
elements:
  - {type: ticker, x: 0, y: 900, width: 1920, height: 120, items: items, speed: 600, size: 60}
"""
SLOW = """
name: slow
elements:
  - {type: box, x: 0, y: 0, width: 480, height: 270, color: "#FF0000"}
"""


class SlowRenderer(Renderer):
    def render(
        self, template: Template, fields: Mapping[str, str], scale: Scale, revision: int
    ) -> InstanceArt:
        if template.name == "slow":
            time.sleep(SLOW_S)  # a heavy render, in the worker thread
        return super().render(template, fields, scale, revision)


def on_air(template: Template, iid: str, cut: bool) -> OnAir:
    inst = graphics_pb2.GfxInstance(id=iid, template=template.name, fields=template.defaults())
    inst.revision = 1
    return OnAir(inst, template, cut_in=cut)


async def test_a_slow_render_does_not_hold_frames_back() -> None:
    crawl = parse_template(CRAWL, "crawl.yaml", default_font=DEFAULT_FONT_PATH)
    slow = parse_template(SLOW, "slow.yaml", default_font=DEFAULT_FONT_PATH)
    scene = Scene("p")
    scene.on_air["crawl"] = on_air(crawl, "crawl", cut=True)
    stream = LayerStream(
        scene, SlowRenderer(TZ), 320, 180, 25, TZ, idle_stop_s=5, on_stop=lambda _s: None
    )
    stream.start()
    sub = stream.subscribe()
    canvas = np.zeros((180, 320, 4), dtype=np.uint8)
    received: list[tuple[float, media_pb2.LayerFrame]] = []

    async def receive(until: float) -> None:
        while time.monotonic() < until:
            frame = await sub.queue.get(timeout=0.2)
            if frame is None or frame.WhichOneof("body") != "layer":
                continue
            for p in frame.layer.patches:
                r = p.rect
                pixels = np.frombuffer(p.rgba, dtype=np.uint8).reshape(r.height, r.width, 4)
                canvas[r.y : r.y + r.height, r.x : r.x + r.width] = pixels
            received.append((time.monotonic(), frame.layer))

    try:
        await receive(time.monotonic() + 0.5)
        assert received[0][1].full
        scene.on_air["slow"] = on_air(slow, "slow", cut=True)
        started = time.monotonic()
        await receive(started + SLOW_S - 0.1)
        during = [layer for t, layer in received if t >= started]
        # The crawl kept moving on the layer clock while the slow instance rendered.
        assert len(during) >= 10
        assert all(b.sequence > a.sequence for a, b in itertools.pairwise(during))
        assert not canvas[:45, :80].any()  # not there yet
        await receive(time.monotonic() + 0.6)
        # 480×270 reference pixels are 80×45 at 320×180.
        assert (canvas[:45, :80] == [255, 0, 0, 255]).all()
        assert not canvas[45:, :80].any() and not canvas[:45, 80:].any()
    finally:
        await stream.stop()


async def test_a_stream_starting_with_graphics_on_air_sends_them_in_its_first_frame() -> None:
    # A restart or a takeover: what is on air is in the first full frame, not a blank layer that
    # a keyer following the handle would show for a few frames.
    slow = parse_template(SLOW, "slow.yaml", default_font=DEFAULT_FONT_PATH)
    scene = Scene("p")
    scene.on_air["slow"] = on_air(slow, "slow", cut=True)
    stream = LayerStream(
        scene, SlowRenderer(TZ), 320, 180, 25, TZ, idle_stop_s=5, on_stop=lambda _s: None
    )
    started = time.monotonic()
    stream.start()
    sub = stream.subscribe()
    try:
        frame = None
        while frame is None or frame.WhichOneof("body") != "layer":
            frame = await sub.queue.get(timeout=2.0)
            assert time.monotonic() - started < 2.0
        assert frame.layer.full and time.monotonic() - started >= SLOW_S
        (patch,) = frame.layer.patches
        canvas = np.frombuffer(patch.rgba, dtype=np.uint8).reshape(180, 320, 4)
        assert (canvas[:45, :80] == [255, 0, 0, 255]).all()
    finally:
        await stream.stop()
