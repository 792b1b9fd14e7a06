"""Benchmark: a 1080p25 H.264 clip played into the program.

A 20 s clip made by Debian ffmpeg (its moving `testsrc2` pattern with film grain, H.264 High at
8 Mbit/s, and a tone in AAC; 1920x1080, 25 fps) is played by the mixer's player
(services/mixer/playout.py) at the production's clock: one tick every 40 ms, each taking the
picture and the sound for that frame, while its thread decodes ahead. The figure is this
process's CPU-seconds (every thread) per second of clip. The reference is Debian ffmpeg decoding
the same file to yuv420p and s16 48 kHz on one thread (`-f null`), its CPU from the child's rusage.
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from bench.harness import Result, Stat
from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer.playout import Playout

WIDTH, HEIGHT, FPS = 1920, 1080, 25
SECONDS = 20.0
TARGET_CORES = 0.15
BITRATE = "8M"


def make_clip(path: Path) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS},noise=alls=12:allf=t",
         "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000",
         "-t", str(SECONDS), "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high",
         "-b:v", BITRATE, "-maxrate", BITRATE, "-bufsize", "16M", "-g", "50", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-ac", "2", "-b:a", "128k", str(path)],
        check=True,
    )  # fmt: skip
    return path


async def _play(path: Path) -> tuple[float, int]:
    """CPU-seconds per second of clip played in real time, and the late frames."""
    player = Playout("clip/bench", path, WIDTH, HEIGHT, FPS)
    await player.open()
    loop = asyncio.get_running_loop()
    start_cpu, start = time.process_time(), loop.time()
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)
    ticks = round(SECONDS * FPS)
    for index in range(ticks):
        await asyncio.sleep(max(0.0, start + index / FPS - loop.time()))
        player.tick()
    cpu = time.process_time() - start_cpu
    late = player.late_frames
    await player.close()
    return cpu / SECONDS, late


def ffmpeg_cores(path: Path) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        ["ffmpeg", "-nostats", "-hide_banner", "-threads", "1", "-i", str(path),
         "-pix_fmt", "yuv420p", "-ar", "48000", "-sample_fmt", "s16", "-f", "null", "-"],
        capture_output=True,
        check=True,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) / SECONDS


def run(runs: int) -> list[Result]:
    with tempfile.TemporaryDirectory() as folder:
        path = make_clip(Path(folder) / "clip.mp4")
        played = [asyncio.run(_play(path)) for _ in range(runs)]
        reference = Stat.of([ffmpeg_cores(path) for _ in range(runs)])
    measured = Stat.of([cores for cores, _late in played])
    late = max(late for _cores, late in played)
    return [
        Result(
            name="Clip playout: a 1080p25 H.264 clip into the program",
            target=f"≤ {TARGET_CORES} core",
            measured=measured.fmt(" core", 3),
            reference=f"Debian ffmpeg decoding it, one thread: {reference.fmt(' core', 3)}",
            ratio=f"{measured.median / reference.median:.2f}x ffmpeg",
            met=measured.median <= TARGET_CORES and late == 0,
            notes=[
                f"A {SECONDS:.0f} s 1080p25 clip of moving pattern and grain, H.264 High at "
                f"{BITRATE}bit/s and AAC, played at the production's clock by the mixer's "
                "player: a tick every 40 ms takes the frame's "
                "picture (I420 at 1920x1080) and sound (1920 samples) while its thread decodes "
                f"up to a second ahead. This process's CPU per second of clip, every thread. "
                f"Ticks with no frame decoded in time: {late} (at most, of "
                f"{round(SECONDS * FPS)} a run).",
            ],
        )
    ]
