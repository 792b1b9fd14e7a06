"""One owner per unit, commands routed to it (services/common/steward.py), on a real nats-server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from services.common import errors
from services.common.bus import Bus, decode, subject, subject_token
from services.common.command_log import CommandLog
from services.common.gen.baycast.v1 import control_pb2
from services.common.steward import Steward
from tests.support.nats import NatsServer

LEASE_S = 1.0
RENEW_S = 0.25


class Replica:
    """A replica of a service whose units are productions: it records what it runs and which
    commands it applied."""

    def __init__(self, url: str, service: str, name: str, wanted: set[str]) -> None:
        self.bus = Bus(url, f"{service}-{name}")
        self.name = name
        self.running: set[str] = set()
        self.applied: list[tuple[str, str]] = []
        self.wanted = wanted

        async def want() -> set[str]:
            return set(self.wanted)

        self.steward = Steward(
            self.bus,
            service,
            name,
            start=self._start,
            stop=self._stop,
            wanted=want,
            lease_seconds=LEASE_S,
            renew_seconds=RENEW_S,
        )
        self.pattern = f"baycast.v1.prod.*.{service}.cmd"

    async def _start(self, unit: str) -> None:
        self.running.add(unit)

    async def _stop(self, unit: str) -> None:
        self.running.discard(unit)

    async def handle(self, _request: control_pb2.StatusRequest, subj: str) -> control_pb2.Heartbeat:
        unit = subject_token(subj, 1)
        assert unit in self.running  # applied only where the unit runs
        self.applied.append((unit, self.name))
        return control_pb2.Heartbeat(instance=self.name, service=unit)

    async def start(self) -> Replica:
        await self.bus.connect()
        self.bus.shared_replies = CommandLog(self.bus, self.name)
        await self.steward.open()
        await self.steward.serve(
            self.pattern, control_pb2.StatusRequest, self.handle, lambda s: subject_token(s, 1)
        )
        return self

    async def stop(self) -> None:
        await self.steward.close()
        await self.bus.drain()

    async def die(self) -> None:
        """As a killed pod: no release, no goodbye."""
        assert self.steward._task is not None
        self.steward._task.cancel()
        await self.bus.nc.close()


async def until(check: Callable[[], bool | Awaitable[bool]], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        outcome = check()
        if outcome if isinstance(outcome, bool) else await outcome:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


async def test_each_unit_has_one_owner_and_its_commands_reach_it(nats_server: NatsServer) -> None:
    service = f"svc{uuid.uuid4().hex[:6]}"
    wanted = {"alpha", "beta", "gamma", "delta"}
    replicas = [await Replica(nats_server.url, service, f"r{i}", wanted).start() for i in range(2)]
    client = Bus(nats_server.url, "client")
    await client.connect()
    try:
        await until(lambda: set().union(*(r.running for r in replicas)) == wanted, 5)
        assert not (replicas[0].running & replicas[1].running)  # never two owners
        for unit in sorted(wanted) * 3:  # the queue group spreads these over both replicas
            reply = await client.request(
                subject("prod", unit, service, "cmd"),
                control_pb2.StatusRequest(),
                control_pb2.Heartbeat,
            )
            owner = next(r.name for r in replicas if unit in r.running)
            assert (reply.instance, reply.service) == (owner, unit)
        assert sum(len(r.applied) for r in replicas) == 12
        # A unit nobody runs yet is taken by the replica a command for it reaches.
        reply = await client.request(
            subject("prod", "epsilon", service, "cmd"),
            control_pb2.StatusRequest(),
            control_pb2.Heartbeat,
        )
        assert [r.name for r in replicas if "epsilon" in r.running] == [reply.instance]
    finally:
        await client.drain()
        for r in replicas:
            await r.stop()


async def test_a_dead_owners_units_move_within_the_lease(nats_server: NatsServer) -> None:
    service = f"svc{uuid.uuid4().hex[:6]}"
    wanted = {"alpha", "beta", "gamma"}
    a = await Replica(nats_server.url, service, "a", wanted).start()
    await until(lambda: a.running == wanted, 5)
    b = await Replica(nats_server.url, service, "b", wanted).start()
    client = Bus(nats_server.url, "client")
    await client.connect()
    try:
        # Forwarded: b receives some of these and relays a's reply.
        for _ in range(4):
            reply = await client.request(
                subject("prod", "beta", service, "cmd"),
                control_pb2.StatusRequest(),
                control_pb2.Heartbeat,
            )
            assert reply.instance == "a"
        assert b.running == set() and len(a.applied) == 4
        await a.die()
        moved = await until(lambda: b.running == wanted, 5)
        assert moved <= LEASE_S + 2 * RENEW_S + 0.5
        reply = await client.request(
            subject("prod", "gamma", service, "cmd"),
            control_pb2.StatusRequest(),
            control_pb2.Heartbeat,
        )
        assert reply.instance == "b"
        # A clean stop hands the units over at once.
        c = await Replica(nats_server.url, service, "c", wanted).start()
        await b.stop()
        handed = await until(lambda: c.running == wanted, 5)
        assert handed <= 2 * RENEW_S + 0.5
        await c.stop()
    finally:
        await client.drain()
        await b.bus.drain()


async def test_a_full_replica_refuses_what_it_cannot_carry(nats_server: NatsServer) -> None:
    service = f"svc{uuid.uuid4().hex[:6]}"
    full = Replica(nats_server.url, service, "full", set())
    full.steward._can_take = lambda _unit: False
    await full.start()
    client = Bus(nats_server.url, "client")
    await client.connect()
    try:
        try:
            await client.request(
                subject("prod", "alpha", service, "cmd"),
                control_pb2.StatusRequest(),
                control_pb2.Heartbeat,
            )
            raise AssertionError("a full replica took a unit")
        except errors.Unavailable as exc:
            assert "full" in exc.message
        assert full.running == set()
    finally:
        await client.drain()
        await full.stop()


async def test_a_command_that_cannot_apply_moves_no_unit(nats_server: NatsServer) -> None:
    service = f"svc{uuid.uuid4().hex[:6]}"
    replica = await Replica(nats_server.url, service, "r", set()).start()
    client = Bus(nats_server.url, "client")
    await client.connect()
    try:
        reply = await client.nc.request(
            subject("prod", "alpha", service, "cmd", "_"), b'{"nonsense": 1}', timeout=5
        )
        error = decode(reply.data, control_pb2.ErrorReply)
        assert (error.code, error.field) == ("INVALID_ARGUMENT", "nonsense")
        reply = await client.nc.request(
            f"baycast.v1.prod.caf\u00e9.{service}.cmd._", b"{}", timeout=5
        )
        assert decode(reply.data, control_pb2.ErrorReply).code == "INVALID_ARGUMENT"
        assert replica.running == set() and replica.steward.units == []
    finally:
        await client.drain()
        await replica.stop()
