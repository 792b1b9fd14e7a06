"""Two distribution replicas on one NATS, a real mixer production, a real nginx-rtmp: the
production's RTMP push has one publisher, whichever replica a command reaches; when the replica
that runs it is killed, the other takes the production and publishes again within 5 s."""

from __future__ import annotations

import asyncio
import re
import signal
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from services.common import errors
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import control_pb2, mixer_pb2
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.handles import HandleDirectory
from services.distribution.service import DistributionService
from services.distribution.settings import DistributionSettings
from services.mixer.service import MixerService
from services.mixer.settings import MixerSettings
from tests.support.media_source import Card, FakeMediaServer
from tests.support.mixer import admin, command
from tests.support.nats import NatsServer
from tests.support.rtmp import RtmpServer
from tests.support.services import ServiceProcess, running_service, service_process

pytestmark = pytest.mark.timeout(120)

WIDTH, HEIGHT, FPS = 640, 360, 25
CARD_YUV = (81, 90, 240)
# The defaults: what an operator runs. A push starts on the encoder's next keyframe.
LEASE_S = DistributionSettings.lease_seconds
RENEW_S = DistributionSettings.lease_renew_seconds
KEYFRAME_INTERVAL_S = DistributionSettings.keyframe_interval_s
TAKEOVER_TARGET_S = 5.0
SAMPLE_S = 3.0
LIVE = dist.OUTPUT_STATUS_LIVE


def replica(nats_url: str, tmp_path: Path, name: str) -> ServiceProcess:
    env = {
        "BAYCAST_DISTRIBUTION_INSTANCE": name,
        "BAYCAST_DISTRIBUTION_DATA_DIR": str(tmp_path / name),
        "BAYCAST_DISTRIBUTION_WIDTH": str(WIDTH),
        "BAYCAST_DISTRIBUTION_HEIGHT": str(HEIGHT),
        "BAYCAST_DISTRIBUTION_X264_PRESET": "ultrafast",
        "BAYCAST_DISTRIBUTION_VIDEO_BITRATE_KBPS": "500",
        "BAYCAST_UNREADY_SECONDS": "0",
        "BAYCAST_LOG_LEVEL": "info",
    }
    return service_process("distribution", nats_url, tmp_path, "distribution", env)


def scrape(proc: ServiceProcess) -> str:
    with urllib.request.urlopen(proc.http + "/metrics", timeout=2) as resp:
        text: str = resp.read().decode()
    return text


def gauge(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"no {name}"
    return float(match.group(1))


def runs_output(text: str, prod: str, output: str) -> bool:
    """Whether the replica whose metrics these are has the output (its state series)."""
    return f'output="{output}",production="{prod}"' in text


async def until(check: Callable[[], Awaitable[bool] | bool], timeout: float, what: str) -> float:
    """Poll `check` until true; the seconds it took (AssertionError after `timeout`)."""
    started = time.monotonic()
    while True:
        outcome = check()
        if outcome if isinstance(outcome, bool) else await outcome:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.05)


def pictures(path: Path, count: int) -> list[np.ndarray]:
    """The luma of the first `count` decoded pictures of a recorded push."""
    lumas = []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            lumas.append(frame.to_ndarray(format="gray"))
            if len(lumas) == count:
                break
    return lumas


