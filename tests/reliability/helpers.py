"""What the reliability tests share: services as subprocesses, stations, program recordings."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import ingest_pb2, media_pb2, media_pb2_grpc, mixer_pb2
from services.common.rpc import CHANNEL_OPTIONS
from tests.support.nats import free_port, free_udp_port
from tests.support.services import ServiceProcess, service_process

STATION_COMMANDS = subject("ingest", "station", "cmd")
PRODUCTION_COMMANDS = subject("mixer", "production", "cmd")
SMALL = media_pb2.Rendition(width=320, height=180, no_audio=True)
# A channel of its own: gRPC shares connections (and their reconnect backoff) between channels
# to one address in a process; a test's figure must not include another client's backoff.
OWN_CHANNEL = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
QUICK_STOP = {"BAYCAST_UNREADY_SECONDS": "0"}
FAST_LEASES = {
    "BAYCAST_MIXER_LEASE_SECONDS": "2",
    "BAYCAST_MIXER_LEASE_RENEW_SECONDS": "0.3",
}


def ingest_process(nats_url: str, tmp_path: Path, **env: str) -> ServiceProcess:
    """An ingest subprocess with its RTMP and SRT listeners on free loopback ports."""
    return service_process(
        "ingest",
        nats_url,
        tmp_path,
        "ingest",
        env={
            "BAYCAST_INGEST_RTMP_ADDR": f"127.0.0.1:{free_port()}",
            "BAYCAST_INGEST_SRT_ADDR": f"127.0.0.1:{free_udp_port()}",
            "BAYCAST_INGEST_STATS_INTERVAL_S": "0.5",
            **QUICK_STOP,
            **env,
        },
    )


def mixer_process(nats_url: str, tmp_path: Path, **env: str) -> ServiceProcess:
    return service_process(
        "mixer", nats_url, tmp_path, "mixer", env={**QUICK_STOP, **FAST_LEASES, **env}
    )


def graphics_process(nats_url: str, tmp_path: Path, **env: str) -> ServiceProcess:
    return service_process("graphics", nats_url, tmp_path, "graphics", env={**QUICK_STOP, **env})


@contextlib.contextmanager
def processes(*procs: ServiceProcess, timeout: float = 40.0) -> Iterator[None]:
    """Start all in parallel (imports dominate), stop all afterwards."""
    started: list[ServiceProcess] = []
    try:
        for p in procs:
            with open(p.log_path, "ab") as log:
                p.proc = subprocess.Popen(p.argv, env=p.env, stdout=log, stderr=subprocess.STDOUT)
            started.append(p)
        for p in procs:
            p.wait_ready(timeout)
        yield
    finally:
        for p in started:
            p.stop()


@dataclass
class StationProcess:
    """`baycast station` publishing its test card over WHIP, in a process of its own."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    def freeze(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def station_process(
    whip: str, token: str, tmp_path: Path, *, size: str = "320x180"
) -> Iterator[StationProcess]:
    log_path = tmp_path / f"station-{free_port()}.log"
    env = {**os.environ, "BAYCAST_STATION_TOKEN": token, "BAYCAST_LOG_FORMAT": "json"}
    argv = [sys.executable, "-m", "services.cli", "station", "--whip", whip]
    argv += ["--mode", "packets", "--size", size]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    station = StationProcess(proc, log_path)
    try:
        yield station
    finally:
        station.stop()


async def add_station(bus: Bus, station: str, name: str) -> str:
    reply = await bus.request(
        STATION_COMMANDS,
        ingest_pb2.StationCommand(add=ingest_pb2.AddStation(id=station, name=name)),
        ingest_pb2.StationReply,
    )
    return reply.token


async def retry(coro_fn: Any, *, seconds: float = 15.0, every: float = 0.2) -> Any:
    """Call `coro_fn()` until it returns without raising (bounded)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await coro_fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(every)


async def mixer_command(bus: Bus, prod: str, cmd: mixer_pb2.MixerCommand) -> mixer_pb2.MixerState:
    return await bus.request(subject("prod", prod, "mixer", "cmd"), cmd, mixer_pb2.MixerState)


async def create_production(bus: Bus, production: mixer_pb2.Production) -> None:
    await bus.request(
        PRODUCTION_COMMANDS,
        mixer_pb2.ProductionCommand(create=production),
        mixer_pb2.ProductionReply,
    )
    get = mixer_pb2.MixerCommand(get=mixer_pb2.MixerCommand.Get())
    await retry(lambda: mixer_command(bus, production.id, get))


async def delete_production(bus: Bus, prod: str) -> None:
    with contextlib.suppress(Exception):
        await bus.request(
            PRODUCTION_COMMANDS,
            mixer_pb2.ProductionCommand(delete=mixer_pb2.ProductionCommand.Delete(id=prod)),
            mixer_pb2.ProductionReply,
        )


@dataclass
class Arrival:
    frame: media_pb2.VideoFrame
    at: float  # monotonic seconds


@dataclass
class Recording:
    """Video frames of one handle with their arrival times; a test sees every gap."""

    frames: list[Arrival] = field(default_factory=list)

    def pts_steps(self) -> set[int]:
        return {b.frame.pts_us - a.frame.pts_us for a, b in itertools.pairwise(self.frames)}

    def longest_arrival_gap(self) -> float:
        return max((b.at - a.at for a, b in itertools.pairwise(self.frames)), default=0.0)


@contextlib.asynccontextmanager
async def recording(
    endpoint: str, handle: str, rendition: media_pb2.Rendition = SMALL
) -> AsyncIterator[Recording]:
    """Record video frames of `handle` (raw Media.Subscribe, no reconnect) while the block runs."""
    out = Recording()

    async def go() -> None:
        async with grpc.aio.insecure_channel(endpoint, options=OWN_CHANNEL) as channel:
            stub = media_pb2_grpc.MediaStub(channel)
            call = stub.Subscribe(
                media_pb2.SubscribeRequest(handle=handle, rendition=rendition, subscriber="rel")
            )
            async for message in call:
                if message.WhichOneof("body") == "video":
                    out.frames.append(Arrival(message.video, time.monotonic()))

    task = asyncio.create_task(go())
    try:
        yield out
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await task


async def wait_for(predicate: Any, seconds: float, what: str, every: float = 0.05) -> float:
    """Poll `predicate()` until true; returns the seconds it took, raises after `seconds`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > seconds:
            raise TimeoutError(f"{what}: not within {seconds} s")
        await asyncio.sleep(every)
    return time.monotonic() - start


async def ctl(nats_url: str, *args: str, timeout: float = 45.0) -> tuple[int, str]:
    """Run `baycast ctl ...` as an operator would, in a process of its own."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "ctl",
        "--nats",
        nats_url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def gfx_command(bus: Bus, prod: str, cmd: Any) -> Any:
    from services.common.gen.baycast.v1 import graphics_pb2

    return await bus.request(subject("prod", prod, "gfx", "cmd"), cmd, graphics_pb2.GfxReply)
