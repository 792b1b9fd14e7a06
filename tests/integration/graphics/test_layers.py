"""The layer handle over real gRPC: animation timing, keying, crawl speed, keepalives."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import numpy as np
import pytest

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import graphics_pb2, media_pb2
from services.common.rpc import ChannelCache
from services.graphics.renderer import Renderer, Scale, TickerArt
from services.graphics.service import GraphicsService
from services.graphics.settings import DEFAULT_FONT_PATH, GraphicsSettings
from services.graphics.template import load_template
from tests.integration.graphics.receiver import LayerReceiver, at_rest, over_rgb, shipped
from tests.support.nats import NatsServer
from tests.support.services import running_service

TZ = ZoneInfo("Asia/Shanghai")


async def command(bus: Bus, production: str, cmd: graphics_pb2.GfxCommand) -> graphics_pb2.GfxReply:
    return await bus.request(
        subject("prod", production, "gfx", "cmd"), cmd, graphics_pb2.GfxReply, timeout=10
    )


async def test_slide_in_takes_12_to_13_frames_and_ends_in_place(
    nats_server: NatsServer, production: str
) -> None:
    template = shipped("lower_third")
    assert (template.anim_in.type, template.anim_in.duration_ms) == ("slide", 500)
    fields = {"name": "李明", "title": "深圳台记者"}
    expected, box = at_rest(template, {**template.defaults(), **fields}, 1920, 1080)
    bus = Bus(nats_server.url, "test-ctl")
    await bus.connect()
    try:
        async with (
            running_service(GraphicsService, GraphicsSettings, nats_server.url) as svc,
            LayerReceiver(f"127.0.0.1:{svc.grpc.port}", production, 1920, 1080, 25) as rx,
        ):
            before = len(rx.frames)
            show = graphics_pb2.GfxShow(template="lower_third", instance="lt", fields=fields)
            await command(bus, production, graphics_pb2.GfxCommand(show=show))
            await rx.settle(quiet_s=0.5)
            moving = [f for f in rx.frames[before:] if f.rects]
            first, last = moving[0], moving[-1]
            # Counted on the layer's frame clock (sequence numbers), not on arrival times.
            assert 12 <= last.sequence - first.sequence + 1 <= 13
            assert np.array_equal(last.canvas, expected)  # ends exactly at the template's place

            # It slides in from the left: its right edge moves right every frame, never back.
            def right_edge(layer: np.ndarray) -> int:
                return int(np.nonzero(layer[..., 3].any(axis=0))[0][-1])

            rights = [right_edge(f.canvas) for f in moving]
            assert rights == sorted(set(rights)) and rights[-1] == right_edge(expected)
            # Only the lower third's rows were ever patched.
            assert all(box[1] <= r[1] and r[3] <= box[3] for f in moving for r in f.rects)
    finally:
        await bus.drain()


async def test_keyed_onto_a_program_changes_only_the_graphic_region(
    nats_server: NatsServer, production: str
) -> None:
    template = shipped("lower_third")
    fields = {"name": "陈静", "name_en": "Chen Jing", "station": "珠海台", "city_en": "ZHUHAI"}
    expected, box = at_rest(template, {**template.defaults(), **fields}, 1280, 720)
    rng = np.random.default_rng(7)
    picture = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)  # the "program"
    bus = Bus(nats_server.url, "test-ctl")
    await bus.connect()
    try:
        async with (
            running_service(GraphicsService, GraphicsSettings, nats_server.url) as svc,
            LayerReceiver(f"127.0.0.1:{svc.grpc.port}", production, 1280, 720, 25) as rx,
        ):
            show = graphics_pb2.GfxShow(template="lower_third", fields=fields)
            await command(bus, production, graphics_pb2.GfxCommand(show=show))
            layer = await rx.settle(quiet_s=0.5)
            assert np.array_equal(layer, expected)
            # Every frame of the slide, keyed, leaves the picture alone outside the graphic's
            # rows (it slides horizontally) and right of its resting place.
            for frame in rx.frames:
                keyed = over_rgb(picture, frame.canvas)
                outside = np.ones((720, 1280), dtype=bool)
                outside[box[1] : box[3], : box[2]] = False
                assert np.array_equal(keyed[outside], picture[outside])
            keyed = over_rgb(picture, layer)
            x0, y0, x1, y1 = box
            outside = np.ones((720, 1280), dtype=bool)
            outside[y0:y1, x0:x1] = False
            assert np.array_equal(keyed[outside], picture[outside])
            inside = np.any(keyed[y0:y1, x0:x1] != picture[y0:y1, x0:x1], axis=2)
            assert inside.mean() > 0.6  # the graphic's boxes cover most of its region
            # Where the layer is opaque the program shows the graphic's own colour.
            opaque = layer[..., 3] == 255
            assert opaque.sum() > 10_000
            assert np.array_equal(keyed[opaque], layer[opaque][:, :3])

            # A subscriber joining now gets the same layer in one full frame.
            async with LayerReceiver(f"127.0.0.1:{svc.grpc.port}", production, 1280, 720) as late:
                assert late.frames[0].full
                assert late.frames[0].rects == [(0, 0, 1280, 720)]
                assert np.array_equal(late.frames[0].canvas, layer)
    finally:
        await bus.drain()


TICKER = """
name: test_ticker
fields:
  items: {kind: list, default: ["甲乙丙丁", "ABCD"]}
