"""One owner for each unit of a service's work, and its commands routed to that owner.

A unit is what two replicas must never both run: distribution's outputs of a production (two
replicas would push the same stream twice), a production's graphics scene, monitoring's alerts.
The steward of each replica keeps a lease per unit it runs in the bucket `<service>-leases`
(services/common/leases.py, docs/adr/0015):

* every `renew_seconds` it renews its leases (a lease it lost: the unit is stopped at once), then
  takes the units that are wanted (`wanted()`: e.g. the productions that have outputs in the
  key-value state) and that nobody holds, up to what `can_take` allows;
* a unit is started from its key-value state by `start(unit)` and stopped by `stop(unit)`;
* a command about a unit reaches one member of the queue group (`serve`); when another replica
  owns the unit, the command is forwarded to it and its reply relayed; when nobody does, the
  receiving replica takes the unit first. So a command is applied by the unit's one owner, once
  (the command log sees to retries) and its reply says what that owner runs;
* on a clean stop a replica releases its leases so that others take its units at once; when it
  dies, they take them once the leases expire (`lease_seconds` + `renew_seconds`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from google.protobuf.message import Message

from services.common import errors
from services.common.bus import Bus, SubjectHandler, subject
from services.common.capacity import CpuBudget
from services.common.leases import Leases
from services.common.tasks import cancel_and_wait

DEFAULT_LEASE_SECONDS = 2.0
DEFAULT_RENEW_SECONDS = 0.5
UNIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_=.-]{0,127}")  # what a key-value key may be

Unit = Callable[[str], Awaitable[None]]

log = structlog.get_logger("steward")


class Steward:
    def __init__(
        self,
        bus: Bus,
        service: str,
        instance: str,
        *,
        start: Unit,
        stop: Unit,
        wanted: Callable[[], Awaitable[set[str]]],
        can_take: Callable[[str], bool] = lambda _unit: True,
        budget: CpuBudget | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        renew_seconds: float = DEFAULT_RENEW_SECONDS,
    ) -> None:
        self.bus = bus
        self.service = service
        self.instance = instance
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self._start = start
        self._stop = stop
        self._wanted = wanted
        self._can_take = can_take
        self.budget = budget
        self._leases: Leases | None = None
        self._held: dict[str, int] = {}  # unit -> revision of our lease
        self._locks: dict[str, asyncio.Lock] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._taking: dict[str, asyncio.Task[None]] = {}  # takes the renewal loop started

    def route_subject(self, instance: str) -> str:
        return subject("svc", self.service, instance, "route")

    @property
    def units(self) -> list[str]:
        """The units this replica runs."""
        return sorted(self._held)

    def owns(self, unit: str) -> bool:
        return unit in self._held

    async def open(self) -> None:
        """Open the leases and begin keeping them (call before serving)."""
        self._leases = await Leases.open(
            self.bus, f"{self.service}-leases", self.instance, self.lease_seconds
        )
        self._task = asyncio.create_task(self._loop(), name=f"{self.service}-steward")

    async def serve(
        self,
        pattern: str,
        request_type: type[Message],
        handler: SubjectHandler[Any],
        unit_of: Callable[[str], str],
    ) -> list[Any]:
        """Serve a unit's commands on `pattern`, each applied by the unit's owner."""

        async def owner_of(subj: str) -> str:
            return await self.route(unit_of(subj))

        return await self.bus.serve_owned(
            pattern,
            request_type,
            handler,
            queue=self.service,
            owner_of=owner_of,
            route_subject=self.route_subject(self.instance),
        )

    async def route(self, unit: str) -> str:
        """ "" when this replica runs `unit` (taking it if nobody does), else its owner's route."""
        assert self._leases is not None
        if not UNIT.fullmatch(unit):
            raise errors.InvalidArgument(f"{unit[:64]!r} cannot name a unit")
        if self._closing:
            raise errors.Unavailable(f"this {self.service} replica is stopping: retry")
        for _ in range(3):
            if unit in self._held:
                async with self._lock(unit):  # its start (restoring it) is over
                    pass
                if unit in self._held:
                    return ""
                continue
            owner = await self._leases.owner(unit)
            if owner and owner != self.instance:
                return self.route_subject(owner)
            if not self._may_take(unit):
                # A retry of the queue group reaches another replica, which may have room.
                raise errors.Unavailable(
                    f"this {self.service} replica is full and no other runs {unit}: retry"
                )
            if await self.take(unit):
                return ""
        raise errors.Unavailable(f"{unit} is changing hands: retry")

    async def take(self, unit: str) -> bool:
        """Take `unit` if nobody holds it and start it; whether this replica runs it now."""
        assert self._leases is not None
        async with self._lock(unit):
            if unit in self._held:
                return True
            if self._closing:
                return False
            revision = await self._leases.acquire(unit)
            if revision is None:
                return False
            self._held[unit] = revision
            if self.budget is not None:
                self.budget.took()
            log.info("unit_taken", service=self.service, unit=unit)
            try:
                await self._start(unit)
            except Exception:
                log.exception("unit_start_failed", service=self.service, unit=unit)
                await self._let_go(unit, release=True)
                return False
            return True

    async def drop(self, unit: str) -> None:
        """The unit is gone (its last output removed...): stop it and release its lease."""
        await self._let_go(unit, release=True)

    async def close(self) -> None:
        """Stop every unit and release the leases, so other replicas take them at once; take
        none from now on."""
        self._closing = True
        await cancel_and_wait([t for t in [self._task, *self._taking.values()] if t is not None])
        for unit in list(self._held):
            await self._let_go(unit, release=True)

    def _lock(self, unit: str) -> asyncio.Lock:
        return self._locks.setdefault(unit, asyncio.Lock())

    async def _let_go(self, unit: str, *, release: bool) -> None:
        revision = self._held.pop(unit, None)
        if revision is None:
            return
        try:
            await self._stop(unit)
        except Exception:
            log.exception("unit_stop_failed", service=self.service, unit=unit)
        if release and self._leases is not None:
            with contextlib.suppress(Exception):
                await self._leases.release(unit, revision)
        log.info("unit_let_go", service=self.service, unit=unit, released=release)

    async def _loop(self) -> None:
        while True:
            try:
                await self._round()
            except Exception as exc:
                log.warning("steward_round_failed", service=self.service, error=str(exc))
            await asyncio.sleep(self.renew_seconds)

    async def _round(self) -> None:
        assert self._leases is not None
        for unit, revision in list(self._held.items()):
            renewed = await self._leases.renew(unit, revision)
            if renewed is None:
                log.warning("lease_lost", service=self.service, unit=unit)
                await self._let_go(unit, release=False)
            elif unit in self._held:
                self._held[unit] = renewed
        if self.budget is not None:
            self.budget.sample(len(self._held))
        for unit in sorted(await self._wanted()):
            if unit not in self._held and unit not in self._taking and self._may_take(unit):
                # Started aside: a slow start must not hold up the renewal of the others.
                self._taking[unit] = asyncio.create_task(self._take_aside(unit))

    async def _take_aside(self, unit: str) -> None:
        try:
            await self.take(unit)
        except Exception as exc:
            log.warning("unit_take_failed", service=self.service, unit=unit, error=str(exc))
        finally:
            self._taking.pop(unit, None)

    def _may_take(self, unit: str) -> bool:
        """The service's own rule, and room in the CPU budget."""
        return self._can_take(unit) and (self.budget is None or self.budget.can_take())
