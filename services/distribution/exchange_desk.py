"""The exchange's way back to the stations, put together (docs/adr/0012): tally (TSL UMD v5 to
the hardware, `tally_out.py`), cues (`cues.py`), the station event streams
(`station_events.py`), and the commands on `prod.<prod>.exchange.cmd`.

`prod.<prod>.exchange.state` (ExchangeState: the production's viewers and open cues) goes out
when a cue changes and every 5 s for every production.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from aiohttp import web

from services.common import errors
from services.common.bus import PREFIX, Bus, subject
from services.common.credentials import CredentialBook
from services.common.exchange_shares import ExchangeShares
from services.common.gen.baycast.v1 import exchange_pb2, mixer_pb2
from services.common.kv_mirror import KvMirror
from services.distribution.cues import CueDesk, now_us
from services.distribution.station_events import StationEvents
from services.distribution.switcher_watch import SwitcherWatch
from services.distribution.tally_out import TallyOut

COMMAND_SUBJECT = PREFIX + "prod.*.exchange.cmd"
STATE_INTERVAL_S = 5.0

log = structlog.get_logger("exchange")

Viewers = Callable[[str], list[exchange_pb2.Viewer]]


class ExchangeDesk:
    def __init__(
        self,
        bus: Bus,
        credentials: CredentialBook,
        productions: KvMirror[mixer_pb2.Production],
        cues: CueDesk,
        base_url: Callable[[], str],
        viewers: Viewers,
        instance: str,
    ) -> None:
        self.bus = bus
        self.instance = instance
        # The other replicas' viewers, from their exchange state (services/common/exchange_shares).
        self.shares = ExchangeShares()
        self.credentials = credentials
        self.productions = productions
        self.cues = cues
        self.viewers = viewers
        self.watch = SwitcherWatch(bus, productions)
        self.tally_out = TallyOut(credentials.stations, self.watch)
        self.station_events = StationEvents(credentials, productions, self.watch, cues, base_url)
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._state_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        bus: Bus,
        credentials: CredentialBook,
        productions: KvMirror[mixer_pb2.Production],
        base_url: Callable[[], str],
        viewers: Viewers,
        instance: str,
    ) -> ExchangeDesk:
        cues = await CueDesk.open(bus, credentials.station, productions)
        return cls(bus, credentials, productions, cues, base_url, viewers, instance)

    def add_routes(self, app: web.Application) -> None:
        self.station_events.add_routes(app)

    async def start(self) -> None:
        self.station_events.start()
        self.tally_out.start()
        self.cues.on_change(self._cue_changed)
        await self.watch.start()
        await self.bus.subscribe(
            PREFIX + "prod.*.exchange.state", exchange_pb2.ExchangeState, self._share
        )
        await self.bus.serve_each(
            COMMAND_SUBJECT, exchange_pb2.ExchangeCommand, self.handle, queue="distribution"
        )
        self._state_task = asyncio.create_task(self._state_loop(), name="exchange-state")

    async def close(self) -> None:
        if self._state_task is not None:
            self._state_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._state_task
        await self.station_events.close()
        await self.tally_out.close()
        await self.watch.close()
        await self.cues.close()

    # -- commands ------------------------------------------------------------------------------

    async def handle(
        self, command: exchange_pb2.ExchangeCommand, subj: str
    ) -> exchange_pb2.ExchangeReply:
        """A command received on `baycast.v1.prod.<prod>.exchange.cmd`."""
        production = subj.removeprefix(PREFIX).split(".")[1]
        kind = command.WhichOneof("command")
        if kind == "cue":
            return exchange_pb2.ExchangeReply(cues=await self.cues.send(production, command.cue))
        if kind == "clear":
            cue = await self.cues.clear(production, command.clear.id)
            return exchange_pb2.ExchangeReply(cues=[cue])
        if kind == "cues":
            return exchange_pb2.ExchangeReply(cues=self.cues.open_cues(production))
        if kind == "viewers":
            return exchange_pb2.ExchangeReply(viewers=self.all_viewers(production))
        if kind == "feeds":
            return exchange_pb2.ExchangeReply(feeds=self.feeds(production, command.feeds.station))
        raise errors.InvalidArgument("the command is empty", field="command")

    def feeds(self, production: str, station: str) -> exchange_pb2.StationExchange:
        """What `station` gets back and may take from `production`."""
        if self.productions.get(production) is None:
            raise errors.NotFound(f"no production {production!r}", field="production")
        if self.credentials.station(station) is None:
            raise errors.NotFound(f"no station {station!r}", field="feeds.station")
        everything = self.station_events.feeds(station)
        mine = [f for f in everything.feeds if f.production == production]
        del everything.feeds[:]
        everything.feeds.extend(mine)
        return everything

    # -- exchange state ------------------------------------------------------------------------

    def state_changed(self, production: str) -> None:
        """Publish the production's ExchangeState soon (viewers or cues changed)."""
        self._dirty.add(production)
        self._wake.set()

    def _cue_changed(self, cue: exchange_pb2.Cue) -> None:
        self.state_changed(cue.production)

    def state(self, production: str) -> exchange_pb2.ExchangeState:
        """This replica's share: its own viewers (each replica publishes its own)."""
        return exchange_pb2.ExchangeState(
            production=production,
            viewers=self.viewers(production),
            cues=self.cues.open_cues(production),
            time_us=now_us(),
            instance=self.instance,
        )

    def all_viewers(self, production: str) -> list[exchange_pb2.Viewer]:
        """The production's viewers on every replica: ours now, the others' as they last said."""
        merged = self.shares.merged(production)
        mine = self.viewers(production)
        own = {v.id for v in mine}
        others = merged.viewers if merged is not None else []
        return [*mine, *(v for v in others if v.id not in own)]

    async def _share(self, state: exchange_pb2.ExchangeState, _subject: str) -> None:
        if state.instance != self.instance:
            self.shares.add(state)

    async def _state_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_all = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_all - loop.time()))
            self._wake.clear()
            if loop.time() >= next_all:
                due = set(self.productions.items()) | self._dirty
                next_all = loop.time() + STATE_INTERVAL_S
            else:
                due = set(self._dirty)
            self._dirty.clear()
            for production in sorted(due):
                try:
                    await self.bus.publish(
                        subject("prod", production, "exchange", "state"), self.state(production)
                    )
                except Exception as exc:  # NATS away: the next round tells again
                    log.debug("exchange_state_not_published", error=type(exc).__name__)
