"""Transitions and layouts on the real program output, checked pixel by pixel."""

from __future__ import annotations

import asyncio

from services.common.bus import Bus
from services.common.gen.baycast.v1 import media_pb2, mixer_pb2
from services.common.media import proto_to_i420
from services.mixer.layouts import place
from services.mixer.service import MixerService
from tests.integration.mixer.conftest import CreateProduction
from tests.support.media_source import Card, FakeMediaServer
from tests.support.mixer import (
    cards,
    close_to,
    collect,
    command,
    next_video,
    production,
    unique,
    yuv_at,
)

Cmd = mixer_pb2.MixerCommand
SMALL = media_pb2.Rendition(width=320, height=180, no_audio=True)


async def test_halfway_through_a_one_second_dissolve_is_the_mean(
    bus: Bus,
    media: FakeMediaServer,
    announce,
    mixer: MixerService,
    create_production: CreateProduction,
) -> None:
    prod_id = unique("mix")
    a = media.add(Card(f"source/{prod_id}-gz", (60, 100, 160)))
    b = media.add(Card(f"source/{prod_id}-sz", (180, 160, 90)))
    await announce()
    await create_production(production(prod_id, [a, b]))
    handle = f"prod/{prod_id}/program"
    await next_video(
        mixer.grpc_endpoint, handle, SMALL, accept=lambda im: close_to(yuv_at(im, 9, 9), a.yuv)
    )

    recording = asyncio.create_task(collect(mixer.grpc_endpoint, handle, 2.5, SMALL))
    await asyncio.sleep(0.3)
    auto = Cmd.Auto(transition=mixer_pb2.Transition(type="mix", duration_ms=1000))
    state = await command(bus, prod_id, Cmd(auto=auto))
    assert state.transition.active and state.transition.transition.type == "mix"
    start = state.transition.start_pts_us
    frames = [m.video for m in await recording if m.WhichOneof("body") == "video"]

    # The dissolve moves from a to b, one step per frame, at the frame clock's pts.
    by_pts = {f.pts_us: proto_to_i420(f) for f in frames}
    halfway = min(by_pts, key=lambda pts: abs(pts - start - 500_000))
    assert abs(halfway - start - 500_000) <= 20_000
    mean = tuple((p + q) / 2 for p, q in zip(a.yuv, b.yuv, strict=True))
    for x, y in ((8, 8), (160, 90), (300, 170)):
        got = yuv_at(by_pts[halfway], x, y)
        assert all(abs(g - m) <= 3 for g, m in zip(got, mean, strict=True)), (got, mean)
    assert close_to(yuv_at(by_pts[start], 160, 90), a.yuv) if start in by_pts else True
    end = max(by_pts)
    assert end >= start + 1_000_000 and close_to(yuv_at(by_pts[end], 160, 90), b.yuv)
    lumas = [yuv_at(by_pts[p], 160, 90)[0] for p in sorted(by_pts) if start <= p <= start + 1e6]
    assert lumas == sorted(lumas) and len(set(lumas)) >= 20  # a steady ramp, not a jump


async def test_city_wall_shows_each_station_in_its_box(
    bus: Bus,
    media: FakeMediaServer,
    announce,
    mixer: MixerService,
    create_production: CreateProduction,
) -> None:
    prod_id = unique("wall")
    ten = [media.add(c) for c in cards(prod_id, 10)]
    await announce()
    ids = [c.name.removeprefix("source/") for c in ten]
    wall = mixer_pb2.Layout(name="wall", kind="city_wall", sources=ids)
    await create_production(production(prod_id, ten, layouts=[wall]))
    state = await command(bus, prod_id, Cmd(layout=Cmd.SetLayout(name="wall")))
    assert state.switcher.layout.kind == "city_wall"

    boxes = place(wall, 1280, 720)
    assert len(boxes) == 10

    def centre(i: int) -> tuple[int, int]:
        box = boxes[i]
        return box.x + box.width // 2, box.y + box.height // 2

    def all_in_place(image) -> bool:
        return all(close_to(yuv_at(image, *centre(i)), c.yuv) for i, c in enumerate(ten))

    _, image = await next_video(mixer.grpc_endpoint, f"prod/{prod_id}/program", accept=all_in_place)
    for i, card in enumerate(ten):
        box = boxes[i]
        for x, y in ((box.x + 3, box.y + 3), (box.x + box.width - 4, box.y + box.height - 4)):
            assert close_to(yuv_at(image, x, y), card.yuv), (i, x, y)
    # The big box is 4/5 of the frame; the nine small ones 1/5 each, on its right and below.
    assert (boxes[0].width, boxes[0].height) == (1024, 576)
    assert all((b.width, b.height) == (256, 144) for b in boxes[1:])
    # Each box asked for its source at its own size.
    sizes = {
        (f.source, f.width, f.height) for f in mixer.running[prod_id].runner.feeds.video.values()
    }
    assert (ids[0], 1024, 576) in sizes and (ids[5], 256, 144) in sizes


async def test_layout_change_can_be_transitioned_with_a_wipe(
    bus: Bus,
    media: FakeMediaServer,
    announce,
    mixer: MixerService,
    create_production: CreateProduction,
) -> None:
    prod_id = unique("wipe")
    a, b = (media.add(c) for c in cards(prod_id, 2))
    await announce()
    await create_production(production(prod_id, [a, b]))
    sb = b.name.removeprefix("source/")
    handle = f"prod/{prod_id}/program"
    await next_video(
        mixer.grpc_endpoint, handle, SMALL, accept=lambda im: close_to(yuv_at(im, 9, 9), a.yuv)
    )
    recording = asyncio.create_task(collect(mixer.grpc_endpoint, handle, 2.0, SMALL))
    await asyncio.sleep(0.3)
    two_up = mixer_pb2.Layout(name="two", kind="side_by_side", sources=["", sb])
    wipe = mixer_pb2.Transition(type="wipe", duration_ms=800)
    state = await command(bus, prod_id, Cmd(layout=Cmd.SetLayout(layout=two_up, transition=wipe)))
    start = state.transition.start_pts_us
    by_pts = {m.video.pts_us: proto_to_i420(m.video) for m in await recording if m.video.width}
    halfway = min(by_pts, key=lambda pts: abs(pts - start - 400_000))
    image = by_pts[halfway]
    # Left of the edge: the new layout (background above the boxes); right: the old (a, full).
    assert not close_to(yuv_at(image, 40, 10), a.yuv, 10)
    assert close_to(yuv_at(image, 300, 10), a.yuv)
    end = by_pts[max(by_pts)]
    assert close_to(yuv_at(end, 80, 90), a.yuv) and close_to(yuv_at(end, 240, 90), b.yuv)
    assert not close_to(yuv_at(end, 240, 10), b.yuv, 10)
