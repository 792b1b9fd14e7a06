"""GfxPreview over a real nats-server: the layer as it would air, as a PNG, and nothing on air."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from services.common import errors
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import graphics_pb2
from services.graphics.service import GraphicsService
from services.graphics.settings import GraphicsSettings
from tests.integration.graphics.receiver import LayerReceiver, at_rest, shipped
from tests.integration.graphics.test_commands import command
from tests.support.nats import NatsServer
from tests.support.services import running_service

FIELDS = {"name": "李明", "name_en": "Li Ming", "title": "深圳台记者", "station": "深圳台"}


def preview(template: str, width: int = 0, **fields: str) -> graphics_pb2.GfxCommand:
    return graphics_pb2.GfxCommand(
        preview=graphics_pb2.GfxPreview(template=template, fields=fields, width=width)
    )


def straight(premultiplied: np.ndarray) -> np.ndarray:
    """Premultiplied RGBA to straight alpha, as a PNG holds it."""
    rgba = premultiplied.astype(np.float64)
    alpha = rgba[..., 3:4]
    out = np.where(alpha > 0, rgba[..., :3] * 255 / np.maximum(alpha, 1), 0)
    return np.concatenate([np.clip(np.round(out), 0, 255), alpha], axis=2).astype(np.uint8)


def decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "RGBA"
    return np.asarray(image)


async def test_a_preview_is_the_layer_at_rest_without_airing_it(
    nats_server: NatsServer, production: str
) -> None:
    bus = Bus(nats_server.url, "test-preview")
    await bus.connect()
    states: list[graphics_pb2.GfxState] = []

    async def on_state(state: graphics_pb2.GfxState, _subject: str) -> None:
        states.append(state)

    await bus.subscribe(
        subject("prod", production, "gfx", "state"), graphics_pb2.GfxState, on_state
    )
    try:
        async with running_service(GraphicsService, GraphicsSettings, nats_server.url) as svc:
            # No mixer keys this production yet: the service's default frame, 1920×1080.
            reply = await command(bus, production, preview("lower_third", **FIELDS))
            png = decode(reply.preview_png)
            assert png.shape == (1080, 1920, 4)
            template = shipped("lower_third")
            expected, box = at_rest(template, template.resolve_fields(FIELDS), 1920, 1080)
            want = straight(expected)
            visible = want[..., 3] > 0
            assert np.array_equal(png[..., 3], want[..., 3])
            assert np.abs(png[visible].astype(int) - want[visible]).max() <= 2
            # Where the template draws and nowhere else; the Chinese name in dark glyphs.
            ys, xs = np.nonzero(png[..., 3])
            assert (xs.min(), ys.min()) >= (box[0] - 16, box[1] - 16)
            assert (xs.max(), ys.max()) <= (box[2] + 16, box[3] + 16)
            name = png[806:862, 160:400]
            assert (name[..., :3].max(axis=2) < 80).sum() > 200  # glyph strokes, #1A1A1A
            other = decode((await command(bus, production, preview("lower_third"))).preview_png)
            assert not np.array_equal(other[806:862, 160:400], name)  # the default name

            # A mixer keys the production at 720p: previews are drawn at that size.
            endpoint = f"127.0.0.1:{svc.grpc.port}"
            async with LayerReceiver(endpoint, production, 1280, 720):
                full = decode((await command(bus, production, preview("lower_third"))).preview_png)
                assert full.shape == (720, 1280, 4)
                small = await command(bus, production, preview("lower_third", 640, **FIELDS))
                assert decode(small.preview_png).shape == (360, 640, 4)
                assert not svc.layers.streams[(production, 1280, 720, 25)].scene.on_air

            # Nothing went on air.
            listed = await command(
                bus, production, graphics_pb2.GfxCommand(list=graphics_pb2.GfxList())
            )
            assert list(listed.instances) == [] and states == []
            assert not svc.desk.scene(production).on_air

            refused = [
                (preview("nope"), errors.NotFound, "preview.template"),
                (preview(""), errors.InvalidArgument, "preview.template"),
                (
                    preview("lower_third", nickname="x"),
                    errors.InvalidArgument,
                    "preview.fields.nickname",
                ),
                (preview("lower_third", 8), errors.InvalidArgument, "preview.width"),
                (preview("lower_third", 5000), errors.InvalidArgument, "preview.width"),
            ]
            for cmd, error, field in refused:
                with pytest.raises(error) as caught:
                    await command(bus, production, cmd)
                assert caught.value.field == field, cmd
    finally:
        await bus.drain()
