"""A source that dies on program: the clock keeps its cadence, holds, slates, then falls back."""

from __future__ import annotations

import asyncio
import itertools

from services.common.bus import Bus
from services.common.gen.baycast.v1 import media_pb2, mixer_pb2
from services.common.media import now_us, proto_to_i420
from services.mixer.service import MixerService
from tests.integration.mixer.conftest import CreateProduction
from tests.support.media_source import FakeMediaServer
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


async def test_lost_program_source_is_held_then_slated_then_backed_up(
    bus: Bus,
    media: FakeMediaServer,
    announce,
    mixer: MixerService,
    create_production: CreateProduction,
) -> None:
    prod_id = unique("loss")
    a, b = (media.add(c) for c in cards(prod_id, 2))
    await announce()
    prod = production(prod_id, [a, b])
    prod.sources[0].backup = prod.sources[1].id
    await create_production(prod)
    handle = f"prod/{prod_id}/program"
    await next_video(
        mixer.grpc_endpoint, handle, SMALL, accept=lambda im: close_to(yuv_at(im, 9, 9), a.yuv)
    )

    recording = asyncio.create_task(collect(mixer.grpc_endpoint, handle, 2.6, SMALL))
    await asyncio.sleep(0.5)
    paused_at = now_us()
    a.paused = True
    frames = [m.video for m in await recording if m.WhichOneof("body") == "video"]

    # Exact cadence at the frame clock: every pts step is one frame interval, none missing.
    steps = {q.pts_us - p.pts_us for p, q in itertools.pairwise(frames)}
    assert steps == {40_000}, steps
    assert len(frames) >= 55

    def kind(frame: media_pb2.VideoFrame) -> str:
        image = proto_to_i420(frame)
        centre, corner = yuv_at(image, 160, 90), yuv_at(image, 4, 4)
        if close_to(centre, a.yuv) and close_to(corner, a.yuv):
            return "a"
        if close_to(centre, b.yuv) and close_to(corner, b.yuv):
            return "b"
        if 35 <= corner[0] <= 70 and abs(corner[1] - 128) < 12:
            return "slate"
        return f"other{centre}"

    timeline = [(f.pts_us - paused_at, kind(f)) for f in frames]
    kinds = [k for _, k in timeline]
    assert not [k for k in kinds if k.startswith("other")], timeline
    # Held (a) until the hold time, then the slate, then the backup: in that order, once each.
    order = [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]
    assert order == ["a", "slate", "b"], order
    first_slate = next(t for t, k in timeline if k == "slate")
    first_backup = next(t for t, k in timeline if k == "b")
    # Against the pause time (pts follow the wall clock from the mixer's start, within a frame).
    assert 350_000 <= first_slate <= 900_000, first_slate
    assert 850_000 <= first_backup <= 1_500_000, first_backup
    assert all(k == "a" for t, k in timeline if t < 350_000)

    state = await command(bus, prod_id, Cmd(get=Cmd.Get()))
    assert state.showing[prod.sources[0].id] == f"backup:{prod.sources[1].id}"
    assert all(t.program for t in state.tally.sources)  # the backup is on air too

    # The source comes back: the program shows it live again.
    a.paused = False
    await next_video(
        mixer.grpc_endpoint, handle, SMALL, accept=lambda im: close_to(yuv_at(im, 9, 9), a.yuv)
    )
