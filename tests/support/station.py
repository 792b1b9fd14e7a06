"""Start ingest and stations in tests: a real ingest service, real aiortc publishers on loopback.

async with running_ingest(nats_url) as ingest:
    token = await add_station(ingest, "gz", "广州台")
    async with publishing(ingest, "gz", token, mode="packets") as publisher:
        frames = await collect(ingest, "source/gz", rendition, video=10, audio=25)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from services.common import ice
from services.common.bus import subject
from services.common.gen.baycast.v1 import control_pb2, ingest_pb2, media_pb2
from services.common.handles import HandleDirectory
from services.common.media import inline_video
from services.common.shared_memory import FrameGone
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from services.station.publisher import WhipPublisher
from services.station.testcard import TestCard
from services.station.tracks import CardLoop, CardVideoTrack, ToneAudioTrack
from tests.support.services import running_service

STATION_COMMANDS = subject("ingest", "station", "cmd")
_LOOPS: dict[tuple[str, str, int, int, int], CardLoop] = {}


@contextlib.asynccontextmanager
async def running_ingest(nats_url: str, **overrides: Any) -> AsyncIterator[IngestService]:
    """An ingest service in this event loop, ICE on 127.0.0.1 only, on free ports."""
    values: dict[str, Any] = {
        "ice_hosts": ("127.0.0.1",),
        "stats_interval_s": 0.5,
        "rtmp_addr": "127.0.0.1:0",
    }
    values.update(overrides)
    async with running_service(IngestService, IngestSettings, nats_url, **values) as service:
        yield service


def whip_url(ingest: IngestService, station: str) -> str:
    return f"http://127.0.0.1:{ingest.http.port}/whip/{station}"


async def station_command(
    ingest: IngestService, command: ingest_pb2.StationCommand
) -> ingest_pb2.StationReply:
    return await ingest.bus.request(STATION_COMMANDS, command, ingest_pb2.StationReply)


async def add_station(ingest: IngestService, station: str, name: str) -> str:
    """Create the station over NATS; returns its token."""
    reply = await station_command(
        ingest, ingest_pb2.StationCommand(add=ingest_pb2.AddStation(id=station, name=name))
    )
    return reply.token


def card_tracks(
    card: TestCard, mode: str, fps: int
) -> tuple[list[Any], bool]:  # (tracks, h264_only)
    if mode == "packets":
        key = (card.station_id, card.name, card.width, card.height, fps)
        if key not in _LOOPS:
            _LOOPS[key] = CardLoop.encode(card, fps)
        return _LOOPS[key].tracks(), True
    return [CardVideoTrack(card, fps), ToneAudioTrack(card)], False


@dataclass
class Publishing:
    publisher: WhipPublisher
    card: TestCard
    stop: asyncio.Event
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def publishing(
    ingest: IngestService,
    station: str,
    token: str,
    *,
    name: str = "",
    mode: str = "packets",
    size: tuple[int, int] = (1280, 720),
    fps: int = 25,
    url: str = "",
) -> AsyncIterator[Publishing]:
    """An aiortc station publishing the test card until the block ends (then DELETE)."""
    ice.configure(("127.0.0.1",))
    card = TestCard(station, name or station, *size)
    h264_only = card_tracks(card, mode, fps)[1]
    publisher = WhipPublisher(
        url or whip_url(ingest, station),
        token,
        lambda: card_tracks(card, mode, fps)[0],
        h264_only=h264_only,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(publisher.run(stop))
    try:
        yield Publishing(publisher, card, stop, task)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


async def wait_online(ingest: IngestService, station: str, timeout: float = 20.0) -> None:
    """Until `station`'s source has decoded video and announced itself online."""
    for _ in range(int(timeout / 0.05)):
        live = ingest.sources.live.get(station)
        if live is not None and live.hub.first_video.is_set() and live.state.online:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"source {station} not online after {timeout} s")


@dataclass
class Collected:
    video: list[media_pb2.VideoFrame] = field(default_factory=list)
    audio: list[media_pb2.AudioFrame] = field(default_factory=list)
    keepalives: int = 0


async def collect(
    ingest: IngestService,
    handle: str,
    rendition: media_pb2.Rendition,
    *,
    video: int = 0,
    audio: int = 0,
    timeout: float = 20.0,
) -> Collected:
    """Subscribe through the handle directory and gather frames until both counts are reached."""
    out = Collected()
    directory = HandleDirectory(ingest.bus)

    async def gather() -> None:
        async for frame in directory.frames(ingest.channels, handle, rendition, subscriber="test"):
            kind = frame.WhichOneof("body")
            if kind == "video":
                with contextlib.suppress(FrameGone):  # read too late: as if dropped
                    out.video.append(inline_video(frame.video))
            elif kind == "audio":
                out.audio.append(frame.audio)
            else:
                out.keepalives += 1
            if len(out.video) >= video and len(out.audio) >= audio:
                return

    await asyncio.wait_for(gather(), timeout)
    return out


def source_states(ingest: IngestService) -> dict[str, control_pb2.SourceState]:
    return {k: v.state for k, v in ingest.sources.live.items()}
