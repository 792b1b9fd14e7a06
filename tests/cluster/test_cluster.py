"""Replicas on separate hosts (network namespaces on a bridge, no shared /dev/shm) on a three-server
NATS JetStream cluster: what an operator's cluster must survive (tests/cluster/harness.py).

Run alone with `pytest -m cluster` (make test runs it with the rest)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from services.common import errors
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import ingest_pb2, media_pb2, media_pb2_grpc, mixer_pb2
from services.common.handles import HandleDirectory
from services.common.rpc import CHANNEL_OPTIONS
from tests.cluster.harness import Cluster
from tests.support import command_load

pytestmark = pytest.mark.cluster

COMMAND_EVERY_S = 0.05
RETRY_FOR_S = 30.0
Cmd = mixer_pb2.MixerCommand


@pytest.fixture
async def ingest_cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path, services=("ingest",)) as cluster:
        yield cluster


@pytest.fixture
async def mixer_cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path, services=("mixer",)) as cluster:
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
    bus = await cluster.operator_bus()
    subj = subject("ingest", "station", "cmd")
    replies: dict[str, ingest_pb2.StationReply] = {}
    stop = asyncio.Event()

    took: list[float] = []

    async def add(n: int) -> None:
        station = f"st{n:04d}"
        command = ingest_pb2.StationCommand(add=ingest_pb2.AddStation(id=station))
        sent = time.monotonic()
        replies[station] = await send(bus, subj, command, f"add-{station}")
        took.append(time.monotonic() - sent)

    try:
        await send(
            bus, subj, ingest_pb2.StationCommand(add=ingest_pb2.AddStation(id="first")), "first"
        )
        loop = asyncio.create_task(command_load.every(COMMAND_EVERY_S, 800, stop, add))
        killed: list[str] = []
        for _ in range(2):
            await asyncio.sleep(1.5)
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


async def first_frame_from(endpoint: str, handle: str, timeout: float) -> media_pb2.VideoFrame:
    async def go() -> media_pb2.VideoFrame:
        async with grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS) as channel:
            call = media_pb2_grpc.MediaStub(channel).Subscribe(
                media_pb2.SubscribeRequest(
                    handle=handle,
                    rendition=media_pb2.Rendition(width=320, height=180, no_audio=True),
                    subscriber="cluster-test",
                )
            )
            async for message in call:
                if message.WhichOneof("body") == "video":
                    return message.video
        raise AssertionError("stream ended")

    return await asyncio.wait_for(go(), timeout)


async def test_a_killed_mixer_s_show_is_back_on_the_other_host_within_5_s(
    mixer_cluster: Cluster,
) -> None:
    cluster = mixer_cluster
    bus = await cluster.operator_bus()
    prod = "cluster-show"
    try:
        production = mixer_pb2.Production(
            id=prod,
            width=1280,
            height=720,
            sources=[mixer_pb2.ProductionSource(id="gz"), mixer_pb2.ProductionSource(id="sz")],
        )
        await bus.request(
            subject("mixer", "production", "cmd"),
            mixer_pb2.ProductionCommand(create=production),
            mixer_pb2.ProductionReply,
            timeout=10,
        )
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(errors.Unavailable):
                state = await bus.request(
                    subject("prod", prod, "mixer", "cmd"),
                    Cmd(cut=Cmd.Cut(source="sz")),
                    mixer_pb2.MixerState,
                    timeout=2,
                )
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        owner = state.instance
        directory = HandleDirectory(bus)
        endpoint = await directory.resolve(f"prod/{prod}/program")
        assert endpoint is not None
        assert endpoint.split(":")[0] == cluster.hosts[owner].ip  # served from the owner's host
        await first_frame_from(endpoint, f"prod/{prod}/program", 10)

        killed_at = time.monotonic()
        cluster.kill(owner)
        other = next(n for n in cluster.replica_names("mixer") if n != owner)
        while True:
            moved = await directory.resolve(f"prod/{prod}/program")
            if moved and moved.split(":")[0] == cluster.hosts[other].ip:
                with contextlib.suppress(Exception):
                    await first_frame_from(moved, f"prod/{prod}/program", 2)
                    break
            assert time.monotonic() - killed_at < 10, "the show did not move"
            await asyncio.sleep(0.1)
        back_after = time.monotonic() - killed_at
        print(f"\nmixer {owner} killed: program served by {other} after {back_after:.2f} s")
        assert back_after <= 5.0, back_after
        state = await bus.request(
            subject("prod", prod, "mixer", "cmd"),
            Cmd(get=Cmd.Get()),
            mixer_pb2.MixerState,
            timeout=5,
        )
        assert (state.instance, state.switcher.program) == (other, "sz")
    finally:
        with contextlib.suppress(Exception):
            await bus.request(
                subject("mixer", "production", "cmd"),
                mixer_pb2.ProductionCommand(delete=mixer_pb2.ProductionCommand.Delete(id=prod)),
                mixer_pb2.ProductionReply,
            )
        await bus.drain()
