"""State on a three-server JetStream cluster: buckets and streams at the cluster's size, commands
that ride out leader elections (BAYCAST_JETSTREAM_REPLICAS, services/common/bus.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from services.common import errors
from services.common.asrun import ASRUN_STREAM, ensure_asrun_stream
from services.common.bus import Bus, KvBucket
from services.common.command_log import CommandLog
from services.common.gen.baycast.v1 import control_pb2
from tests.support import command_load
from tests.support.nats import NatsCluster, NatsServer

# nats-server's raft elects a new stream leader 4-9 s after its leader dies; a command retried for
# this long (as `baycast ctl` retries) rides it out.
RETRY_FOR_S = 30.0
COMMAND_EVERY_S = 0.05


@pytest.fixture
def cluster() -> Iterator[NatsCluster]:
    nats_cluster = NatsCluster().start()
    yield nats_cluster
    nats_cluster.cleanup()


async def connected(url: str, name: str, replicas: int) -> Bus:
    bus = Bus(url, name, replicas=replicas)
    await bus.connect()
    return bus


async def open_when_ready(bus: Bus, bucket: str) -> KvBucket[control_pb2.Heartbeat]:
    """The cluster's meta leader is elected a moment after the servers start."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return await bus.kv(bucket, control_pb2.Heartbeat)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def replicas_of(bus: Bus, stream: str) -> int:
    return (await bus.nc.jetstream().stream_info(stream)).config.num_replicas or 1


async def test_buckets_and_the_asrun_stream_take_the_cluster_size(cluster: NatsCluster) -> None:
    small = await connected(cluster.url, "one-replica", replicas=1)
    full = await connected(cluster.url, "three-replicas", replicas=3)
    try:
        await open_when_ready(small, "grown")
        await ensure_asrun_stream(small)
        assert await replicas_of(small, "KV_grown") == 1
        assert await replicas_of(small, ASRUN_STREAM) == 1
        # A deployment that grew to a cluster: its buckets and the as-run stream follow.
        await full.kv("grown", control_pb2.Heartbeat)
        await ensure_asrun_stream(full)
        await full.kv("new", control_pb2.Heartbeat)
        assert await replicas_of(full, "KV_grown") == 3
        assert await replicas_of(full, ASRUN_STREAM) == 3
        assert await replicas_of(full, "KV_new") == 3
        # ... and a service still set to one replica never lowers them.
        await small.kv("grown", control_pb2.Heartbeat)
        await ensure_asrun_stream(small)
        assert await replicas_of(small, "KV_grown") == 3
        assert await replicas_of(small, ASRUN_STREAM) == 3
    finally:
        await small.drain()
        await full.drain()


async def test_one_server_refuses_three_replicas_by_name(nats_server: NatsServer) -> None:
    bus = await connected(nats_server.url, "too-many", replicas=3)
    try:
        with pytest.raises(errors.Unavailable, match="BAYCAST_JETSTREAM_REPLICAS"):
            await bus.kv(f"b{uuid.uuid4().hex[:6]}", control_pb2.Heartbeat)
    finally:
        await bus.drain()


class Replica:
    """A member of a service's queue group whose command stores a key in a 3-replica bucket."""

    def __init__(self, url: str, name: str, applied: Counter[str]) -> None:
        self.bus = Bus(url, name, replicas=3)
        self.name = name
        self.applied = applied

    async def start(self, subject: str) -> Replica:
        await self.bus.connect()
        self.bus.shared_replies = CommandLog(self.bus, self.name)
        self.state = await open_when_ready(self.bus, "commands")
        await self.bus.serve(subject, control_pb2.StatusRequest, self.handle, queue="svc")
        return self

    async def handle(self, request: control_pb2.StatusRequest) -> control_pb2.Heartbeat:
        del request
        key = f"c{sum(self.applied.values())}-{uuid.uuid4().hex[:6]}"
        try:
            revision = await asyncio.wait_for(
                self.state.put(key, control_pb2.Heartbeat(instance=self.name)), 2
            )
        except Exception as exc:
            raise errors.Unavailable(f"state not stored: {type(exc).__name__}") from None
        self.applied[key] += 1
        return control_pb2.Heartbeat(instance=key, time_us=revision)


async def send_with_retries(client: Bus, subject: str, command_id: str) -> str:
    """What `baycast ctl` does: one command id, retried through outages."""
    reply = await command_load.retried(
        lambda: client.request(
            subject,
            control_pb2.StatusRequest(),
            control_pb2.Heartbeat,
            command_id=command_id,
            timeout=2,
        ),
        RETRY_FOR_S,
    )
    return reply.instance


async def test_commands_ride_out_two_leader_elections(cluster: NatsCluster) -> None:
    """A command every 50 ms while the bucket's leader is killed, then the next one: every
    acknowledged command is in the state afterwards, and none is applied twice."""
    subject = f"baycast.v1.test.{uuid.uuid4().hex[:8]}.cmd"
    applied: Counter[str] = Counter()
    replicas = [await Replica(cluster.url, f"r{i}", applied).start(subject) for i in range(2)]
    client = await connected(cluster.url, "client", replicas=3)
    acknowledged: list[str] = []
    stop = asyncio.Event()

    async def sender(n: int) -> None:
        acknowledged.append(await send_with_retries(client, subject, f"cmd-{n}"))

    async def kill_leader() -> str:
        info = await client.nc.jetstream().stream_info("KV_commands")
        assert info.cluster is not None and info.cluster.leader
        leader = info.cluster.leader
        cluster.named(leader).kill()
        return leader

    async def new_leader(old: str) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                info = await client.nc.jetstream().stream_info("KV_commands")
                if info.cluster and info.cluster.leader not in ("", None, old):
                    return
            except Exception:
                pass  # asked of a server that has no answer yet: ask again
            await asyncio.sleep(0.2)
        raise AssertionError(f"no new leader after {old} died")

    try:
        loop = asyncio.create_task(command_load.every(COMMAND_EVERY_S, 600, stop, sender))
        await asyncio.sleep(1.0)
        for _ in range(2):
            leader = await kill_leader()
            await new_leader(leader)
            await asyncio.sleep(1.0)
            cluster.named(leader).start()  # back with its store, as a restarted pod
            await asyncio.sleep(2.0)
        stop.set()
        tasks = await loop
        await asyncio.gather(*tasks)
        assert len(acknowledged) == len(tasks) >= 100
        stored = await replicas[0].state.keys()
        assert set(acknowledged) <= set(stored)
        assert all(count == 1 for count in applied.values()), applied.most_common(3)
        assert len(applied) == len(acknowledged)
    finally:
        stop.set()
        await client.drain()
        for r in replicas:
            await r.bus.drain()
