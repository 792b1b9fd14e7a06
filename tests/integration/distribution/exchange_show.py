"""A small co-production for the exchange's tests, every part real: ingest with two stations
publishing over WHIP, a mixer running a production of them, the distribution service.

    async with exchange_show(nats_server.url, tmp_path, tally={"a": url}) as show:
        await show.cut(show.b)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import exchange_pb2, ingest_pb2, mixer_pb2
from services.distribution.service import DistributionService
from services.distribution.settings import DistributionSettings
from services.ingest.service import IngestService
from services.mixer.service import MixerService
from services.mixer.settings import MixerSettings
from tests.support.mixer import admin, command, unique
from tests.support.services import running_service
from tests.support.station import (
    add_station,
    publishing,
    running_ingest,
    station_command,
    wait_online,
)

CARD_SIZE = (640, 360)  # small: two publishers, ingest, a mixer and distribution share 2 cores


@dataclass
class ExchangeShow:
    prod: str
    a: str  # 广州台, on program at the start
    b: str  # 深圳台, on preview at the start
    tokens: dict[str, str]
    names: dict[str, str]
    bus: Bus
    ingest: IngestService
    mixer: MixerService
    dist: DistributionService

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.dist.http.port}"

    async def cut(self, source: str) -> mixer_pb2.MixerState:
        cmd = mixer_pb2.MixerCommand(cut=mixer_pb2.MixerCommand.Cut(source=source))
        return await command(self.bus, self.prod, cmd)

    async def exchange(
        self, cmd: exchange_pb2.ExchangeCommand, operator: str = ""
    ) -> exchange_pb2.ExchangeReply:
        return await self.bus.request(
            subject("prod", self.prod, "exchange", "cmd"),
            cmd,
            exchange_pb2.ExchangeReply,
            operator=operator,
        )


async def wait_until(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Poll `check()` until it is true; TimeoutError naming `what` after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.05)


def tally_of(state: mixer_pb2.MixerState, source: str) -> tuple[bool, bool]:
    entry = next(e for e in state.tally.sources if e.source == source)
    return entry.program, entry.preview


@contextlib.asynccontextmanager
async def exchange_show(
    nats_url: str, tmp_path: Path, tally: dict[str, str] | None = None
) -> AsyncIterator[ExchangeShow]:
    """`tally` maps "a"/"b" to the station's tally_url, set before distribution starts."""
    bus = Bus(nats_url, "exchange-test")
    await bus.connect()
    prod, a, b = unique("xq"), unique("gz"), unique("sz")
    names = {a: "广州台", b: "深圳台"}
    try:
        async with running_ingest(nats_url) as ingest:
            tokens = {s: await add_station(ingest, s, n) for s, n in names.items()}
            for key, url in (tally or {}).items():
                station = a if key == "a" else b
                await station_command(
                    ingest,
                    ingest_pb2.StationCommand(set=ingest_pb2.SetStation(id=station, tally_url=url)),
                )
            async with (
                publishing(ingest, a, tokens[a], name=names[a], size=CARD_SIZE),
                publishing(ingest, b, tokens[b], name=names[b], size=CARD_SIZE),
                running_service(
                    MixerService,
                    MixerSettings,
                    nats_url,
                    lease_renew_seconds=0.3,
                    unready_seconds=0.0,
                ) as mixer,
            ):
                await asyncio.gather(wait_online(ingest, a), wait_online(ingest, b))
                production = mixer_pb2.Production(
                    id=prod,
                    name="启航·大湾区",
                    width=1280,
                    height=720,
                    fps=25,
                    sources=[mixer_pb2.ProductionSource(id=s, name=n) for s, n in names.items()],
                )
                await admin(bus, mixer_pb2.ProductionCommand(create=production))
                try:
                    get = mixer_pb2.MixerCommand(get=mixer_pb2.MixerCommand.Get())
                    await command(bus, prod, get)
                    async with running_service(
                        DistributionService,
                        DistributionSettings,
                        nats_url,
                        data_dir=str(tmp_path / "dist"),
                        unready_seconds=0.0,
                    ) as dist:
                        yield ExchangeShow(prod, a, b, tokens, names, bus, ingest, mixer, dist)
                finally:
                    delete = mixer_pb2.ProductionCommand(
                        delete=mixer_pb2.ProductionCommand.Delete(id=prod)
                    )
                    with contextlib.suppress(Exception):
                        await admin(bus, delete)
    finally:
        await bus.drain()
