"""Between hosts a mixer can take its sources' boxes as H.264 (BAYCAST_MIXER_SOURCE_LINK=h264).

A real ingest with a station publishing its test card over WHIP and a real mixer, neither using
shared memory (as in two pods): ingest encodes the box the mixer asks for and sends packets,
never a raw picture, at the link's rate for the box's size; the program carries the station's
picture, decoded in the mixer, at the station's colours and capture times.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.common.bus import Bus
from services.common.gen.baycast.v1 import media_pb2, mixer_pb2
from services.common.video_link import link_kbps
from services.mixer.service import MixerService
from services.mixer.settings import MixerSettings
from tests.support.mixer import admin, card_on_program, command, frames, unique
from tests.support.nats import NatsServer
from tests.support.services import running_service
from tests.support.station import add_station, publishing, running_ingest, wait_online

pytestmark = pytest.mark.timeout(150)

STATION = "link-a"
W, H, FPS = 1280, 720, 25
WINDOW_S = 4.0


def _sent(kind: str) -> float:
    labels = {"handle": f"source/{STATION}", "kind": kind}
    return REGISTRY.get_sample_value("baycast_ingest_media_sent_bytes_total", labels) or 0.0


async def test_a_mixer_on_another_host_takes_its_sources_boxes_compressed(
    nats_server: NatsServer, bus: Bus, tmp_path: Path
) -> None:
    prod = unique("srclink")
    async with (
        running_ingest(nats_server.url, shared_memory=False) as ingest,
        running_service(
            MixerService,
            MixerSettings,
            nats_server.url,
            shared_memory=False,
            source_link="h264",
            lease_renew_seconds=0.3,
            unready_seconds=0.0,
            media_cache_dir=str(tmp_path / "media-cache"),
        ) as mixer,
    ):
        token = await add_station(ingest, STATION, "链路台")
        async with publishing(ingest, STATION, token, size=(640, 360)) as station:
            await wait_online(ingest, STATION)
            production = mixer_pb2.Production(
                id=prod,
                width=W,
                height=H,
                fps=FPS,
                sources=[mixer_pb2.ProductionSource(id=STATION, name="链路台")],
            )
            await admin(bus, mixer_pb2.ProductionCommand(create=production))
            Cmd = mixer_pb2.MixerCommand
            await command(bus, prod, Cmd(cut=Cmd.Cut(source=STATION)), retry_for=20)
            await card_on_program(mixer.grpc_endpoint, prod, station.card, W, H)

            hub = ingest.sources.hub(STATION)
            assert hub is not None
            boxes = [s for s in hub.fanout.subscriptions() if s.video is not None]
            assert [(s.link.width, s.link.height, s.link.fps) for s in boxes if s.link] == [
                (W, H, FPS)
            ]
            assert all(s.link is not None for s in boxes)
            packets, raw = _sent("packet"), _sent("video")
            captures: list[int] = []

            async def watch() -> None:
                async for message in frames(mixer.grpc_endpoint, f"prod/{prod}/program"):
                    if message.WhichOneof("body") == "video":
                        captures.append(message.video.capture_time_us)

            watcher = asyncio.create_task(watch())
            await asyncio.sleep(WINDOW_S)
            watcher.cancel()
            mbps = (_sent("packet") - packets) * 8 / WINDOW_S / 1e6
            target = link_kbps(media_pb2.Compression(codec=media_pb2.VIDEO_CODEC_H264), W, H)
            # Never a raw picture; at most the link's rate for a 720p box (3.6 Mbit/s, against
            # 276 Mbit/s raw), and something every frame.
            assert _sent("video") == raw == 0
            assert 0.05 < mbps <= target / 1000 * 1.1, mbps
            assert len(captures) >= WINDOW_S * FPS * 0.9
            # The station's pictures, not one held: 79-100 % of the program's frames are new ones
            # (fewer when the suite loads the host: the mixer then shows a picture twice).
            assert len(set(captures)) >= len(captures) * 0.7
            assert sorted(captures) == captures
