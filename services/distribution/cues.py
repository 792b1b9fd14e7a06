"""Cues to the stations and their acknowledgements (docs/adr/0012).

The director sends "30 秒后上场 / 30 s to air" to some (or all) of a production's stations,
optionally with a countdown; each station gets its own `Cue`, kept in the key-value bucket
`exchange-cues` under `<prod>.<id>` so that any replica and a restarted service know what the
stations were told. A station acknowledges a cue once (`POST /exchange/<station>/cues/<id>/ack`);
the director takes it back with `clear`.

Every send, acknowledgement and clear is published on `prod.<prod>.cue` (what the director's
tools follow) and written to the show's as-run log (`prod.<prod>.asrun`, the ASRUN stream). The
station event streams follow the bucket itself (`on_change`), so a change made on another
replica reaches this one's streams too. Cleared cues stay an hour (a late acknowledgement still
finds them), then go.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import Callable

import nats.js.errors
import structlog

from services.common import errors
from services.common.asrun import ensure_asrun_stream, write_asrun
from services.common.bus import Bus, acting_operator, encode, subject
from services.common.gen.baycast.v1 import exchange_pb2, ingest_pb2, mixer_pb2, rundown_pb2
from services.common.kv_mirror import KvMirror
from services.distribution import metrics
from services.distribution.station_feeds import is_source

BUCKET = "exchange-cues"
MAX_TEXT_CHARS = 200
MAX_COUNTDOWN_US = 24 * 3600 * 1_000_000
CUE_ID = re.compile(r"^[0-9a-f]{12}$")
CLIENT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
DEFAULT_ACK_BY = "station"
CLEARED_KEPT_US = 3600 * 1_000_000
PRUNE_INTERVAL_S = 600.0
UPDATE_ATTEMPTS = 10
ASRUN_TIMEOUT_S = 2.0
MAX_ASRUN_PENDING = 256

log = structlog.get_logger("cues")

CueListener = Callable[[exchange_pb2.Cue], None]


def now_us() -> int:
    return time.time_ns() // 1000


def cue_key(production: str, cue_id: str) -> str:
    return f"{production}.{cue_id}"


class CueDesk:
    """Sends, acknowledges, clears and lists cues."""

    def __init__(
        self,
        bus: Bus,
        mirror: KvMirror[exchange_pb2.Cue],
        station: Callable[[str], ingest_pb2.Station | None],
        productions: KvMirror[mixer_pb2.Production],
    ) -> None:
        self.bus = bus
        self.mirror = mirror
        self._station = station
        self.productions = productions
        self._asrun: set[asyncio.Task[None]] = set()
        self._pruner: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        bus: Bus,
        station: Callable[[str], ingest_pb2.Station | None],
        productions: KvMirror[mixer_pb2.Production],
    ) -> CueDesk:
        mirror = KvMirror(await bus.kv(BUCKET, exchange_pb2.Cue))
        await mirror.start()
        await ensure_asrun_stream(bus)
        desk = cls(bus, mirror, station, productions)
        desk._pruner = asyncio.create_task(desk._prune_loop(), name="cue-pruner")
        return desk

    async def close(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
        await self.mirror.close()
        pending = list(self._asrun)
        if pending:
            await asyncio.wait(pending, timeout=ASRUN_TIMEOUT_S)

    def on_change(self, listener: CueListener) -> None:
        """Call `listener(cue)` after each cue is sent, acknowledged or cleared (any replica)."""

        def on_entry(_key: str, value: exchange_pb2.Cue | None) -> None:
            if value is not None:
                listener(value)

        self.mirror.on_change(on_entry)

    # -- reads ---------------------------------------------------------------------------------

    def open_cues(self, production: str = "", station: str = "") -> list[exchange_pb2.Cue]:
        """Cues not cleared, of one production and/or station, newest last."""
        out = [
            cue
            for cue in self.mirror.values()
            if not cue.cleared
            and (not production or cue.production == production)
            and (not station or cue.station == station)
        ]
        return sorted(out, key=lambda c: (c.sent_at_us, c.id))

    def productions_with_cues(self) -> set[str]:
        return {cue.production for cue in self.mirror.values()}

    # -- commands ------------------------------------------------------------------------------

    async def send(
        self, production: str, command: exchange_pb2.ExchangeCommand.SendCue
    ) -> list[exchange_pb2.Cue]:
        """One cue per station named (or every station of the production); refuses, changing
        nothing, anything that cannot be shown."""
        prod = self.productions.get(production)
        if prod is None:
            raise errors.NotFound(f"no production {production!r}", field="production")
        text = command.text.strip()
        if not 1 <= len(text) <= MAX_TEXT_CHARS:
            raise errors.InvalidArgument(
                f"a cue's text has 1 to {MAX_TEXT_CHARS} characters", field="cue.text"
            )
        if not text.isprintable():
            raise errors.InvalidArgument(
                "a cue's text is one line of printable characters", field="cue.text"
            )
        now = now_us()
        if command.countdown_to_us and not (
            now < command.countdown_to_us <= now + MAX_COUNTDOWN_US
        ):
            raise errors.InvalidArgument(
                "the countdown must end in the future, within 24 h", field="cue.countdown_to_us"
            )
        stations = self._targets(prod, command)
        sent_by = acting_operator()
        cues = []
        for station in stations:
            cue = exchange_pb2.Cue(
                id=secrets.token_hex(6),
                production=production,
                station=station,
                text=text,
                countdown_to_us=command.countdown_to_us,
                sent_at_us=now,
                sent_by=sent_by,
            )
            key = cue_key(production, cue.id)
            revision = await self.mirror.bucket.create(key, cue)
            self.mirror.note(key, cue, revision)
            cues.append(cue)
            countdown = f" (countdown to {cue.countdown_to_us})" if cue.countdown_to_us else ""
            await self._announce(
                cue, "cue", f"cue {cue.id} to {station}: {text}{countdown}", sent_by
            )
        log.info("cues_sent", production=production, stations=stations, operator=sent_by)
        return cues

    def _targets(
        self, prod: mixer_pb2.Production, command: exchange_pb2.ExchangeCommand.SendCue
    ) -> list[str]:
        if command.all:
            if command.stations:
                raise errors.InvalidArgument(
                    "name stations or say all, not both", field="cue.stations"
                )
            targets = [s.id for s in prod.sources if self._station(s.id) is not None]
            if not targets:
                raise errors.InvalidArgument(
                    f"production {prod.id} has no stations among its sources", field="cue.all"
                )
            return targets
        if not command.stations:
            raise errors.InvalidArgument("name at least one station, or all", field="cue.stations")
        targets = []
        for station in command.stations:
            if not is_source(prod, station):
                raise errors.InvalidArgument(
                    f"{station!r} is not a source of production {prod.id}", field="cue.stations"
                )
            if self._station(station) is None:
                raise errors.InvalidArgument(
                    f"{station!r} is not a station (unknown or revoked)", field="cue.stations"
                )
            if station not in targets:
                targets.append(station)
        return targets

    async def clear(self, production: str, cue_id: str) -> exchange_pb2.Cue:
        key = cue_key(production, cue_id)
        if not CUE_ID.match(cue_id) or self.mirror.get(key) is None:
            raise errors.NotFound(f"no cue {cue_id!r} in production {production}", field="clear.id")

        def take_back(cue: exchange_pb2.Cue) -> exchange_pb2.Cue | None:
            if cue.cleared:
                return None
            out = exchange_pb2.Cue()
            out.CopyFrom(cue)
            out.cleared = True
            return out

        cue, changed = await self._update(key, take_back, field="clear.id")
        if changed:
            operator = acting_operator()
            await self._announce(
                cue, "cue-clear", f"cue {cue.id} to {cue.station} cleared", operator
            )
        return cue

    async def acknowledge(self, station: str, cue_id: str, by: str) -> exchange_pb2.Cue:
        """Record the station's acknowledgement once; a repeat changes nothing."""
        found = None
        if CUE_ID.match(cue_id):
            found = next(
                (c for c in self.mirror.values() if c.id == cue_id and c.station == station), None
            )
        if found is None:
            raise errors.NotFound(f"station {station} has no cue {cue_id!r}", field="id")
        when = now_us()

        def acknowledge(cue: exchange_pb2.Cue) -> exchange_pb2.Cue | None:
            if cue.acknowledged_at_us or cue.cleared:
                return None
            out = exchange_pb2.Cue()
            out.CopyFrom(cue)
            out.acknowledged_at_us = when
            out.acknowledged_by = by
            return out

        cue, changed = await self._update(cue_key(found.production, cue_id), acknowledge)
        if changed:
            await self._announce(
                cue, "cue-ack", f"cue {cue.id} acknowledged by {station} ({by})", ""
            )
        return cue

    async def _update(
        self,
        key: str,
        change: Callable[[exchange_pb2.Cue], exchange_pb2.Cue | None],
        field: str = "id",
    ) -> tuple[exchange_pb2.Cue, bool]:
        """Compare-and-swap `change` into the bucket: (the cue now, whether it changed)."""
        bucket = self.mirror.bucket
        for _ in range(UPDATE_ATTEMPTS):
            entry = await bucket.get(key)
            if entry is None:
                raise errors.NotFound(f"no cue {key}", field=field)
            value = change(entry.value)
            if value is None:
                self.mirror.note(key, entry.value, entry.revision)
                return entry.value, False
            try:
                revision = await bucket.store.update(key, encode(value), last=entry.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            self.mirror.note(key, value, revision)
            return value, True
        raise errors.Conflict(f"cue {key} changed under us {UPDATE_ATTEMPTS} times in a row")

    # -- what the director and the as-run log see -----------------------------------------------

    async def _announce(
        self, cue: exchange_pb2.Cue, action: str, detail: str, operator: str
    ) -> None:
        metrics.CUES.labels(cue.production, action).inc()
        try:
            await self.bus.publish(subject("prod", cue.production, "cue"), cue)
        except Exception as exc:  # the bucket has it; the streams follow the bucket
            log.warning("cue_not_published", production=cue.production, error=str(exc))
        entry = rundown_pb2.AsRunEntry(
            production=cue.production,
            time_us=now_us(),
            segment=-1,  # not a rundown segment's cue
            cue=action,
            detail=detail,
            ok=True,
            operator=operator,
        )
        if len(self._asrun) >= MAX_ASRUN_PENDING:
            log.warning("asrun_not_stored", production=cue.production, error="backlog")
            return
        # In the background: a command's reply must not wait for the log's acknowledgement.
        task = asyncio.create_task(self._store_asrun(entry), name="cue-asrun")
        self._asrun.add(task)
        task.add_done_callback(self._asrun.discard)

    async def _store_asrun(self, entry: rundown_pb2.AsRunEntry) -> None:
        await write_asrun(self.bus, entry, timeout=ASRUN_TIMEOUT_S)

    # -- housekeeping --------------------------------------------------------------------------

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_INTERVAL_S)
            with contextlib.suppress(Exception):
                await self.prune()

    async def prune(self) -> int:
        """Delete cues cleared and sent more than an hour ago; how many went."""
        limit = now_us() - CLEARED_KEPT_US
        gone = 0
        for key, cue in self.mirror.items().items():
            if cue.cleared and cue.sent_at_us < limit:
                await self.mirror.bucket.delete(key)
                gone += 1
        return gone
