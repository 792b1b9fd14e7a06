"""Alerts raised once: one monitoring replica at a time is on duty and publishes them.

Every replica follows the bus and watches the programs, judging everything into its own alert
book, so that any of them can take over with its judgement formed. The duty is one unit,
`alerts`, held through a steward (services/common/steward.py, docs/adr/0015): the replica holding
it publishes alert events and program loudness, and answers `monitoring.alerts` (a request that
reaches another replica through the queue group is forwarded to it); the others publish nothing.
A killed replica's duty moves when its lease expires (about 2.5 s); a draining one hands it over
at once.

What the replica on duty has published as firing is stored after each burst of events in the
key-value bucket `monitoring-alerts` (key `firing`). Every replica's book starts from it, and the
replica that comes on duty reads it again and reconciles (AlertBook.take_over): an alert the last
replica raised is not raised again and keeps its id, and one that is over is cleared by this
replica's detector within the condition's clear time. Limits: an event published by a replica
that died before it stored the record (a few milliseconds) may be published once more by the
next; a replica that lost its lease without knowing it yet (a frozen process) may overwrite the
record once, until the replica on duty stores it again at its next event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from services.common.bus import Bus, KvBucket, subject
from services.common.gen.baycast.v1 import monitoring_pb2
from services.common.steward import Steward
from services.monitoring.alerts import AlertBook, AlertPublisher
from services.monitoring.settings import MonitoringSettings

UNIT = "alerts"
RECORD_BUCKET = "monitoring-alerts"
RECORD_KEY = "firing"
# On a clean stop, how long the events still queued may take before the duty is handed over,
# and how long the requests already delivered may take before the queue group is left.
FLUSH_S = 2.0
LEAVE_QUEUE_S = 2.0

log = structlog.get_logger("monitoring.duty")


class FiringRecord:
    """The alerts the replica on duty has published as firing, for the next one on duty."""

    def __init__(self, bucket: KvBucket[monitoring_pb2.AlertList]) -> None:
        self.bucket = bucket

    @classmethod
    async def open(cls, bus: Bus) -> FiringRecord:
        return cls(await bus.kv(RECORD_BUCKET, monitoring_pb2.AlertList))

    async def load(self) -> list[monitoring_pb2.Alert]:
        entry = await self.bucket.get(RECORD_KEY)
        return list(entry.value.alerts) if entry is not None else []

    async def store(self, alerts: Iterable[monitoring_pb2.Alert]) -> None:
        ordered = sorted(alerts, key=lambda a: a.raised_at_us)
        await self.bucket.put(RECORD_KEY, monitoring_pb2.AlertList(alerts=ordered))


class AlertDuty:
    def __init__(
        self,
        bus: Bus,
        settings: MonitoringSettings,
        book: AlertBook,
        publisher: AlertPublisher,
        *,
        adopt: Callable[[], None],
        stopping: asyncio.Event,
    ) -> None:
        """`adopt`: the detectors take up the alerts the book holds that they did not raise."""
        self.bus = bus
        self.book = book
        self.publisher = publisher
        self.adopt = adopt
        self.record: FiringRecord | None = None
        self._closing = False
        self._subs: list[Any] = []
        self.steward = Steward(
            bus,
            "monitoring",
            settings.instance,
            start=self._take,
            stop=self._leave,
            wanted=self._wanted,
            # A stopping replica hands the duty over and does not take it back.
            can_take=lambda _unit: not stopping.is_set(),
            lease_seconds=settings.lease_seconds,
            renew_seconds=settings.lease_renew_seconds,
        )

    @property
    def on_duty(self) -> bool:
        return self.publisher.on_duty

    async def open(self) -> None:
        """Start the book from the published firing set; then hold the duty or stand by."""
        self.record = await FiringRecord.open(self.bus)
        self.book.seed(await self.record.load())
        self.adopt()
        self.publisher.store = self.record.store
        await self.steward.open()
        self._subs = await self.steward.serve(
            subject("monitoring", "alerts"),
            monitoring_pb2.AlertsRequest,
            self._list,
            unit_of=lambda _subject: UNIT,
        )

    async def close(self) -> None:
        """Hand the duty over: the queue group is left (requests go to the other replicas),
        what is queued is sent and stored, then the lease released."""
        self._closing = True
        if self._subs:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(LEAVE_QUEUE_S):
                    await self._subs[0].drain()
        await self.steward.close()

    async def _wanted(self) -> set[str]:
        return {UNIT}

    async def _take(self, _unit: str) -> None:
        assert self.record is not None
        published = await self.record.load()
        # No await from here on: the book and the publisher switch together.
        self.publisher.start_duty(published)
        self.book.take_over(published)
        self.adopt()
        log.info("alerts_on_duty", firing=len(self.book.active), inherited=len(published))

    async def _leave(self, _unit: str) -> None:
        self.publisher.on_duty = False
        if self._closing:
            await self.publisher.flush(FLUSH_S)
        else:  # the lease was lost: another replica is on duty and publishes now
            self.publisher.drop()
        log.info("alerts_off_duty", handed_over=self._closing)

    async def _list(
        self, _request: monitoring_pb2.AlertsRequest, _subject: str
    ) -> monitoring_pb2.AlertList:
        return monitoring_pb2.AlertList(alerts=self.book.firing())
