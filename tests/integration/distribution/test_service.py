"""`baycast distribution` as a process, driven by `baycast ctl output ...`: outputs are kept in
the key-value store and come back after a restart; the stream key never shows."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.handles import HandleDirectory
from services.distribution.distributor import BUCKET
from tests.integration.distribution.conftest import FPS, HEIGHT, PROGRAM_YUV, WIDTH
from tests.integration.distribution.media_check import largest_gap, video_times
from tests.support.media_source import Card, FakeMediaServer
from tests.support.nats import NatsServer
from tests.support.rtmp import RtmpServer, probe
from tests.support.services import service_process

SECRET = "k-very-secret-42"


def ctl(nats_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "ctl", "--nats", nats_url, "output", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "BAYCAST_STREAM_KEY": SECRET},
    )


async def statuses(bus: Bus, prod: str) -> dict[str, dist.OutputState]:
    reply = await bus.request(
        subject("prod", prod, "dist", "cmd"),
        dist.DistCommand(list=dist.ListOutputs()),
        dist.DistReply,
    )
    return {s.id: s for s in reply.outputs}


async def wait_live(bus: Bus, prod: str, names: set[str], timeout: float = 30) -> None:
    for _ in range(int(timeout * 10)):
        states = await statuses(bus, prod)
        if all(states.get(n) and states[n].status == dist.OUTPUT_STATUS_LIVE for n in names):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not live: {states}")


async def forget_outputs(bus: Bus, prod: str) -> None:
    """The session's nats-server outlives the test: its outputs go with it (else a distribution
    a later test starts in-process takes them up and runs their encoder and outputs)."""
    specs = await bus.kv(BUCKET, dist.OutputSpec)
    for key in await specs.keys():
        if key.startswith(f"{prod}."):
            await specs.delete(key)


async def test_ctl_and_restart(nats_server: NatsServer, tmp_path: Path, rtmp: RtmpServer) -> None:
    prod = f"svc{os.getpid()}"
    bus = Bus(nats_server.url, "dist-svc-test")
    await bus.connect()
    media = FakeMediaServer()
    media.add(Card(f"prod/{prod}/program", PROGRAM_YUV, fps=FPS))
    await media.start()
    await media.announce(HandleDirectory(bus))
    env = {
        "BAYCAST_DISTRIBUTION_DATA_DIR": str(tmp_path / "data"),
        "BAYCAST_DISTRIBUTION_WIDTH": str(WIDTH),
        "BAYCAST_DISTRIBUTION_HEIGHT": str(HEIGHT),
        "BAYCAST_DISTRIBUTION_X264_PRESET": "ultrafast",
        "BAYCAST_DISTRIBUTION_VIDEO_BITRATE_KBPS": "500",
        "BAYCAST_LOG_LEVEL": "info",
    }
    app_url = rtmp.app_url()
    first = service_process("distribution", nats_server.url, tmp_path, "distribution", env)
    second = service_process("distribution", nats_server.url, tmp_path, "distribution", env)
    try:
        first.start()
        added = ctl(
            nats_server.url, "add", "push", "--prod", prod, "--kind", "rtmp", "--url", app_url
        )
        assert added.returncode == 0, added.stderr
        assert "push" in added.stdout and SECRET not in added.stdout and "/***" in added.stdout
        assert ctl(nats_server.url, "add", "web", "--prod", prod, "--kind", "hls").returncode == 0
        stopped = ctl(
            nats_server.url, "add", "rec", "--prod", prod, "--kind", "recording", "--stopped"
        )
        assert stopped.returncode == 0, stopped.stderr
        wrong = ctl(
            nats_server.url, "add", "bad", "--prod", prod, "--kind", "rtmp", "--url", "http://x/y"
        )
        assert wrong.returncode == 2 and "add.output.url" in wrong.stderr
        await wait_live(bus, prod, {"push", "web"})
        listed = ctl(nats_server.url, "list", "--prod", prod)
        assert listed.returncode == 0 and "live" in listed.stdout and "idle" in listed.stdout

        await asyncio.sleep(2)
        first.signal(signal.SIGTERM)
        assert await asyncio.to_thread(first.wait, 20) == 0
        assert SECRET not in first.logs()
        assert rtmp.recordings(SECRET)  # the push arrived under the real key

        second.start()
        await wait_live(bus, prod, {"push", "web"})
        states = await statuses(bus, prod)
        assert states["rec"].status == dist.OUTPUT_STATUS_IDLE and not states["rec"].enabled
        assert ctl(nats_server.url, "start", "rec", "--prod", prod).returncode == 0
        await wait_live(bus, prod, {"rec"})
        await asyncio.sleep(2)
        removed = ctl(nats_server.url, "remove", "push", "--prod", prod)
        assert removed.returncode == 0, removed.stderr
        assert "push" not in await statuses(bus, prod)
        missing = ctl(nats_server.url, "stop", "push", "--prod", prod)
        assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr
    finally:
        first.stop()
        second.stop()
        await media.stop()
        await forget_outputs(bus, prod)
        await bus.drain()
    assert SECRET not in second.logs()
    pushes = rtmp.recordings(SECRET)
    assert len(pushes) == 2  # one publish per service run
    info = probe(pushes[-1])
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (WIDTH, HEIGHT)


async def test_recordings_play_after_a_crash(nats_server: NatsServer, tmp_path: Path) -> None:
    prod = f"crash{os.getpid()}"
    bus = Bus(nats_server.url, "dist-crash-test")
    await bus.connect()
    media = FakeMediaServer()
    media.add(Card(f"prod/{prod}/program", PROGRAM_YUV, fps=FPS))
    await media.start()
    await media.announce(HandleDirectory(bus))
    data = tmp_path / "data"
    env = {
        "BAYCAST_DISTRIBUTION_DATA_DIR": str(data),
        "BAYCAST_DISTRIBUTION_WIDTH": str(WIDTH),
        "BAYCAST_DISTRIBUTION_HEIGHT": str(HEIGHT),
        "BAYCAST_DISTRIBUTION_X264_PRESET": "ultrafast",
    }
    service = service_process(
        "distribution", nats_url=nats_server.url, tmp_path=tmp_path, service="distribution", env=env
    )
    try:
        service.start()
        for name, fmt in (("ts", "ts"), ("mp4", "fmp4")):
            added = ctl(
                nats_server.url, "add", name, "--prod", prod, "--kind", "recording", "--format", fmt
            )
            assert added.returncode == 0, added.stderr
        await wait_live(bus, prod, {"ts", "mp4"})
        await asyncio.sleep(5)
        states = await statuses(bus, prod)
        service.signal(signal.SIGKILL)
        await asyncio.to_thread(service.wait, 10)
    finally:
        service.stop()
        await media.stop()
        await forget_outputs(bus, prod)
        await bus.drain()
    for name, suffix in (("ts", ".ts"), ("mp4", ".mp4")):
        (path,) = (data / "recordings" / prod / name).glob(f"*{suffix}")
        times = video_times([path])
        # Everything but the last moments before the crash (still in buffers) is there.
        assert len(times) / FPS > states[name].media_seconds - 2.5, (name, len(times))
        assert largest_gap(times) <= 1.5 / FPS
        info = probe(path)
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        assert (video["width"], video["height"]) == (WIDTH, HEIGHT)
        assert any(s["codec_type"] == "audio" for s in info["streams"])
