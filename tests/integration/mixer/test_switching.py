"""Switching end to end: cards from a real gRPC producer, the mixer, its program handle."""

from __future__ import annotations

from services.common.bus import Bus
from services.common.gen.baycast.v1 import media_pb2, mixer_pb2
from services.common.handles import HandleDirectory
from services.common.media import now_us
from services.mixer.service import MixerService
from tests.integration.mixer.conftest import CreateProduction
from tests.support.media_source import FakeMediaServer
from tests.support.mixer import (
    cards,
    close_to,
    command,
    next_video,
    production,
    unique,
    yuv_at,
)

Cmd = mixer_pb2.MixerCommand


async def test_take_puts_the_preview_source_on_program(
    bus: Bus,
    media: FakeMediaServer,
    announce,
    mixer: MixerService,
    create_production: CreateProduction,
) -> None:
    prod_id = unique("take")
    a, b = (media.add(c) for c in cards(prod_id, 2))
    await announce()
    await create_production(production(prod_id, [a, b]))
    sa, sb = (c.name.removeprefix("source/") for c in (a, b))
    state = await command(bus, prod_id, Cmd(get=Cmd.Get()))
    assert (state.switcher.program, state.switcher.preview) == (sa, sb)
    endpoint = mixer.grpc_endpoint
    handle = f"prod/{prod_id}/program"
    directory = HandleDirectory(bus)
    for name in ("program", "clean", "preview", "multiview", f"mixminus/{sa}"):
        assert await directory.resolve(f"prod/{prod_id}/{name}") == endpoint
    small = media_pb2.Rendition(width=320, height=180)

    _, image = await next_video(
        endpoint, handle, small, accept=lambda im: close_to(yuv_at(im, 160, 90), a.yuv)
    )
    assert close_to(yuv_at(image, 10, 10), a.yuv)

    state = await command(bus, prod_id, Cmd(take=Cmd.Take()))
    assert (state.switcher.program, state.switcher.preview) == (sb, sa)
    frame, image = await next_video(
        endpoint, handle, small, accept=lambda im: close_to(yuv_at(im, 160, 90), b.yuv)
    )
    # The frame carries the capture time of the source frame it shows (for latency).
    assert 0 < now_us() - frame.capture_time_us < 2_000_000
    for x, y in ((4, 4), (160, 90), (315, 175)):
        assert close_to(yuv_at(image, x, y), b.yuv), (x, y, yuv_at(image, x, y))
    assert {t.source: (t.program, t.preview) for t in state.tally.sources} == {
        sa: (False, True),
        sb: (True, False),
    }
