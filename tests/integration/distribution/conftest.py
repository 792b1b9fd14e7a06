"""Fixtures for distribution tests: a program producer, the service, an RTMP receiver."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.gen.baycast.v1 import media_pb2
from services.common.handles import HandleDirectory
from services.common.media import i420_to_proto, pcm_to_proto
from services.distribution.service import DistributionService
from services.distribution.settings import DistributionSettings
from tests.support.media_source import SAMPLE_RATE, Card, FakeMediaServer
from tests.support.nats import NatsServer
from tests.support.rtmp import RtmpServer
from tests.support.secrets_key import session_key_file
from tests.support.services import running_service

WIDTH, HEIGHT, FPS = 640, 360, 25
PROGRAM_YUV = (81, 90, 240)  # a red card
_ids = itertools.count()


@dataclass
class Show:
    """One production's program producer, the distribution service, and a bus to command it."""

    prod: str
    card: Card
    media: FakeMediaServer
    service: DistributionService
    bus: Bus
    data_dir: Path
    states: list[dist.OutputState] = field(default_factory=list)

    async def command(self, **kwargs: Any) -> dist.DistReply:
        return await self.bus.request(
            subject("prod", self.prod, "dist", "cmd"),
            dist.DistCommand(production=self.prod, **kwargs),
            dist.DistReply,
            timeout=10,
        )

    async def add(self, **spec: Any) -> dist.OutputState:
        reply = await self.command(add=dist.AddOutput(output=dist.OutputSpec(enabled=True, **spec)))
        return reply.outputs[0]

    async def state(self, output_id: str) -> dist.OutputState:
        reply = await self.command(list=dist.ListOutputs())
        return next(s for s in reply.outputs if s.id == output_id)

    async def wait_status(
        self, output_id: str, status: int, timeout: float = 20.0
    ) -> dist.OutputState:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            state = await self.state(output_id)
            if state.status == status:
                return state
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{output_id} is {state} after {timeout} s")
            await asyncio.sleep(0.1)

    def output(self, output_id: str) -> Any:
        return self.service.distributor.productions[self.prod].outputs[output_id]


class NoisyMediaServer(FakeMediaServer):
    """Pictures of fresh noise every frame: the encoder spends its whole bitrate on them."""

    async def Subscribe(
        self, request: media_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[media_pb2.MediaFrame]:
        card = self.cards[request.handle]
        width, height = request.rendition.width or WIDTH, request.rendition.height or HEIGHT
        rng = np.random.default_rng(7)
        pictures = [
            rng.integers(16, 235, (height * 3 // 2, width), dtype=np.uint8) for _ in range(8)
        ]
        per_frame = SAMPLE_RATE // card.fps
        start = asyncio.get_running_loop().time()
        for seq in itertools.count():
            await asyncio.sleep(
                max(0.0, start + seq / card.fps - asyncio.get_running_loop().time())
            )
            pts = seq * 1_000_000 // card.fps
            yield media_pb2.MediaFrame(
                video=i420_to_proto(pictures[seq % len(pictures)], pts_us=pts, sequence=seq)
            )
            pcm = card.audio(seq * per_frame, per_frame, 2)
            yield media_pb2.MediaFrame(audio=pcm_to_proto(pcm, SAMPLE_RATE, pts_us=pts))


@pytest.fixture
def rtmp(tmp_path: Path) -> Iterator[RtmpServer]:
    server = RtmpServer(tmp_path / "rtmp").start()
    yield server
    server.cleanup()


@pytest.fixture
async def show(
    nats_server: NatsServer, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Show]:
    prod = f"dist{os.getpid()}x{next(_ids)}"
    overrides: dict[str, Any] = dict(getattr(request, "param", {}))
    noisy = overrides.pop("noisy", False)
    bus = Bus(nats_server.url, "dist-test")
    await bus.connect()
    media = NoisyMediaServer() if noisy else FakeMediaServer()
    card = media.add(Card(f"prod/{prod}/program", PROGRAM_YUV, fps=FPS))
    await media.start()
    await media.announce(HandleDirectory(bus))
    data_dir = tmp_path / "data"
    settings: dict[str, Any] = {
        "data_dir": str(data_dir),
        "width": WIDTH,
        "height": HEIGHT,
        "fps": FPS,
        "video_bitrate_kbps": 600,
        "audio_bitrate_kbps": 64,
        "x264_preset": "ultrafast",
        "hls_segment_s": 2.0,
        "secrets_key_file": session_key_file(),
        **overrides,
    }
    events: list[dist.OutputState] = []

    async def on_state(state: dist.OutputState, _subject: str) -> None:
        events.append(state)

    await bus.subscribe(
        subject("prod", prod, "dist", "output") + ".*.state", dist.OutputState, on_state
    )
    async with running_service(
        DistributionService, DistributionSettings, nats_server.url, **settings
    ) as service:
        show = Show(prod, card, media, service, bus, data_dir, events)
        yield show
        await remove_outputs(show)
    await media.stop()
    await bus.drain()


async def remove_outputs(show: Show) -> None:
    """Take the test's outputs out of the shared `dist_outputs` bucket: a distribution service
    started by a later test restores every output it finds there and would run these too."""
    with contextlib.suppress(Exception):
        reply = await show.command(list=dist.ListOutputs())
        for output in reply.outputs:
            with contextlib.suppress(Exception):
                await show.command(remove=dist.OutputRef(id=output.id))
