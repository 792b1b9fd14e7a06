"""A running production edited live (ProductionCommand.update): a late station joins and a station
leaves with no program gap; what would break the show is refused."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import pytest

from services.common import errors
from services.common.bus import Bus
from services.common.gen.baycast.v1 import media_pb2, mixer_pb2
from services.common.handles import HandleDirectory
from services.mixer.service import MixerService
from tests.integration.mixer.conftest import CreateProduction
from tests.support.media_source import FakeMediaServer
from tests.support.mixer import (
    admin,
    cards,
    close_to,
    command,
    frames,
    next_video,
    production,
    unique,
    yuv_at,
)

Cmd = mixer_pb2.MixerCommand
PCmd = mixer_pb2.ProductionCommand
FRAME_US = 40_000


async def watch_program(endpoint: str, handle: str, pts: list[int]) -> None:
    async for message in frames(endpoint, handle, media_pb2.Rendition(width=160, height=90)):
        if message.WhichOneof("body") == "video":
            pts.append(message.video.pts_us)


async def test_a_late_station_joins_and_another_leaves_with_no_program_gap(
    bus: Bus,
    media: FakeMediaServer,
    announce,
    mixer: MixerService,
    create_production: CreateProduction,
) -> None:
    prod_id = unique("edit")
    a, b, c = (media.add(card) for card in cards(prod_id, 3))
    await announce()
    await create_production(production(prod_id, [a, b]))  # a on program, b on preview
    sa, sb, sc = (card.name.removeprefix("source/") for card in (a, b, c))
    endpoint = mixer.grpc_endpoint
    pts: list[int] = []
    watcher = asyncio.create_task(watch_program(endpoint, f"prod/{prod_id}/program", pts))
    try:
        await next_video(
            endpoint,
            f"prod/{prod_id}/program",
            media_pb2.Rendition(width=320, height=180),
            accept=lambda im: close_to(yuv_at(im, 160, 90), a.yuv),
        )
        edit_from = len(pts)

        # The late station: with three sources the multiview's third tile is c's, live.
        three = production(prod_id, [a, b, c])
        reply = await admin(bus, PCmd(update=three))
        assert [s.id for s in reply.productions[0].sources] == [sa, sb, sc]
        await next_video(
            endpoint,
            f"prod/{prod_id}/multiview",
            media_pb2.Rendition(width=640, height=360, fps=5, no_audio=True),
            accept=lambda im: close_to(yuv_at(im, 532, 240), c.yuv),
            timeout=10,
        )
        assert await HandleDirectory(bus).resolve(f"prod/{prod_id}/mixminus/{sc}") == endpoint
        state = await command(bus, prod_id, Cmd(cut=Cmd.Cut(source=sc)))
        assert {t.source for t in state.tally.sources} == {sa, sb, sc}
        await next_video(
            endpoint,
            f"prod/{prod_id}/program",
            media_pb2.Rendition(width=320, height=180),
            accept=lambda im: close_to(yuv_at(im, 160, 90), c.yuv),
        )

        # What would break the show is refused and changes nothing.
        without_c = production(prod_id, [a, b])
        with pytest.raises(errors.Conflict, match="on program"):
            await admin(bus, PCmd(update=without_c))
        other_format = production(prod_id, [a, b, c], width=1920, height=1080)
        with pytest.raises(errors.InvalidArgument) as refused:
            await admin(bus, PCmd(update=other_format))
        assert refused.value.field == "update.width"

        # b leaves (it is on preview, not on program): its return's handle goes, preview moves.
        reply = await admin(bus, PCmd(update=production(prod_id, [a, c])))
        assert [s.id for s in reply.productions[0].sources] == [sa, sc]
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            state = await command(bus, prod_id, Cmd(get=Cmd.Get()))
            if {t.source for t in state.tally.sources} == {sa, sc}:
                break
            assert asyncio.get_running_loop().time() < deadline, state
            await asyncio.sleep(0.1)
        assert state.switcher.program == sc and state.switcher.preview in (sa, sc)
        assert await HandleDirectory(bus).resolve(f"prod/{prod_id}/mixminus/{sb}") is None
        with pytest.raises(errors.InvalidArgument, match="not a source"):
            await command(bus, prod_id, Cmd(cut=Cmd.Cut(source=sb)))

        # Throughout, the program lost no frame: one every 40 ms by its timestamps (a busy box
        # may make the clock skip a tick, never the edit a gap).
        edited = pts[edit_from:]
        span = (edited[-1] - edited[0]) // FRAME_US + 1
        gaps = [later - earlier for earlier, later in itertools.pairwise(edited)]
        assert len(edited) >= 10 and span - len(edited) <= 2, (span, len(edited))
        assert max(gaps) <= 2 * FRAME_US, max(gaps)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