async def test_two_replicas_push_once_and_hand_over_when_the_owner_dies(
    own_nats_server: NatsServer, tmp_path: Path
) -> None:
    nats_url = own_nats_server.url
    tag = uuid.uuid4().hex[:6]
    prod, source, key = f"rep-{tag}", f"rep-gz-{tag}", f"key-{tag}"
    bus = Bus(nats_url, "replicas-test")
    await bus.connect()
    media = await FakeMediaServer().start()
    media.add(Card(f"source/{source}", CARD_YUV, fps=FPS))
    await media.announce(HandleDirectory(bus))
    rtmp = RtmpServer(tmp_path / "rtmp").start()
    replicas = {name: replica(nats_url, tmp_path, name) for name in (f"a-{tag}", f"b-{tag}")}
    leases = await bus.kv("distribution-leases", control_pb2.Lease)

    async def dist_command(retry_for: float = 10.0, **kw: Any) -> dist.DistReply:
        deadline = time.monotonic() + retry_for
        while True:
            try:
                return await bus.request(
                    subject("prod", prod, "dist", "cmd"),
                    dist.DistCommand(production=prod, **kw),
                    dist.DistReply,
                    timeout=5,
                )
            except errors.Unavailable:  # changing hands: as `baycast ctl` does, retry
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def owner() -> str:
        entry = await leases.get(prod)
        return entry.value.owner if entry is not None else ""

    def one_publisher_only(replica_runs: dict[str, bool]) -> None:
        assert rtmp.publishers(key) == 1
        assert sum(replica_runs.values()) == 1, replica_runs

    try:
        async with running_service(
            MixerService, MixerSettings, nats_url, lease_renew_seconds=0.3, unready_seconds=0.0
        ):
            production = mixer_pb2.Production(
                id=prod,
                name="启航·大湾区",
                width=1280,  # the mixer's smallest; distribution encodes it at WIDTH x HEIGHT
                height=720,
                fps=FPS,
                sources=[mixer_pb2.ProductionSource(id=source, name="广州台")],
            )
            await admin(bus, mixer_pb2.ProductionCommand(create=production))
            await command(bus, prod, mixer_pb2.MixerCommand(get=mixer_pb2.MixerCommand.Get()))
            await asyncio.gather(*(asyncio.to_thread(p.start, 60) for p in replicas.values()))

            spec = dist.OutputSpec(
                id="push",
                kind=dist.OUTPUT_KIND_RTMP,
                url=rtmp.app_url(),
                stream_key=key,
                enabled=True,
            )
            await dist_command(add=dist.AddOutput(output=spec))

            async def live() -> bool:
                reply = await dist_command(list=dist.ListOutputs())
                return [o.status for o in reply.outputs] == [LIVE]

            await until(live, 20, "the push live")
            await until(lambda: rtmp.publishers(key) == 1, 5, "nginx-rtmp sees the publisher")
            first = await owner()
            assert first in replicas

            # One publisher, one replica running the output, sampled over a few seconds.
            end = time.monotonic() + SAMPLE_S
            while time.monotonic() < end:
                texts = {n: await asyncio.to_thread(scrape, p) for n, p in replicas.items()}
                one_publisher_only({n: runs_output(t, prod, "push") for n, t in texts.items()})
                owned = {
                    n: gauge(t, "baycast_distribution_productions_owned") for n, t in texts.items()
                }
                assert owned == {n: (1.0 if n == first else 0.0) for n in replicas}, owned
                await asyncio.sleep(0.25)

            # Either replica answers (the queue group spreads these), with the owner's state.
            seen = set()
            for _ in range(10):
                (state,) = (await dist_command(list=dist.ListOutputs())).outputs
                seen.add((state.id, state.status, state.enabled, state.url, state.attempts))
            assert seen == {("push", LIVE, True, f"{rtmp.app_url()}/***", 1)}, seen

            # The owner dies without a word: the other replica takes over within the lease.
            survivor = next(n for n in replicas if n != first)
            replicas[first].signal(signal.SIGKILL)
            killed = time.monotonic()
            await asyncio.to_thread(replicas[first].wait, 10)

            async def survivor_owns() -> bool:
                return await owner() == survivor

            def publishing_again() -> bool:
                publishes = rtmp.logs().count(f"publish: name='{key}'")
                return publishes == 2 and rtmp.publishers(key) == 1

            taken_s = await until(survivor_owns, TAKEOVER_TARGET_S + 5, "lease taken")
            await until(publishing_again, TAKEOVER_TARGET_S + 5, "published by the survivor")
            takeover_s = time.monotonic() - killed
            await until(live, 5, "the push live on the survivor")
            live_s = time.monotonic() - killed
            end = time.monotonic() + SAMPLE_S
            while time.monotonic() < end:
                text = await asyncio.to_thread(scrape, replicas[survivor])
                one_publisher_only({survivor: runs_output(text, prod, "push")})
                assert gauge(text, "baycast_distribution_productions_owned") == 1.0
                await asyncio.sleep(0.25)
            stopped = (await dist_command(stop=dist.OutputRef(id="push"))).outputs[0]
            await dist_command(remove=dist.OutputRef(id="push"))
            await until(lambda: rtmp.publishers(key) == 0, 5, "the push gone")
            await until(
                lambda: (
                    gauge(scrape(replicas[survivor]), "baycast_distribution_productions_owned")
                    == 0.0
                ),
                5,
                "the empty production let go",
            )
            await admin(
                bus,
                mixer_pb2.ProductionCommand(delete=mixer_pb2.ProductionCommand.Delete(id=prod)),
            )
    finally:
        for proc in replicas.values():
            proc.stop()
        await media.stop()
        await bus.drain()
        recorded = rtmp.recordings(key)
        log = rtmp.logs()
        rtmp.cleanup()

    print(
        f"\nreplica killed: production taken by the other after {taken_s:.2f} s, published "
        f"again after {takeover_s:.2f} s, listed live after {live_s:.2f} s (lease {LEASE_S:g} s, "
        f"renewal {RENEW_S:g} s, keyframes every {KEYFRAME_INTERVAL_S:g} s)"
    )
    assert takeover_s <= TAKEOVER_TARGET_S
    assert "already publishing" not in log  # no second publisher was ever refused
    assert len(recorded) == 2  # one publish per owner
    # What the survivor pushed decodes, and it is the mixer's program (not the slate).
    lumas = pictures(recorded[-1], 2 * FPS)
    assert len(lumas) == 2 * FPS and all(y.shape == (HEIGHT, WIDTH) for y in lumas)
    program = [y for y in lumas if abs(int(np.median(y)) - CARD_YUV[0]) <= 6]
    assert len(program) >= FPS, [int(np.median(y)) for y in lumas]
    assert stopped.media_seconds > 1.0


