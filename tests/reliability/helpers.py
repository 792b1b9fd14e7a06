"""What the reliability tests share: services as subprocesses, stations, program recordings,
readiness read from real answers, and what a picture shows."""

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

import aiohttp
import grpc
import numpy as np

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import ingest_pb2, media_pb2, media_pb2_grpc, mixer_pb2
from services.common.rpc import CHANNEL_OPTIONS
from services.distribution.settings import DEFAULT_SLATE_TEXT
from services.distribution.slate import slate_i420
from services.mixer.slates import slate as mixer_slate
from services.station.testcard import station_colours
from tests.reliability.proc_stats import metric_value
from tests.support.mixer import close_to, yuv_at
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


# What distribution encodes in these tests: small and quick, as the distribution tests do.
PUSH_WIDTH, PUSH_HEIGHT, PUSH_FPS = 640, 360, 25


def distribution_process(nats_url: str, tmp_path: Path, **env: str) -> ServiceProcess:
    """A distribution subprocess encoding 640x360 at 25 fps (x264 ultrafast) into `tmp_path`."""
    return service_process(
        "distribution",
        nats_url,
        tmp_path,
        "distribution",
        env={
            "BAYCAST_DISTRIBUTION_DATA_DIR": str(tmp_path / "distribution"),
            "BAYCAST_DISTRIBUTION_WIDTH": str(PUSH_WIDTH),
            "BAYCAST_DISTRIBUTION_HEIGHT": str(PUSH_HEIGHT),
            "BAYCAST_DISTRIBUTION_FPS": str(PUSH_FPS),
            "BAYCAST_DISTRIBUTION_VIDEO_BITRATE_KBPS": "600",
            "BAYCAST_DISTRIBUTION_AUDIO_BITRATE_KBPS": "64",
            "BAYCAST_DISTRIBUTION_X264_PRESET": "ultrafast",
            **QUICK_STOP,
            **env,
        },
    )


def monitoring_process(nats_url: str, tmp_path: Path, **env: str) -> ServiceProcess:
    return service_process(
        "monitoring", nats_url, tmp_path, "monitoring", env={**QUICK_STOP, **env}
    )


# -- readiness, from real answers ----------------------------------------------------------------

READY, UNREADY = 200, 503
# How long a probe waits for its answer: a service whose event loop is slow (a busy box, a
# frozen NATS connection being noticed) answers late; that is no answer yet, not "not ready".
READYZ_ANSWER_S = 10.0


async def readyz(proc: ServiceProcess, timeout: float = READYZ_ANSWER_S) -> int | None:
    """What `/readyz` answered: 200 (ready) or 503 (not ready). None when there was no answer:
    nothing listening (not started yet, or gone) or no reply within `timeout`."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(proc.http + "/readyz") as resp,
        ):
            await resp.read()
            return resp.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


async def until_readiness(
    proc: ServiceProcess, status: int, seconds: float, what: str, every: float = 0.02
) -> float:
    """Seconds from now until `/readyz` answers `status`, taken when that answer arrived (a late
    answer makes the figure larger, never smaller); TimeoutError after `seconds`."""
    start = time.monotonic()
    while True:
        answer = await readyz(proc)
        if answer == status:
            return time.monotonic() - start
        if time.monotonic() - start > seconds:
            raise TimeoutError(f"{what}: /readyz did not answer {status} within {seconds} s")
        await asyncio.sleep(every)


@contextlib.contextmanager
def processes(*procs: ServiceProcess, timeout: float = 40.0) -> Iterator[None]:
    """Start all in parallel (imports dominate), stop all in parallel afterwards."""
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
        running = [p.proc for p in started if p.proc is not None and p.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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


async def source_online(ingest: ServiceProcess, station: str, seconds: float = 30.0) -> float:
    """Until ingest's `baycast_ingest_source_online` says the station's source is online."""
    start = time.monotonic()
    while (
        await asyncio.to_thread(metric_value, ingest.http, "baycast_ingest_source_online", station)
        != 1
    ):
        if time.monotonic() - start > seconds:
            raise TimeoutError(f"source {station} not online within {seconds} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def live_station(
    bus: Bus, ingest: ServiceProcess, station: str, name: str, tmp_path: Path
) -> AsyncIterator[StationProcess]:
    """A station added to ingest and publishing its test card from a `baycast station` process,
    online (decoded by ingest) when the block starts."""
    token = await add_station(bus, station, name)
    with station_process(f"{ingest.http}/whip/{station}", token, tmp_path) as proc:
        await source_online(ingest, station)
        yield proc


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


# -- what a picture shows ----------------------------------------------------------------------


def card_points(station: str) -> list[tuple[float, float, tuple[int, int, int]]]:
    """(x, y as fractions, YUV) of places on a station's test card whose colour never changes:
    the accent block's centre and the background at the top right."""
    background, accent = station_colours(station)
    return [(0.125, 0.125, accent), (0.875, 0.125, background)]


def shows_card(image: np.ndarray, station: str, tolerance: int = 8) -> bool:
    """Whether a packed I420 picture shows `station`'s test card full frame."""
    height, width = image.shape[0] * 2 // 3, image.shape[1]
    return all(
        close_to(yuv_at(image, int(x * width) & ~1, int(y * height) & ~1), yuv, tolerance)
        for x, y, yuv in card_points(station)
    )


def corner_yuv(image: np.ndarray) -> tuple[int, int, int]:
    return yuv_at(image, 4, 4)


def mixer_slate_corner() -> tuple[int, int, int]:
    """The colour of the mixer's signal-lost slate in its corner."""
    picture = mixer_slate("x", 320, 180)
    return corner_yuv(picture.data)


def distribution_slate_corner() -> tuple[int, int, int]:
    """The colour of distribution's own slate (sent while the program is gone) in its corner."""
    return corner_yuv(slate_i420(PUSH_WIDTH, PUSH_HEIGHT, DEFAULT_SLATE_TEXT))


async def gfx_command(bus: Bus, prod: str, cmd: Any) -> Any:
    from services.common.gen.baycast.v1 import graphics_pb2

    return await bus.request(subject("prod", prod, "gfx", "cmd"), cmd, graphics_pb2.GfxReply)