elements:
  - {type: box, x: 300, y: 600, width: 600, height: 60, color: "#000000C0"}
  - {type: ticker, x: 300, y: 600, width: 600, height: 60, items: items, speed: 474, size: 32}
"""


async def test_ticker_scrolls_at_its_speed_and_loops_without_a_jump(
    nats_server: NatsServer, production: str, tmp_path: Path
) -> None:
    (tmp_path / "test_ticker.yaml").write_text(TICKER, encoding="utf-8")
    template = load_template(tmp_path / "test_ticker.yaml", default_font=DEFAULT_FONT_PATH)
    width, height, fps = 1280, 720, 25
    art = Renderer(TZ).render(template, template.defaults(), Scale(width, height), 1)
    ticker = next(p for p in art.parts if isinstance(p, TickerArt))
    per_frame = 474 * width / 1920 / fps  # 12.64 output pixels per frame
    x0, y0, x1, y1 = ticker.rect
    bus = Bus(nats_server.url, "test-ctl")
    await bus.connect()
    try:
        async with (
            running_service(
                GraphicsService, GraphicsSettings, nats_server.url, templates_dir=str(tmp_path)
            ) as svc,
            LayerReceiver(f"127.0.0.1:{svc.grpc.port}", production, width, height, fps) as rx,
        ):
            show = graphics_pb2.GfxShow(template="test_ticker", cut=True)
            await command(bus, production, graphics_pb2.GfxCommand(show=show))
            # Enough frames to cross the window and then loop the strip twice.
            needed = (ticker.width + 2 * ticker.period) / per_frame
            await rx.wait_for(lambda: len(rx.frames) > needed + 5, timeout=30)
            frames = [f for f in rx.frames if f.rects][3:]
            total = 0
            for old, new in itertools.pairwise(frames):
                a = old.canvas[y0:y1, x0:x1].astype(int)
                b = new.canvas[y0:y1, x0:x1].astype(int)
                errs = [np.abs(b[:, : x1 - x0 - s] - a[:, s:]).mean() for s in range(0, 40)]
                shift = int(np.argmin(errs))
                assert errs[shift] == 0, "the strip moved as a whole, without redrawing"
                ticks = new.sequence - old.sequence
                assert abs(shift - per_frame * ticks) <= 1 * ticks
                total += shift
            assert total > ticker.width + ticker.period  # it did loop, and never jumped
            # Only the crawl's own strip was patched.
            assert all(
                x0 <= r[0] and r[2] <= x1 and y0 <= r[1] and r[3] <= y1
                for f in frames
                for r in f.rects
            )
    finally:
        await bus.drain()


async def test_a_static_layer_is_sent_once_then_kept_alive(
    nats_server: NatsServer, production: str
) -> None:
    bus = Bus(nats_server.url, "test-ctl")
    await bus.connect()
    try:
        async with (
            running_service(GraphicsService, GraphicsSettings, nats_server.url) as svc,
            LayerReceiver(f"127.0.0.1:{svc.grpc.port}", production, 1280, 720) as rx,
        ):
            show = graphics_pb2.GfxShow(template="logo_bug", cut=True)
            await command(bus, production, graphics_pb2.GfxCommand(show=show))
            await rx.wait_for(lambda: rx.canvas[..., 3].any())
            count, alive = len(rx.frames), rx.keepalives
            await asyncio.sleep(2.6)
            assert len(rx.frames) == count  # nothing moves, nothing is sent
            assert rx.keepalives - alive >= 2
    finally:
        await bus.drain()


async def test_subscribe_refuses_what_graphics_does_not_serve(
    nats_server: NatsServer, production: str
) -> None:
    async with running_service(GraphicsService, GraphicsSettings, nats_server.url) as svc:
        channels = ChannelCache()
        stub = channels.media(f"127.0.0.1:{svc.grpc.port}")
        try:
            for handle, rendition, code in [
                (f"source/{production}", media_pb2.Rendition(), grpc.StatusCode.NOT_FOUND),
                (
                    f"gfx/{production}",
                    media_pb2.Rendition(pixel_format=media_pb2.PIXEL_FORMAT_I420),
                    grpc.StatusCode.INVALID_ARGUMENT,
                ),
                (
                    f"gfx/{production}",
                    media_pb2.Rendition(width=100_000, height=10),
                    grpc.StatusCode.INVALID_ARGUMENT,
                ),
                ("gfx/bad.name", media_pb2.Rendition(), grpc.StatusCode.INVALID_ARGUMENT),
            ]:
                call = stub.Subscribe(
                    media_pb2.SubscribeRequest(handle=handle, rendition=rendition)
                )
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await anext(aiter(call))
                assert caught.value.code() == code, handle
            # No rendition at all: the default 1920×1080 layer.
            call = stub.Subscribe(media_pb2.SubscribeRequest(handle=f"gfx/{production}"))
            first = await anext(aiter(call))
            assert (first.layer.width, first.layer.height, first.layer.full) == (1920, 1080, True)
            call.cancel()
        finally:
            await channels.close()
