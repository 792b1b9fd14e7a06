"""Benchmark: a 1080p25 H.264 clip played into the program, as the library keeps it.

A 20 s clip made by Debian ffmpeg (its moving `testsrc2` pattern with film grain, H.264 High at
8 Mbit/s, and a tone in AAC; 1920x1080, 25 fps) is prepared in the library's house format as
`baycast ctl media add` does (services/common/house_format.py, ADR 0027), then played by the
mixer's player (services/mixer/playout.py) at the production's clock: one tick every 40 ms, each
taking the picture and the sound for that frame, while its thread decodes ahead. The figure is
this process's CPU-seconds (every thread) per second of clip. The reference is Debian ffmpeg
decoding the clip as it was made (before preparing) to yuv420p and s16 48 kHz on one thread
(`-f null`), its CPU from the child's rusage; the clip played as it was made is measured too.
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
from services.common.house_format import prepare
from services.mixer.playout import Playout
from tests.support.media_files import grain_clip, psnr_db

WIDTH, HEIGHT, FPS = 1920, 1080, 25
SECONDS = 20.0
TARGET_CORES = 0.15
BITRATE = "8M"


def make_clip(path: Path) -> Path:
    rate = ["-b:v", BITRATE, "-maxrate", BITRATE, "-bufsize", "16M", "-g", "50", "-b:a", "128k"]
    return grain_clip(path, WIDTH, HEIGHT, SECONDS, fps=FPS, encoding=rate)


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
        made = make_clip(Path(folder) / "clip.mp4")
        started = time.monotonic()
        house = prepare(made, Path(folder) / "house.mp4")
        preparing_s = time.monotonic() - started
        quality = psnr_db(house, made)
        sizes = made.stat().st_size, house.stat().st_size
        played = []
        as_made = []
        for _ in range(runs):  # interleaved: the host's other tenants touch both alike
            played.append(asyncio.run(_play(house)))
            as_made.append(asyncio.run(_play(made)))
        reference = Stat.of([ffmpeg_cores(made) for _ in range(runs)])
    measured = Stat.of([cores for cores, _late in played])
    unprepared = Stat.of([cores for cores, _late in as_made])
    late = max(late for _cores, late in played + as_made)
    mbit = [size * 8 / SECONDS / 1e6 for size in sizes]
    return [
        Result(
            name="Clip playout: a 1080p25 H.264 clip into the program",
            target=f"≤ {TARGET_CORES} core",
            measured=f"{measured.fmt(' core', 3)} as the library keeps it (house format)",
            reference=f"Debian ffmpeg decoding the clip as made, one thread: "
            f"{reference.fmt(' core', 3)}",
            ratio=f"{measured.median / reference.median:.2f}x ffmpeg",
            met=measured.median <= TARGET_CORES and late == 0,
            notes=[
                f"A {SECONDS:.0f} s 1080p25 clip of moving pattern and grain, H.264 High at "
                f"{BITRATE}bit/s and AAC, prepared in the house format as `baycast ctl media "
                "add` does (H.264 with x264's fastdecode tune at CRF 18: no CABAC, no "
                f"deblocking; {preparing_s:.1f} s for the {SECONDS:.0f} s clip on this host; "
                f"{mbit[0]:.1f} → {mbit[1]:.1f} Mbit/s, grain being the costliest picture to "
                f"keep; {quality:.1f} dB PSNR against the clip as made), then played at the "
                "production's clock by the mixer's player: a tick every 40 ms takes the "
                "frame's picture (I420 at 1920x1080) and sound (1920 samples) while its thread "
                "decodes up to a second ahead. This process's CPU per second of clip, every "
                f"thread. The clip played as made: {unprepared.fmt(' core', 3)}. Ticks with no "
                f"frame decoded in time: {late} (at most, of {round(SECONDS * FPS)} a run).",
            ],
        )
    ]
