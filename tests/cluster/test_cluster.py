"""Replicas on separate hosts (network namespaces on a bridge, no shared /dev/shm) on a three-server
NATS JetStream cluster: what an operator's cluster must survive (tests/cluster/harness.py).

Run alone with `pytest -m cluster` (make test runs it with the rest)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import ingest_pb2
from tests.cluster.harness import Cluster
from tests.support import command_load

pytestmark = pytest.mark.cluster

COMMAND_EVERY_S = 0.05
RETRY_FOR_S = 30.0


@pytest.fixture
async def ingest_cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path, services=("ingest",)) as cluster:
        yield cluster


async def send(
    bus: Bus, subj: str, command: ingest_pb2.StationCommand, command_id: str
) -> ingest_pb2.StationReply:
    return await command_load.retried(
        lambda: bus.request(
            subj, command, ingest_pb2.StationReply, command_id=command_id, timeout=2
        ),
        RETRY_FOR_S,
    )


async def leader_of(bus: Bus, stream: str, not_this: str = "") -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            info = await bus.nc.jetstream().stream_info(stream)
            if info.cluster is not None and info.cluster.leader not in (None, "", not_this):
                return info.cluster.leader
        await asyncio.sleep(0.2)
    raise AssertionError(f"{stream} has no leader")


async def test_no_acknowledged_command_is_lost_through_two_leader_kills(
    ingest_cluster: Cluster,
) -> None:
    """A station added every 50 ms through two ingest replicas while the NATS server leading
    the stations' bucket is killed, then the next leader: every acknowledged station is stored,
    and a command retried with its id (to whichever replica) is answered, not applied again."""
    cluster = ingest_cluster
    bus = await cluster.inspector_bus()
    subj = subject("ingest", "station", "cmd")
    replies: dict[str, ingest_pb2.StationReply] = {}
    stop = asyncio.Event()

    took: list[float] = []
    pending: dict[int, float] = {}  # commands not answered yet: when each was sent

    async def add(n: int) -> None:
        station = f"st{n:04d}"
        command = ingest_pb2.StationCommand(add=ingest_pb2.AddStation(id=station))
        sent = pending[n] = time.monotonic()
        try:
            replies[station] = await send(bus, subj, command, f"add-{station}")
        finally:
            del pending[n]
        took.append(time.monotonic() - sent)

    async def answered_until(moment: float) -> None:
        """Every command sent before `moment` answered (what an election held back)."""
        deadline = time.monotonic() + RETRY_FOR_S
        while any(sent < moment for sent in pending.values()):
            assert time.monotonic() < deadline, "commands held back by an election"
            await asyncio.sleep(0.1)

    try:
        await send(
            bus, subj, ingest_pb2.StationCommand(add=ingest_pb2.AddStation(id="first")), "first"
        )
        loop = asyncio.create_task(command_load.every(COMMAND_EVERY_S, 800, stop, add))
        killed: list[str] = []
        for _ in range(2):
            await asyncio.sleep(1.5)
            # One election at a time: what the last one held back has been answered (on a
            # slow host a backlog outlasts the restart, and a command would wait out both).
            await answered_until(time.monotonic())
            leader = await leader_of(bus, "KV_stations")
            cluster.kill(f"nats-{leader.removeprefix('n')}")
            killed.append(leader)
            await leader_of(bus, "KV_stations", not_this=leader)
            await asyncio.sleep(1.0)
            await cluster.restart(f"nats-{leader.removeprefix('n')}")
        await asyncio.sleep(2.0)
        stop.set()
        tasks = await loop
        await asyncio.gather(*tasks)
        assert len(tasks) >= 80 and len(replies) == len(tasks)
        # An election (nats-server's raft: 4-9 s), the backlog it left and the retries.
        assert max(took) <= 15.0, max(took)
        stored = await (await bus.kv("stations", ingest_pb2.Station)).keys()
        assert set(replies) <= set(stored), sorted(set(replies) - set(stored))[:5]
        assert all(r.stations[0].id == s and r.token for s, r in replies.items())
        # Retried again now, each id is answered with its first reply by whichever replica.
        for station in sorted(replies)[::20]:
            command = ingest_pb2.StationCommand(add=ingest_pb2.AddStation(id=station))
            again = await send(bus, subj, command, f"add-{station}")
            assert again.token == replies[station].token
        print(
            f"\n{len(tasks)} commands through leader kills of {killed}: all stored; the longest "
            f"took {max(took):.2f} s, {sum(t > 1 for t in took)} took over 1 s"
        )
        # Both replicas served and the killed servers came back into the cluster.
        assert all(cluster.processes[f"ingest-{r}"].alive for r in "ab")
        assert len(set(killed)) >= 1
    finally:
        stop.set()
        await bus.drain()
