"""A command id is applied once whichever replica serves it (services/common/command_log.py)."""

from __future__ import annotations

import asyncio
import uuid

import nats.js.errors
import pytest

from services.common import command_log, errors
from services.common.bus import Bus
from services.common.command_log import CommandLog
from services.common.gen.baycast.v1 import control_pb2
from tests.support.nats import NatsServer


class Replica:
    """One member of a queue group: a bus with the shared log, counting what it applies."""

    def __init__(self, url: str, name: str, subject: str, delay_s: float = 0.0) -> None:
        self.bus = Bus(url, name)
        self.name = name
        self.subject = subject
        self.delay_s = delay_s
        self.applied: list[str] = []
        self.fail_next = False  # answer the next command with a passing failure

    async def start(self) -> Replica:
        await self.bus.connect()
        self.bus.shared_replies = CommandLog(self.bus, self.name)
        await self.bus.serve(self.subject, control_pb2.StatusRequest, self.handle, queue="q")
        return self

    async def handle(self, _request: control_pb2.StatusRequest) -> control_pb2.Heartbeat:
        self.applied.append(self.name)
        await asyncio.sleep(self.delay_s)
        if self.fail_next:
            self.fail_next = False
            # What a key-value write raises while its stream elects a leader.
            raise nats.js.errors.NoStreamResponseError()
        return control_pb2.Heartbeat(instance=self.name, time_us=len(self.applied))

    async def stop(self) -> None:
        await self.bus.drain()


async def test_a_retried_command_is_applied_once_by_whichever_replica(
    nats_server: NatsServer,
) -> None:
    subject = f"baycast.v1.test.{uuid.uuid4().hex[:8]}.cmd"
    replicas = [await Replica(nats_server.url, f"r{i}", subject).start() for i in range(3)]
    client = Bus(nats_server.url, "client")
    await client.connect()
    try:
        command_id = uuid.uuid4().hex
        replies = [
            await client.request(
                subject, control_pb2.StatusRequest(), control_pb2.Heartbeat, command_id=command_id
            )
            for _ in range(12)  # a queue group spreads these over the three replicas
        ]
        applied = [name for r in replicas for name in r.applied]
        assert len(applied) == 1
        assert {(r.instance, r.time_us) for r in replies} == {(applied[0], 1)}
        # Another id is another command.
        other = await client.request(
            subject, control_pb2.StatusRequest(), control_pb2.Heartbeat, command_id="other"
        )
        assert sum(len(r.applied) for r in replicas) == 2 and other.time_us >= 1
    finally:
        await client.drain()
        for r in replicas:
            await r.stop()


async def test_copies_arriving_together_wait_for_the_one_being_applied(
    nats_server: NatsServer,
) -> None:
    subject = f"baycast.v1.test.{uuid.uuid4().hex[:8]}.cmd"
    replicas = [
        await Replica(nats_server.url, f"s{i}", subject, delay_s=0.3).start() for i in range(2)
    ]
    client = Bus(nats_server.url, "client")
    await client.connect()
    try:
        command_id = uuid.uuid4().hex
        replies = await asyncio.gather(
            *(
                client.request(
                    subject,
                    control_pb2.StatusRequest(),
                    control_pb2.Heartbeat,
                    command_id=command_id,
                    timeout=10,
                )
                for _ in range(6)
            )
        )
        assert sum(len(r.applied) for r in replicas) == 1
        assert len({(r.instance, r.time_us) for r in replies}) == 1
    finally:
        await client.drain()
        for r in replicas:
            await r.stop()


async def test_while_the_record_is_out_of_reach_commands_wait_for_it(
    own_nats_server: NatsServer,
) -> None:
    """Applied unrecorded, a command's retry could be applied again by another replica: while
    the record cannot be reached the command is refused UNAVAILABLE and not applied, and once it
    is back (here: made again) the retry is applied, once."""
    subject = f"baycast.v1.test.{uuid.uuid4().hex[:8]}.cmd"
    replica = await Replica(own_nats_server.url, "alone", subject).start()
    client = Bus(own_nats_server.url, "client")
    await client.connect()
    try:
        await client.request(  # the first command opens the record
            subject, control_pb2.StatusRequest(), control_pb2.Heartbeat, command_id="first"
        )
        await replica.bus.nc.jetstream().delete_stream("KV_command-log")  # the record is gone
        with pytest.raises(errors.Unavailable, match="command log"):
            await client.request(
                subject, control_pb2.StatusRequest(), control_pb2.Heartbeat, command_id="x"
            )
        assert replica.applied == ["alone"]
        reply = await client.request(  # the retry: the record is opened (made) again
            subject, control_pb2.StatusRequest(), control_pb2.Heartbeat, command_id="x"
        )
        again = await client.request(
            subject, control_pb2.StatusRequest(), control_pb2.Heartbeat, command_id="x"
        )
        assert replica.applied == ["alone", "alone"] and reply == again
    finally:
        await client.drain()
        await replica.stop()


async def test_a_passing_failure_is_applied_again_on_retry(nats_server: NatsServer) -> None:
    """A state store between leaders fails the command with UNAVAILABLE, which is no answer to
    keep: the retry of that command id is applied (by any replica), and its reply is kept."""
    subject = f"baycast.v1.test.{uuid.uuid4().hex[:8]}.cmd"
    replicas = [await Replica(nats_server.url, f"u{i}", subject).start() for i in range(2)]
    for r in replicas:
        r.fail_next = True
    client = Bus(nats_server.url, "client")
    await client.connect()
    try:
        command_id = uuid.uuid4().hex
        outcomes: list[str] = []
        for _ in range(8):
            try:
                reply = await client.request(
                    subject,
                    control_pb2.StatusRequest(),
                    control_pb2.Heartbeat,
                    command_id=command_id,
                )
                outcomes.append(f"{reply.instance}:{reply.time_us}")
            except errors.Unavailable:
                outcomes.append("unavailable")
        failures = outcomes.count("unavailable")
        assert 1 <= failures <= 2 and outcomes[:failures] == ["unavailable"] * failures
        assert len(set(outcomes[failures:])) == 1  # applied once after the failures, then replayed
        assert sum(len(r.applied) for r in replicas) == failures + 1
    finally:
        await client.drain()
        for r in replicas:
            await r.stop()


async def test_a_claim_whose_replica_died_is_taken_over(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica that claimed a command and died before answering leaves a pending claim; after
    STALE_CLAIM_S the retry is applied by another replica."""
    monkeypatch.setattr(command_log, "STALE_CLAIM_S", 0.5)
    subject = f"baycast.v1.test.{uuid.uuid4().hex[:8]}.cmd"
    dead = Bus(nats_server.url, "dead")
    await dead.connect()
    replica = await Replica(nats_server.url, "alive", subject).start()
    client = Bus(nats_server.url, "client")
    await client.connect()
    try:
        command_id = uuid.uuid4().hex
        assert await CommandLog(dead, "dead").begin(subject, command_id) is None  # claimed
        reply = await client.request(
            subject, control_pb2.StatusRequest(), control_pb2.Heartbeat, command_id=command_id
        )
        assert replica.applied == ["alive"] and reply.instance == "alive"
    finally:
        await client.drain()
        await replica.stop()
        await dead.drain()
