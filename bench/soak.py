"""`make soak`: the seed's show for its full 50 minutes, and what it leaves behind.

The show of the capacity benchmark (twelve 720p25 WebRTC contributions, the 1080p25 program
with the demo's looping rundown and graphics, two RTMP pushes, HLS and a recording) runs for
`BAYCAST_SOAK_S` seconds (3000 by default). Over the run: program frames the mixer skipped,
pictures distribution skipped and packets its outputs dropped, the CPU of every process, and
each process's resident memory, sampled every 30 s from five minutes in (a tenth of a shorter
run): its growth is the median of the last five samples against the median of the first five (a
process whose heap rises and falls within a minute, as an encoder's does, would make a single
sample at either end read its moment, not its growth). Once the show has ended, Debian's ffmpeg
`freezedetect` reads the whole recording: every source moves every frame (the test cards'
clocks, the title clip), so any frozen stretch is the platform's.

It is named only on purpose (`python -m bench soak`): `make bench` does not run it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.capacity import SETTLE_S, SHOW_STATIONS, ShowRun, counters, measure, running_show
from bench.harness import Result
from bench.platform import Platform, rss_mib, tree_cpu_s
from services.common.bus import subject
from services.common.gen.baycast.v1 import distribution_pb2
from services.up import demo

SOAK_S = float(os.environ.get("BAYCAST_SOAK_S", "3000"))
BASELINE_S = 300.0
TARGET_GROWTH = 0.05
TARGET_CORES = 1.2
# A stretch this long with no change in the picture is a freeze (freezedetect's default noise
# floor: an exact repeat is far below it, a test card's running clock far above).
FREEZE_S = 1.0
PLATFORM = ("ingest", "mixer", "graphics", "distribution", "monitoring", "control", "nats")
# Skips are counted in windows this long, to be set beside the frozen stretches' times.
WINDOW_S = 10.0
MEMORY_SAMPLE_S = 30.0
MEMORY_WINDOW = 5  # samples at each end of the run whose median the growth compares


@dataclass
class Window:
    at_s: float
    mixer_skipped: float
    dist_skipped: float
    host_cores: float
    cores: dict[str, float]

    def describe(self) -> str:
        busiest = sorted(self.cores.items(), key=lambda kv: -kv[1])[:3]
        return (
            f"{self.at_s:.0f} s: {self.mixer_skipped:.0f}, {self.dist_skipped:.0f} (host "
            f"{self.host_cores:.2f} cores; " + ", ".join(f"{n} {c:.2f}" for n, c in busiest) + ")"
        )


def host_busy_s() -> float:
    """The host's busy CPU seconds since boot, summed over its cores (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    busy = sum(fields[:8]) - idle  # guest time is counted in user already
    return busy / os.sysconf("SC_CLK_TCK")


@dataclass
class Soak:
    show: ShowRun  # counts and CPU over the run
    # Each process's RSS, and its shared-memory part (the media rings), sampled from the baseline.
    rss: dict[str, list[float]] = field(default_factory=dict)
    shared: dict[str, list[float]] = field(default_factory=dict)
    freezes: list[tuple[float, float]] = field(default_factory=list)  # (start, length)
    recorded_s: float = 0
    # Each window that had skips: seconds into the recording at its end, the mixer's skipped
    # ticks, distribution's skipped pictures, and the cores the host and each process used in it.
    skips: list[Window] = field(default_factory=list)
    host_cores: list[float] = field(default_factory=list)  # the host's busy cores, every window

    def growth(self, name: str) -> float:
        first, last = ends(self.rss.get(name, []))
        return (last - first) / first if first else 0.0

    @property
    def platform_cores(self) -> float:
        return sum(c for name, c in self.show.cpu.items() if name in PLATFORM)


