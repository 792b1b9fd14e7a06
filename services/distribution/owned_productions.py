"""The productions this replica runs: each production by one replica of the service at a time
(docs/adr/0015).

A production's outputs share one program encoder, so the production is the unit that moves
between replicas as a whole; two replicas running it would push every stream twice. The steward
(services/common/steward.py) keeps a lease per production in `distribution-leases`:

* it takes the productions that have outputs stored (`Distributor.wanted`) and nobody runs, up
  to `max_productions` and its CPU budget (services/common/capacity.py), and loads each one's
  outputs from the key-value store; it unloads a production whose lease it lost (the specs stay
  for the replica that took it);
* `prod.<prod>.dist.cmd` is served by the queue group and applied by the production's owner: a
  command reaching another replica is forwarded to it, and a command for a production nobody
  runs makes the receiving replica take it first;
* a production left without outputs (its last one removed, or a command that added none) is let
  go at once, its lease released: an empty production costs nothing anywhere;
* on drain the replica stops taking commands, then stops each production and releases its lease,
  so that another replica takes it at once; a replica that dies loses its productions when their
  leases expire (`lease_seconds` + `lease_renew_seconds`).

Commands, loads and unloads of one production take turns (a lock per production), so a command
never acts on a production this replica is letting go, and a production is never loaded twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from services.common import capacity, errors
from services.common.bus import PREFIX, Bus, subject_token
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.steward import Steward
from services.distribution import metrics
from services.distribution.distributor import ID_PATTERN, Distributor
from services.distribution.settings import DistributionSettings

SERVICE = "distribution"
# Commands for every production: the production is named in the subject.
COMMAND_SUBJECT = PREFIX + "prod.*.dist.cmd"
# A production taken without outputs that none of its commands let go (its last spec was removed
# while this replica took it) is let go once it has stayed empty this long.
EMPTY_GRACE_S = 2.0
# Commands already received are answered before the leases go, within this time.
COMMANDS_DRAIN_S = 5.0

log = structlog.get_logger("distribution.owned")


def production_of(subj: str) -> str:
    """The production a `prod.<prod>.dist.cmd` subject names (refused unless a production id)."""
    prod = subject_token(subj, 1)
    if not ID_PATTERN.match(prod):
        raise errors.InvalidArgument(
            "a production id is 1-63 of a-z, 0-9, '-', '_'", field="production"
        )
    return prod


class OwnedProductions:
    """Takes, runs, hands over and lets go of productions; routes their commands to the owner."""

    def __init__(self, distributor: Distributor, bus: Bus, settings: DistributionSettings) -> None:
        self.distributor = distributor
        self.max_productions = settings.max_productions
        self.steward = Steward(
            bus,
            SERVICE,
            settings.instance,
            start=self._start,
            stop=self._stop,
            wanted=distributor.wanted,
            can_take=self._can_take,
            budget=capacity.budget(
                SERVICE, settings.capacity_cores, settings.unit_cores, settings.max_productions
            ),
            lease_seconds=settings.lease_seconds,
            renew_seconds=settings.lease_renew_seconds,
        )
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._letting_go: set[str] = set()  # dropped by a holder of its lock
        self._empty_since: dict[str, float] = {}
        self._subscriptions: list[Any] = []
        self._closing = False
        self._sweeper: asyncio.Task[None] | None = None
        self._gone_tasks: set[asyncio.Task[None]] = set()
        metrics.PRODUCTIONS_OWNED.set(0)

    @property
    def names(self) -> list[str]:
        """The productions this replica runs."""
        return self.steward.units

    async def open(self) -> None:
        """Begin taking productions and serving their commands."""
        await self.steward.open()
        self._subscriptions = await self.steward.serve(
            COMMAND_SUBJECT, dist.DistCommand, self.handle, production_of
        )
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="dist-empty-sweeper")

    async def close(self) -> None:
        """Answer the commands received, take no more, then stop every production and release
        its lease so that another replica takes it at once."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(subscription.drain(), COMMANDS_DRAIN_S)
        await self.steward.close()

    # -- commands ------------------------------------------------------------------------------

    async def handle(self, command: dist.DistCommand, subj: str) -> dist.DistReply:
        """A command of a production this replica runs (the steward routed it here)."""
        prod = production_of(subj)
        async with self._lock(prod):
            if not self.steward.owns(prod):  # let go while the command waited its turn
                raise errors.Unavailable(f"production {prod} is changing hands: retry")
            try:
                return await self.distributor.handle(command, subj)
            finally:
                if not self.distributor.runs(prod):
                    await self._let_go(prod)

    # -- the steward's side ----------------------------------------------------------------------

    def _can_take(self, _prod: str) -> bool:
        if self._closing:
            return False
        return not self.max_productions or len(self.steward.units) < self.max_productions

    async def _start(self, prod: str) -> None:
        async with self._lock(prod):
            self._empty_since.pop(prod, None)
            try:
                await self.distributor.load(prod)
            finally:
                metrics.PRODUCTIONS_OWNED.set(len(self.steward.units))

    async def _stop(self, prod: str) -> None:
        try:
            if prod in self._letting_go:  # its lock is held by the one letting it go
                await self.distributor.unload(prod)
            else:
                async with self._lock(prod):
                    await self.distributor.unload(prod)
        finally:
            metrics.PRODUCTIONS_OWNED.set(len(self.steward.units))

    async def _let_go(self, prod: str) -> None:
        """Drop a production left without outputs, its lock held by the caller."""
        self._letting_go.add(prod)
        try:
            await self.steward.drop(prod)
        finally:
            self._letting_go.discard(prod)
            self._empty_since.pop(prod, None)

    def production_deleted(self, prod: str, exists: Callable[[str], Awaitable[bool]]) -> None:
        """The mixer deleted `prod` (every replica hears it): its outputs stop and go, unless
        `exists(prod)` says it is back already (deleted and made again, as `baycast up` does)."""
        task = asyncio.create_task(self._production_gone(prod, exists), name=f"dist-gone-{prod}")
        self._gone_tasks.add(task)
        task.add_done_callback(self._gone_tasks.discard)

    async def _production_gone(self, prod: str, exists: Callable[[str], Awaitable[bool]]) -> None:
        async with self._lock(prod):
            if await exists(prod):
                return
            self._letting_go.add(prod)
            try:
                await self.distributor.forget(prod)
                if self.steward.owns(prod):
                    await self.steward.drop(prod)
            except Exception:
                log.exception("production_gone_failed", production=prod)
            finally:
                self._letting_go.discard(prod)
                self._empty_since.pop(prod, None)

    def _lock(self, prod: str) -> asyncio.Lock:
        lock = self._locks.get(prod)
        if lock is None:
            lock = self._locks[prod] = asyncio.Lock()
        return lock

    # -- productions taken empty -----------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.steward.renew_seconds)
            try:
                await self.sweep()
            except Exception:
                log.exception("sweep_failed")

    async def sweep(self) -> None:
        """Let go of the productions that have stayed empty for `EMPTY_GRACE_S`."""
        now = asyncio.get_running_loop().time()
        held = set(self.steward.units)
        for prod in list(self._empty_since):
            if prod not in held:
                del self._empty_since[prod]
        for prod in sorted(held):
            if self.distributor.runs(prod):
                self._empty_since.pop(prod, None)
                continue
            since = self._empty_since.setdefault(prod, now)
            lock = self._lock(prod)
            if now - since < EMPTY_GRACE_S or lock.locked():
                continue
            async with lock:
                if self.steward.owns(prod) and not self.distributor.runs(prod):
                    log.info("empty_production_let_go", production=prod)
                    await self._let_go(prod)
