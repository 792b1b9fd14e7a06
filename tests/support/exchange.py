"""A whole exchange for tests: real ingest, mixer and distribution on one nats-server.

async with running_exchange(nats_url, data_dir, [("gz", "广州台"), ("sz", "深圳台")]) as x:
    await x.cut("gz")                      # tally: gz on program
    cue = await x.send_cue("gz", "30 秒后上场")
    acknowledged = await x.wait_cue(lambda c: c.id == cue.id and c.acknowledged_at_us > 0)

Distribution starts first, so that ingest can be told where stations reach it
(`exchange_url`, what `/station/<id>/config.json` says); the production's sources are the
stations, which is what makes them stations of the production for the exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import exchange_pb2, mixer_pb2
from services.distribution.service import DistributionService
from services.distribution.settings import DistributionSettings
from services.ingest.service import IngestService
from services.mixer.service import MixerService
from services.mixer.settings import MixerSettings
from tests.support.command_load import retried
from tests.support.mixer import admin, command
from tests.support.services import running_service
from tests.support.station import add_station, running_ingest

PRODUCTION_NAME = "启航·大湾区"


@dataclass
class Exchange:
    bus: Bus
    ingest: IngestService
    mixer: MixerService
    distribution: DistributionService
    production: str
    tokens: dict[str, str]
    cues: list[exchange_pb2.Cue] = field(default_factory=list)  # as seen on prod.<p>.cue

    @property
    def exchange_url(self) -> str:
        return self.distribution.base_url()

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.ingest.http.port}"

    async def switch(self, cmd: mixer_pb2.MixerCommand) -> mixer_pb2.MixerState:
        return await command(self.bus, self.production, cmd)

    async def cut(self, source: str) -> mixer_pb2.MixerState:
        return await self.switch(
            mixer_pb2.MixerCommand(cut=mixer_pb2.MixerCommand.Cut(source=source))
        )

    async def preview(self, source: str) -> mixer_pb2.MixerState:
        return await self.switch(
            mixer_pb2.MixerCommand(preview=mixer_pb2.MixerCommand.Preview(source=source))
        )

    async def talk(self, station: str, on: bool, source: str = "talk-director") -> None:
        await self.switch(
            mixer_pb2.MixerCommand(
                talk=mixer_pb2.MixerCommand.Talk(source=source, stations=[station], on=on)
            )
        )

    async def exchange_command(
        self, cmd: exchange_pb2.ExchangeCommand
    ) -> exchange_pb2.ExchangeReply:
        """An exchange command, retried for up to 10 s while distribution is not answering yet
        (a reply that never comes fails the call within 15 s, not the test's whole timeout)."""
        name = subject("prod", self.production, "exchange", "cmd")
        return await retried(
            lambda: self.bus.request(name, cmd, exchange_pb2.ExchangeReply, timeout=5),
            retry_for_s=10.0,
        )

    async def send_cue(self, station: str, text: str, countdown_to_us: int = 0) -> exchange_pb2.Cue:
        reply = await self.exchange_command(
            exchange_pb2.ExchangeCommand(
                cue=exchange_pb2.ExchangeCommand.SendCue(
                    stations=[station], text=text, countdown_to_us=countdown_to_us
                )
            )
        )
        return reply.cues[0]

    async def clear_cue(self, cue_id: str) -> None:
        await self.exchange_command(
            exchange_pb2.ExchangeCommand(clear=exchange_pb2.ExchangeCommand.ClearCue(id=cue_id))
        )

    async def wait_cue(
        self, accept: Callable[[exchange_pb2.Cue], bool], timeout: float = 10.0
    ) -> exchange_pb2.Cue:
        """The first cue event on `prod.<p>.cue` that `accept`s (seen before or after the call)."""
        for _ in range(int(timeout / 0.05)):
            for cue in self.cues:
                if accept(cue):
                    return cue
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no such cue after {timeout} s; seen: {self.cues}")


def production(
    prod_id: str, stations: list[tuple[str, str]], *, leveled: bool = True
) -> mixer_pb2.Production:
    """The production; `leveled=False` leaves its mixes at the sources' own levels (no loudness
    control), for tests that compare tones' levels in dBFS."""
    return mixer_pb2.Production(
        id=prod_id,
        name=PRODUCTION_NAME,
        width=1280,
        height=720,
        fps=25,
        sources=[mixer_pb2.ProductionSource(id=sid, name=name) for sid, name in stations],
        loudness=None if leveled else mixer_pb2.Loudness(enabled=False),
    )


@contextlib.asynccontextmanager
async def running_exchange(
    nats_url: str,
    data_dir: str,
    stations: list[tuple[str, str]],
    *,
    production_id: str = "show",
    others: list[tuple[str, str]] | None = None,
    distribution: dict[str, Any] | None = None,
    leveled: bool = True,
) -> AsyncIterator[Exchange]:
    """The services, `stations` added to ingest and made the production's sources, and
    `others` added to ingest only."""
    bus = Bus(nats_url, "exchange-test")
    await bus.connect()
    try:
        async with contextlib.AsyncExitStack() as stack:
            dist = await stack.enter_async_context(
                running_service(
                    DistributionService,
                    DistributionSettings,
                    nats_url,
                    data_dir=data_dir,
                    x264_preset="ultrafast",
                    **(distribution or {}),
                )
            )
            ingest = await stack.enter_async_context(
                running_ingest(nats_url, exchange_url=dist.base_url())
            )
            mixer = await stack.enter_async_context(
                running_service(
                    MixerService,
                    MixerSettings,
                    nats_url,
                    lease_renew_seconds=0.3,
                    drain_seconds=5.0,
                    unready_seconds=0.0,
                )
            )
            tokens = {
                sid: await add_station(ingest, sid, name)
                for sid, name in [*stations, *(others or [])]
            }
            x = Exchange(bus, ingest, mixer, dist, production_id, tokens)

            async def on_cue(cue: exchange_pb2.Cue, _subject: str) -> None:
                x.cues.append(cue)

            await bus.subscribe(subject("prod", production_id, "cue"), exchange_pb2.Cue, on_cue)
            await admin(
                bus,
                mixer_pb2.ProductionCommand(
                    create=production(production_id, stations, leveled=leveled)
                ),
            )
            await command(
                bus, production_id, mixer_pb2.MixerCommand(get=mixer_pb2.MixerCommand.Get())
            )
            try:
                yield x
            finally:
                with contextlib.suppress(Exception):
                    await admin(
                        bus,
                        mixer_pb2.ProductionCommand(
                            delete=mixer_pb2.ProductionCommand.Delete(id=production_id)
                        ),
                    )
    finally:
        await bus.drain()