async def test_a_full_replica_refuses_and_a_draining_one_hands_over_at_once(
    own_nats_server: NatsServer, tmp_path: Path
) -> None:
    # A server of its own: productions other tests left in the bucket would fill the replica.
    nats_url = own_nats_server.url
    tag = uuid.uuid4().hex[:6]
    taken, refused = f"cap-{tag}", f"cap2-{tag}"
    bus = Bus(nats_url, "capacity-test")
    await bus.connect()
    settings: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "lease_seconds": LEASE_S,
        "lease_renew_seconds": RENEW_S,
        "unready_seconds": 0.0,
    }
    # A stopped output needs no encoder: only the ownership of its production is at stake here.
    spec = dist.OutputSpec(id="archive", kind=dist.OUTPUT_KIND_RECORDING, enabled=False)

    async def add(prod: str) -> dist.DistReply:
        return await bus.request(
            subject("prod", prod, "dist", "cmd"),
            dist.DistCommand(add=dist.AddOutput(output=spec)),
            dist.DistReply,
        )

    full_service = running_service(
        DistributionService, DistributionSettings, nats_url, max_productions=1, **settings
    )
    full = await full_service.__aenter__()
    full_running = True
    try:
        await add(taken)
        assert full.owned.names == [taken]
        with pytest.raises(errors.Unavailable, match="full"):
            await add(refused)
        assert full.owned.names == [taken]
        async with running_service(
            DistributionService, DistributionSettings, nats_url, **settings
        ) as spare:
            assert spare.owned.names == []  # taken is held
            full_running = False
            await full_service.__aexit__(None, None, None)
            handed = await until(lambda: spare.owned.names == [taken], 5, "handed over")
            reply = await bus.request(
                subject("prod", taken, "dist", "cmd"),
                dist.DistCommand(remove=dist.OutputRef(id="archive")),
                dist.DistReply,
            )
            assert reply.outputs[0].id == "archive"
            assert spare.owned.names == []  # its last output gone: let go at once
    finally:
        if full_running:
            await full_service.__aexit__(None, None, None)
        await bus.drain()
    print(f"\nreplica drained: its production taken by the other after {handed:.2f} s")
    assert handed <= 2 * RENEW_S + 0.5


async def test_a_deleted_production_s_outputs_stop_and_go(
    own_nats_server: NatsServer, tmp_path: Path
) -> None:
    """The mixer deletes a production whose recording runs: the replica running it stops it and
    lets the production go, and its stored outputs are removed, so no replica takes it again."""
    nats_url = own_nats_server.url
    tag = uuid.uuid4().hex[:6]
    prod = f"gone-{tag}"
    bus = Bus(nats_url, "deleted-test")
    await bus.connect()
    try:
        async with (
            running_service(
                MixerService, MixerSettings, nats_url, lease_renew_seconds=0.3, unready_seconds=0.0
            ),
            running_service(
                DistributionService,
                DistributionSettings,
                nats_url,
                data_dir=str(tmp_path / "data"),
                unready_seconds=0.0,
            ) as svc,
        ):
            created = mixer_pb2.Production(
                id=prod, width=1280, height=720, fps=FPS, sources=[{"id": "gz"}]
            )
            await admin(bus, mixer_pb2.ProductionCommand(create=created))
            spec = dist.OutputSpec(id="archive", kind=dist.OUTPUT_KIND_RECORDING, enabled=True)
            await bus.request(
                subject("prod", prod, "dist", "cmd"),
                dist.DistCommand(add=dist.AddOutput(output=spec)),
                dist.DistReply,
                timeout=10,
            )
            assert svc.owned.names == [prod] and svc.distributor.runs(prod)
            specs = await bus.kv("dist_outputs", dist.OutputSpec)
            assert f"{prod}.archive" in await specs.keys()

            delete = mixer_pb2.ProductionCommand.Delete(id=prod)
            await admin(bus, mixer_pb2.ProductionCommand(delete=delete))

            async def gone() -> bool:
                stored = [k for k in await specs.keys() if k.startswith(f"{prod}.")]
                return not (svc.owned.names or svc.distributor.runs(prod) or stored)

            took = await until(gone, 10, "the deleted production's outputs gone")
            print(f"\noutputs of the deleted production stopped and removed in {took:.2f} s")
            assert took <= 1.0, took
            assert prod not in await svc.distributor.wanted()
    finally:
        await bus.drain()
