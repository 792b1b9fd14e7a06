"""The whole platform for a benchmark: nats-server and the five services as processes.

It reuses `baycast up`'s launcher (the same processes an operator runs), with the children's log
lines written to a file instead of the terminal. Helpers read each service's `/metrics` and the
CPU and memory of each process from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.harness import process_cpu_s
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import distribution_pb2, media_pb2
from services.common.handles import HandleDirectory
from services.common.rpc import ChannelCache
from services.up.launcher import Console, Launcher
from tests.support.rtmp import RtmpServer


class LogConsole(Console):
    """Children's lines go to a file: a benchmark's output stays readable."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.colour = False
        self.file = path.open("a", encoding="utf-8")

    def line(self, name: str, text: str) -> None:
        self.file.write(f"{name:>12} | {text}\n")


@dataclass
class Platform:
    launcher: Launcher
    bus: Bus
    directory: HandleDirectory
    root: Path

    def http(self, service: str) -> str:
        services = self.launcher.endpoints()["services"]
        assert isinstance(services, dict)
        return str(services[service]["http"])

    def grpc(self, service: str) -> str:
        services = self.launcher.endpoints()["services"]
        assert isinstance(services, dict)
        return str(services[service]["grpc"])

    def pids(self) -> dict[str, int]:
        return {
            c.name: c.proc.pid
            for c in self.launcher.children
            if c.proc is not None and c.proc.returncode is None
        }

    def metric(self, service: str, name: str, **labels: str) -> float:
        """The sum of a metric's samples (matching `labels`) on a service's /metrics."""
        with urllib.request.urlopen(self.http(service) + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in (name, name + "_total") and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total


def children(pid: int) -> list[int]:
    """The live child processes of `pid`."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its live children (a service's ffmpeg relays)."""
    total = process_cpu_s(pid)
    for child in children(pid):
        with contextlib.suppress(OSError):
            total += tree_cpu_s(child)
    return total


def rss_mib(pid: int, part: str = "VmRSS") -> float:
    """A process's resident memory, or one `part` of it from /proc/<pid>/status: `RssShmem`
    (shared-memory pages it maps, such as the media rings it writes and reads, each ring counted
    in every process that maps it) or `RssAnon` (its private memory)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(part + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


@contextlib.asynccontextmanager
async def platform(name: str) -> AsyncIterator[Platform]:
    root = Path(tempfile.mkdtemp(prefix=f"baycast-bench-{name}-"))
    console = LogConsole(root / "services.log")
    launcher = Launcher(root, "127.0.0.1", console)
    bus: Bus | None = None
    try:
        await launcher.start_nats(None)
        await launcher.start_services(
            {
                "ingest": {"BAYCAST_INGEST_ICE_HOSTS": "127.0.0.1"},
                "distribution": {"BAYCAST_DISTRIBUTION_DATA_DIR": str(root / "data")},
                "mixer": {"BAYCAST_LOG_LEVEL": "warning"},
            }
        )
        bus = Bus(launcher.nats_url_for("admin"), f"bench-{name}")
        await bus.connect()
        yield Platform(launcher, bus, HandleDirectory(bus), root)
    finally:
        if bus is not None:
            await bus.drain()
        await launcher.stop()
        console.file.close()
        if os.environ.get("BAYCAST_BENCH_KEEP") != "1":  # logs, NATS store, HLS, recordings
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def card_peer(nats_url: str, prefix: str, count: int) -> Iterator[subprocess.Popen[str]]:
    """`count` solid-colour gRPC sources (tests' cards) served by their own process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.card_peer", nats_url, prefix, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # log lines may come first; EOF means it died
            if line.strip() == "ready":
                break
        else:
            raise RuntimeError("card peer did not start")
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def video_frames(
    platform: Platform, handle: str, rendition: media_pb2.Rendition | None = None
) -> AsyncIterator[media_pb2.MediaFrame]:
    """A handle's video frames, as a subscriber (audio skipped)."""
    channels = ChannelCache()
    try:
        r = rendition or media_pb2.Rendition(no_audio=True)
        async for message in platform.directory.frames(channels, handle, r, subscriber="bench"):
            if message.WhichOneof("body") == "video":
                yield message
    finally:
        await channels.close()


async def add_output(p: Platform, prod_id: str, spec: distribution_pb2.OutputSpec) -> None:
    subj = subject("prod", prod_id, "dist", "cmd")
    add = distribution_pb2.DistCommand(add=distribution_pb2.AddOutput(output=spec))
    await p.bus.request(subj, add, distribution_pb2.DistReply, timeout=10)


async def wait_live(p: Platform, prod_id: str, ids: list[str], timeout: float = 30.0) -> None:
    """Until every output in `ids` is live (pushing), or RuntimeError."""
    subj = subject("prod", prod_id, "dist", "cmd")
    listing = distribution_pb2.DistCommand(list=distribution_pb2.ListOutputs())
    deadline = time.monotonic() + timeout
    status: dict[str, int] = {}
    while time.monotonic() < deadline:
        reply = await p.bus.request(subj, listing, distribution_pb2.DistReply, timeout=10)
        status = {o.id: o.status for o in reply.outputs}
        if all(status.get(i) == distribution_pb2.OUTPUT_STATUS_LIVE for i in ids):
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"outputs not live after {timeout:.0f} s: {status}")


def rtmp_spec(output_id: str, rtmp: RtmpServer) -> distribution_pb2.OutputSpec:
    return distribution_pb2.OutputSpec(
        id=output_id,
        kind=distribution_pb2.OUTPUT_KIND_RTMP,
        url=rtmp.app_url(),
        stream_key=output_id,
        enabled=True,
    )
