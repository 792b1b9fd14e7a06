"""The program between hosts (ADR 0025): a real mixer and a real distribution that share no
memory. The mixer sends the 1080p program to distribution as H.264 at the link's rate, never as
raw frames, and what distribution pushes to nginx-rtmp carries the program's pictures.

Shared memory is turned off for the process (`shared_memory=False`, as BAYCAST_SHARED_MEMORY
does), so every subscription between the two services is one between hosts. The program's
source is fresh noise every frame, so the link's encoder spends its whole rate on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from prometheus_client import REGISTRY

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.gen.baycast.v1 import mixer_pb2
from services.common.handles import HandleDirectory
from services.distribution.service import DistributionService
from services.distribution.settings import DistributionSettings
from services.mixer.productions import ProductionStore
from services.mixer.service import MixerService
from services.mixer.settings import MixerSettings
from tests.integration.distribution.conftest import NoisyMediaServer
from tests.support.media_source import Card, FakeMediaServer
from tests.support.mixer import admin, close_to, command
from tests.support.nats import NatsServer
from tests.support.rtmp import RtmpServer, probe
from tests.support.secrets_key import session_key_file
from tests.support.services import running_service

pytestmark = pytest.mark.timeout(150)

W, H, FPS = 1920, 1080, 25
LINK_KBPS = 8000  # the mixer's default for a 1080p picture
FLAT = (145, 54, 34)  # the second source's colour
MEASURE_S = 5.0


def _sent(handle: str, kind: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "baycast_mixer_media_sent_bytes_total", {"handle": handle, "kind": kind}
        )
        or 0.0
    )


async def _dist(bus: Bus, prod: str, **kwargs: Any) -> dist.DistReply:
    return await bus.request(
        subject("prod", prod, "dist", "cmd"),
        dist.DistCommand(production=prod, **kwargs),
        dist.DistReply,
        timeout=10,
    )


async def _live(bus: Bus, prod: str) -> None:
    async with asyncio.timeout(30):
        while True:
            reply = await _dist(bus, prod, list=dist.ListOutputs())
            if any(o.status == dist.OUTPUT_STATUS_LIVE for o in reply.outputs):
                return
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def _sources(bus: Bus, prod: str) -> AsyncIterator[None]:
    noisy, flat = NoisyMediaServer(), FakeMediaServer()
    noisy.add(Card(f"source/{prod}-noise", (128, 128, 128), fps=FPS))
    flat.add(Card(f"source/{prod}-flat", FLAT, fps=FPS))
    directory = HandleDirectory(bus)
    for server in (noisy, flat):
        await server.start()
        await server.announce(directory)
    try:
        yield
    finally:
        for server in (noisy, flat):
            for card in server.cards.values():
                card.ended = True
            await server.stop()


async def test_the_program_crosses_hosts_as_h264_within_the_links_rate(
    nats_server: NatsServer, tmp_path: Path, rtmp: RtmpServer
) -> None:
    prod = f"link{os.getpid()}"
    program = f"prod/{prod}/program"
    bus = Bus(nats_server.url, "link-test")
    await bus.connect()
    try:
        async with (
            _sources(bus, prod),
            running_service(
                MixerService,
                MixerSettings,
                nats_server.url,
                shared_memory=False,
                lease_renew_seconds=0.3,
                unready_seconds=0.0,
                media_cache_dir=str(tmp_path / "media-cache"),
            ),
            running_service(
                DistributionService,
                DistributionSettings,
                nats_server.url,
                shared_memory=False,
                data_dir=str(tmp_path / "data"),
                video_bitrate_kbps=3000,
                x264_preset="ultrafast",
                secrets_key_file=session_key_file(),
            ),
        ):
            sources = [
                mixer_pb2.ProductionSource(id=f"{prod}-{s}", name=s) for s in ("noise", "flat")
            ]
            await admin(
                bus,
                mixer_pb2.ProductionCommand(
                    create=mixer_pb2.Production(
                        id=prod, width=W, height=H, fps=FPS, sources=sources
                    )
                ),
            )
            Cmd = mixer_pb2.MixerCommand
            await command(bus, prod, Cmd(cut=Cmd.Cut(source=f"{prod}-noise")))
            air = dist.OutputSpec(
                id="air",
                enabled=True,
                kind=dist.OUTPUT_KIND_RTMP,
                url=rtmp.app_url(),
                stream_key="link-key",
            )
            await _dist(bus, prod, add=dist.AddOutput(output=air))
            await _live(bus, prod)

            # A steady second of the program on the link, then the measured window.
            await asyncio.sleep(2.0)
            packets, frames = _sent(program, "packet"), _sent(program, "video")
            await asyncio.sleep(MEASURE_S)
            mbps = (_sent(program, "packet") - packets) * 8 / MEASURE_S / 1e6
            print(f"\nprogram link: {mbps:.2f} Mbit/s")
            assert _sent(program, "video") == frames == 0  # never a raw picture between hosts
            # Noise fills the link's budget; the rate control holds it (the target: 10 Mbit/s).
            assert 0.6 * LINK_KBPS / 1000 <= mbps <= 1.1 * LINK_KBPS / 1000, mbps

            await command(bus, prod, Cmd(cut=Cmd.Cut(source=f"{prod}-flat")))
            await asyncio.sleep(3.0)
            await _dist(bus, prod, stop=dist.OutputRef(id="air"))
            await _dist(bus, prod, remove=dist.OutputRef(id="air"))
    finally:
        with contextlib.suppress(Exception):
            store = await ProductionStore.open(bus)
            await store.delete(prod)
        await bus.drain()

    recording = rtmp.wait_recording("link-key")
    info = probe(recording)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (W, H)
    duration = float(info["format"]["duration"])
    assert abs(int(video["nb_read_frames"]) - duration * FPS) <= 3
    # The end of the push is the flat source: its colour came through both encodes.
    with av.open(str(recording)) as container:
        last = None
        for frame in container.decode(video=0):
            last = frame
    assert last is not None
    image = last.to_ndarray(format="yuv420p")
    y, u, v = image[:H], image[H : H + H // 4].reshape(H // 2, W // 2), image[H + H // 4 :]
    centre = (int(np.median(y)), int(np.median(u)), int(np.median(v.reshape(H // 2, W // 2))))
    assert close_to(centre, FLAT, 4), centre
