"""Graphics keyed over the program from a real gRPC producer of LayerFrames."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np

from services.common.bus import Bus
from services.common.gen.baycast.v1 import media_pb2, media_pb2_grpc
from services.common.handles import HandleDirectory
from services.common.rpc import SERVER_OPTIONS
from services.mixer.pictures import rgb_to_yuv
from services.mixer.service import MixerService
from tests.integration.mixer.conftest import CreateProduction
from tests.support.media_source import FakeMediaServer
from tests.support.mixer import cards, close_to, next_video, production, unique, yuv_at


class LayerProducer(media_pb2_grpc.MediaServicer):
    """Serves one gfx handle: every LayerFrame put in `send`, to each subscriber."""

    def __init__(self, handle: str) -> None:
        self.handle = handle
        self.queues: list[asyncio.Queue[media_pb2.LayerFrame]] = []
        self.requests: list[media_pb2.SubscribeRequest] = []
        self.history: list[media_pb2.LayerFrame] = []

    async def Subscribe(
        self, request: media_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[media_pb2.MediaFrame]:
        if request.handle != self.handle:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such handle")
        self.requests.append(request)
        queue: asyncio.Queue[media_pb2.LayerFrame] = asyncio.Queue()
        for layer in self.history:
            queue.put_nowait(layer)
        self.queues.append(queue)
        while True:
            yield media_pb2.MediaFrame(layer=await queue.get())

    def send(self, layer: media_pb2.LayerFrame) -> None:
        self.history.append(layer)
        for queue in self.queues:
            queue.put_nowait(layer)


def patch(x: int, y: int, w: int, h: int, rgba: tuple[int, int, int, int]) -> media_pb2.LayerPatch:
    pixels = np.empty((h, w, 4), dtype=np.uint8)
    pixels[:] = rgba
    return media_pb2.LayerPatch(
        rect=media_pb2.Rect(x=x, y=y, width=w, height=h), rgba=pixels.tobytes()
    )


async def test_graphics_layer_is_keyed_over_program_by_dirty_rectangles(
    bus: Bus,
    media: FakeMediaServer,
    announce,
    mixer: MixerService,
    create_production: CreateProduction,
) -> None:
    prod_id = unique("keys")
    (a,) = (media.add(c) for c in cards(prod_id, 1))
    await announce()
    producer = LayerProducer(f"gfx/{prod_id}")
    server = grpc.aio.server(options=SERVER_OPTIONS)
    media_pb2_grpc.add_MediaServicer_to_server(producer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await HandleDirectory(bus).announce(f"gfx/{prod_id}", f"127.0.0.1:{port}")
        await create_production(production(prod_id, [a]))
        red = rgb_to_yuv(255, 0, 0)
        producer.send(
            media_pb2.LayerFrame(
                width=1280,
                height=720,
                full=True,
                patches=[
                    patch(100, 100, 200, 100, (255, 0, 0, 255)),  # opaque red
                    patch(600, 400, 100, 50, (128, 128, 128, 128)),  # half-transparent white
                ],
            )
        )
        handle = f"prod/{prod_id}/program"
        _, image = await next_video(
            mixer.grpc_endpoint, handle, accept=lambda im: close_to(yuv_at(im, 200, 150), red, 2)
        )
        for x, y in ((100, 100), (298, 198), (200, 150)):
            assert close_to(yuv_at(image, x, y), red, 2), (x, y)
        for x, y in ((98, 98), (302, 150), (200, 202), (10, 10)):
            assert close_to(yuv_at(image, x, y), a.yuv, 0), (x, y)
        # premultiplied: out = src * (255 - a) / 255 + layer
        key_y = 16 * 128 / 255 + 128 * 219 / 255
        want_y = a.yuv[0] * 127 / 255 + key_y
        want_uv = tuple(c * 127 / 255 + 128 * 128 / 255 for c in a.yuv[1:])
        assert close_to(yuv_at(image, 650, 425), (round(want_y), *map(round, want_uv)), 2)
        # The clean feed has no graphics.
        _, clean = await next_video(mixer.grpc_endpoint, f"prod/{prod_id}/clean")
        assert close_to(yuv_at(clean, 200, 150), a.yuv, 0)
        # The mixer asked for the layer at the production's own size and rate.
        r = producer.requests[0].rendition
        assert (r.width, r.height, r.fps) == (1280, 720, 25)

        # A dirty rectangle clears half of the red box; the rest stays keyed.
        producer.send(
            media_pb2.LayerFrame(
                width=1280, height=720, patches=[patch(100, 100, 100, 100, (0, 0, 0, 0))]
            )
        )
        _, image = await next_video(
            mixer.grpc_endpoint, handle, accept=lambda im: close_to(yuv_at(im, 150, 150), a.yuv, 0)
        )
        assert close_to(yuv_at(image, 250, 150), red, 2)
        assert close_to(yuv_at(image, 650, 425), (round(want_y), *map(round, want_uv)), 2)
    finally:
        await server.stop(0)