def freezes(files: list[Path]) -> tuple[list[tuple[float, float]], float]:
    """Frozen stretches of at least FREEZE_S in the recording (start and length, seconds into
    it) and the seconds it holds, by ffmpeg's freezedetect over its files in order."""
    if not files:
        return [], 0.0
    listing = files[0].parent / "soak-files.txt"
    listing.write_text("".join(f"file '{f.name}'\n" for f in files))
    out = subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-nostats", "-f", "concat", "-safe", "0", "-i", str(listing),
            "-map", "0:v:0", "-vf", f"freezedetect=d={FREEZE_S}", "-f", "null", "-",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )  # fmt: skip
    starts = [float(m) for m in re.findall(r"freeze_start: ([0-9.]+)", out.stderr)]
    lengths = [float(m) for m in re.findall(r"freeze_duration: ([0-9.]+)", out.stderr)]
    times = re.findall(r"time=(\d+):(\d+):([0-9.]+)", out.stderr)
    recorded = 0.0
    if times:
        h, m, s = times[-1]
        recorded = int(h) * 3600 + int(m) * 60 + float(s)
    return list(zip(starts, lengths, strict=False)), recorded


def host_summary(cores: list[float]) -> str:
    """The host's busy cores by window: their median and highest, and how many windows had every
    core busy."""
    if not cores:
        return "not sampled"
    full = sum(c >= (os.cpu_count() or 1) - 0.05 for c in cores)
    return (
        f"median {statistics.median(cores):.2f}, highest {max(cores):.2f}, "
        f"{full} of {len(cores)} windows with every core busy"
    )


def ends(samples: list[float]) -> tuple[float, float]:
    """The medians of the first and of the last `MEMORY_WINDOW` samples (of halves when fewer)."""
    n = min(MEMORY_WINDOW, len(samples) // 2)
    if n == 0:
        return (samples[0], samples[0]) if samples else (0.0, 0.0)
    return statistics.median(samples[:n]), statistics.median(samples[-n:])


async def _memory(p: Platform, soak: Soak) -> None:
    """Every process's resident memory every MEMORY_SAMPLE_S once the first five minutes (a
    tenth of a shorter run) are over: caches and rings have filled by then."""
    await asyncio.sleep(min(BASELINE_S, soak.show.seconds / 10))
    while True:
        for name, pid in p.pids().items():
            soak.rss.setdefault(name, []).append(rss_mib(pid))
            soak.shared.setdefault(name, []).append(rss_mib(pid, "RssShmem"))
        await asyncio.sleep(MEMORY_SAMPLE_S)


async def _skips(p: Platform, soak: Soak) -> None:
    """The skips of each window of the run, timed in the recording (it started as the outputs
    went live, SETTLE_S before the measured run), with the CPU the host and each process used in
    the window."""
    started = before_at = time.monotonic()
    before = await counters(p)
    pids = p.pids()
    cpu_before = {name: tree_cpu_s(pid) for name, pid in pids.items()}
    host_before = host_busy_s()
    while True:
        await asyncio.sleep(WINDOW_S)
        now, at = await counters(p), time.monotonic()
        cpu = {name: tree_cpu_s(pid) for name, pid in pids.items()}
        host = host_busy_s()
        elapsed = max(at - before_at, 1e-3)
        soak.host_cores.append((host - host_before) / elapsed)
        mixer, dist = now[1] - before[1], now[2] - before[2]
        if mixer or dist:
            cores = {n: (cpu[n] - cpu_before[n]) / elapsed for n in cpu}
            window = Window(at - started + SETTLE_S, mixer, dist, soak.host_cores[-1], cores)
            soak.skips.append(window)
        before, before_at, cpu_before, host_before = now, at, cpu, host


async def soak_show(seconds: float, keep: Path) -> Soak:
    """The soak of `seconds`; its recording is moved to `keep` and read after the show ended
    (ffmpeg's reading of 50 minutes of 1080p would otherwise share the CPU with the show)."""
    soak = Soak(ShowRun(SHOW_STATIONS, seconds))
    files: list[Path] = []
    try:
        async with running_show(SHOW_STATIONS, "soak") as p:
            samplers = [
                asyncio.create_task(_memory(p, soak)),
                asyncio.create_task(_skips(p, soak)),
            ]
            try:
                await measure(p, soak.show)
            finally:
                for sampler in samplers:
                    sampler.cancel()
            stop = distribution_pb2.DistCommand(stop=distribution_pb2.OutputRef(id="archive"))
            await p.bus.request(
                subject("prod", demo.PRODUCTION, "dist", "cmd"),
                stop,
                distribution_pb2.DistReply,
                timeout=30,
            )
            folder = p.root / "data" / "recordings" / demo.PRODUCTION / "archive"
            for recorded in sorted(folder.glob("*.ts")) + sorted(folder.glob("*.mp4")):
                files.append(Path(shutil.move(recorded, keep / recorded.name)))
    except RuntimeError as exc:
        soak.show.error = str(exc)
    found, soak.recorded_s = await asyncio.to_thread(freezes, files)
    # The recording starts as the outputs go live, SETTLE_S before the measured run (the
    # program may still be arriving): a stretch over by then is not counted.
    soak.freezes = [(at, n) for at, n in found if at + n > SETTLE_S]
    return soak


def run(runs: int) -> list[Result]:
    del runs  # one long run
    with tempfile.TemporaryDirectory(prefix="baycast-soak-") as keep:
        s = asyncio.run(soak_show(SOAK_S, Path(keep)))
    run = s.show
    minutes = run.seconds / 60
    baseline_min = round(min(BASELINE_S, run.seconds / 10) / 60, 1)
    platform_rss = [n for n in PLATFORM if s.rss.get(n)]
    window = min((min(MEMORY_WINDOW, len(s.rss[n]) // 2) for n in platform_rss), default=0)
    worst = max(platform_rss, key=s.growth, default="")
    longest = max((n for _at, n in s.freezes), default=0.0)
    met = run.held and all(s.growth(n) < TARGET_GROWTH for n in platform_rss) and not s.freezes
    growth = ", ".join(
        "{} {:.0f} → {:.0f} MiB ({:+.1%}".format(n, *ends(s.rss[n]), s.growth(n))
        + (
            "; media rings {:.0f} → {:.0f} of it)".format(*ends(s.shared[n]))
            if any(s.shared.get(n, []))
            else ")"
        )
        for n in platform_rss
    )
    return [
        Result(
            name="Soak: the seed's show (12 × 720p25 WebRTC → 1080p25, 2 RTMP + HLS + recording)",
            target=f"{minutes:.0f} min: 0 skipped program frames, 0 distribution skips, "
            f"RSS growth < {TARGET_GROWTH:.0%} after the first {baseline_min:g} min, "
            "no frozen stretch in the recording",
            measured=f"{run.skipped_ticks:.0f} skipped program frames, "
            f"{run.dist_skipped:.0f} distribution skips, {run.dist_dropped:.0f} dropped packets; "
            f"largest RSS growth {s.growth(worst):+.1%} ({worst}); "
            f"{len(s.freezes)} frozen stretches ≥ {FREEZE_S:g} s"
            + (
                f" (longest {longest:.1f} s; at "
                + ", ".join(f"{at:.0f} s" for at, _n in s.freezes[:5])
                + " into the recording)"
                if s.freezes
                else ""
            )
            + (f" ({run.error})" if run.error else ""),
            reference=f"{run.program_frames:.0f} program frames made in {minutes:.0f} min; "
            f"{s.recorded_s / 60:.1f} min recorded",
            ratio=f"platform's processes {s.platform_cores:.2f} of {os.cpu_count()} cores "
            f"(target ≤ {TARGET_CORES})",
            met=met,
            notes=[
                f"Memory, the median of the first {window} samples (one every "
                f"{MEMORY_SAMPLE_S:g} s from {baseline_min:g} min in) → the median of the last "
                f"{window} (with the pages of the media rings a process writes or reads, "
                "which count in every process that maps them and follow the layouts on air), "
                "and CPU over the run: "
                + growth
                + "; CPU "
                + ", ".join(f"{n} {c:.2f}" for n, c in run.cpu.items())
                + " cores (the stations' process stands for the stations' own machines and is "
                "not the platform's).",
                f"Skips by {WINDOW_S:g} s window (seconds into the recording at the window's end: "
                "the mixer's skipped ticks, distribution's skipped pictures; the cores the host "
                "and the three busiest processes used in the window): "
                + ("; ".join(w.describe() for w in s.skips) if s.skips else "none")
                + f". The host's busy cores by window over the run: {host_summary(s.host_cores)}"
                + ". Frozen stretches (start, length): "
                + (", ".join(f"{at:.0f} s {n:.1f} s" for at, n in s.freezes) or "none")
                + ".",
            ],
        )
    ]
