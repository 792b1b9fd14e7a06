"""Benchmark 4: the case's show in real time on this box, and how many contributions fit.

`baycast up`'s own pieces run the show: twelve stations publish 720p25 H.264 over WHIP/WebRTC
(each replays a pre-encoded 2 s loop of its test card, `services/station/tracks.py`, so their
encoding does not eat the box), the mixer makes a 1080p25 program with the demo's rundown
(city wall, full screen, picture-in-picture, quad) and graphics, distribution encodes it once
for two RTMP pushes to nginx-rtmp, HLS and a recording. Over the run: program frames the mixer
skipped, frames distribution skipped or dropped, CPU and memory of every process. Then a
bounded search for the largest number of contributions that still drops nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from bench.harness import Result
from bench.platform import Platform, add_output, platform, rss_mib, rtmp_spec, tree_cpu_s, wait_live
from services.up import demo
from tests.support.rtmp import RtmpServer

SHOW_S = float(os.environ.get("BAYCAST_BENCH_CAPACITY_S", "60"))
SEARCH_S = float(os.environ.get("BAYCAST_BENCH_SEARCH_S", "30"))
SHOW_STATIONS = 12
SEARCH = (4, 8, 12, 16)
STATION_SIZE = (1280, 720)
ONLINE_TIMEOUT_S = 90.0
SETTLE_S = 5.0
# Issue targets read off the show's run: ingest's CPU per contribution, the platform's on two
# cores (every process but the stations', which stand for the stations' own machines).
INGEST_CORE_PER_CONTRIBUTION = 0.04
PLATFORM_CORES = 1.2


@dataclass
class ShowRun:
    stations: int
    seconds: float
    program_frames: float = 0
    skipped_ticks: float = 0
    dist_skipped: float = 0
    dist_dropped: float = 0
    cpu: dict[str, float] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)
    error: str = ""

    @property
    def held(self) -> bool:
        return (
            not self.error
            and self.skipped_ticks == 0
            and self.dist_skipped == 0 == (self.dist_dropped)
        )


def plan(count: int) -> list[demo.Station]:
    """`count` contributions: cities and the two reporters first, then extra stations."""
    cities = max(1, min(count - len(demo.REPORTERS), len(demo.CITIES)))
    stations = [*demo.CITIES[:cities], *demo.REPORTERS][:count]
    extra = [
        demo.Station(f"ex{i}", f"特约{i}台", f"特约{i}", f"Extra {i}")
        for i in range(count - len(stations))
    ]
    return stations + extra


async def _wait_online(p: Platform, ids: list[str]) -> None:
    deadline = time.monotonic() + ONLINE_TIMEOUT_S
    while time.monotonic() < deadline:
        found = [await p.directory.resolve(f"source/{i}") for i in ids]
        if all(found):
            return
        await asyncio.sleep(1)
    raise RuntimeError(f"only {sum(map(bool, found))} of {len(ids)} stations came online")


@contextlib.asynccontextmanager
async def running_show(count: int, name: str = "capacity") -> AsyncIterator[Platform]:
    """The seed's show with `count` contributions, on air to every output, settled. A show that
    cannot get there raises RuntimeError."""
    stations = plan(count)
    with RtmpServer() as rtmp:
        async with platform(name) as p:
            creds = await demo.register_stations(p.bus, stations, p.http("ingest"))
            station_plan = {"stations": creds, "size": list(STATION_SIZE), "fps": 25}
            await p.launcher.start_module(
                "stations", "services.up.stations", json.dumps(station_plan).encode()
            )
            await demo.add_opener(p.bus, p.root, "1080p")  # the title film, as `baycast up`
            await demo.create_production(p.bus, demo.production(stations, "1080p"))
            await demo.add_outputs(p.bus)
            for name in ("cctv", "xinhua"):
                await add_output(p, demo.PRODUCTION, rtmp_spec(name, rtmp))
            await demo.show_standing_graphics(p.bus)
            await demo.start_rundown(p.bus, stations)
            await _wait_online(p, [s.id for s in stations])
            await wait_live(p, demo.PRODUCTION, ["cctv", "xinhua", "web", "archive"])
            await asyncio.sleep(SETTLE_S)
            yield p


async def counters(p: Platform) -> tuple[float, float, float, float]:
    """Program frames made, ticks the mixer skipped, pictures distribution skipped, packets
    its outputs dropped: counts since the services started."""
    prod = demo.PRODUCTION
    return (
        p.metric("mixer", "baycast_mixer_frames", production=prod),
        p.metric("mixer", "baycast_mixer_ticks_skipped", production=prod),
        p.metric("distribution", "baycast_distribution_skipped_frames"),
        p.metric("distribution", "baycast_distribution_output_dropped_packets"),
    )


async def measure(p: Platform, result: ShowRun) -> None:
    """Run the show on for `result.seconds` and fill in what it did: the counts of `counters`
    over the run, each process's CPU over it and memory at its end, and who exited."""
    pids = p.pids()
    before = await counters(p)
    cpu0 = {name: tree_cpu_s(pid) for name, pid in pids.items()}
    start = time.monotonic()
    await asyncio.sleep(result.seconds)
    wall = time.monotonic() - start
    after = await counters(p)
    result.cpu = {name: (tree_cpu_s(pid) - cpu0[name]) / wall for name, pid in pids.items()}
    result.rss = {name: rss_mib(pid) for name, pid in pids.items()}
    (
        result.program_frames,
        result.skipped_ticks,
        result.dist_skipped,
        result.dist_dropped,
    ) = (a - b for a, b in zip(after, before, strict=True))
    crashed = p.launcher.crashed()
    if crashed:
        result.error = f"exited: {', '.join(crashed)}"


async def show(count: int, seconds: float) -> ShowRun:
    result = ShowRun(count, seconds)
    try:
        async with running_show(count) as p:
            await measure(p, result)
    except RuntimeError as exc:
        result.error = str(exc)
    return result


def _describe(r: ShowRun) -> str:
    if r.error:
        return f"{r.stations} stations: failed ({r.error})"
    return (
        f"{r.stations} stations, {r.seconds:.0f} s: {r.program_frames:.0f} program frames, "
        f"{r.skipped_ticks:.0f} skipped by the mixer, {r.dist_skipped:.0f} skipped and "
        f"{r.dist_dropped:.0f} packets dropped by distribution"
    )


def _usage(r: ShowRun) -> str:
    order = ("ingest", "mixer", "graphics", "distribution", "monitoring", "stations", "nats")
    parts = [
        f"{name} {r.cpu[name]:.2f} core / {r.rss[name]:.0f} MiB" for name in order if name in r.cpu
    ]
    return (
        f"CPU and memory at {r.stations} stations: "
        + ", ".join(parts)
        + (f"; total {sum(r.cpu.values()):.2f} of {os.cpu_count()} cores")
    )


def targets(r: ShowRun) -> list[Result]:
    """The show's run against the per-contribution and two-core targets."""
    if r.error or "ingest" not in r.cpu:
        return []
    per_contribution = r.cpu["ingest"] / r.stations
    platform = sum(cores for name, cores in r.cpu.items() if name != "stations")
    drops = r.skipped_ticks + r.dist_skipped + r.dist_dropped
    return [
        Result(
            name="Ingest: CPU per 720p25 WebRTC contribution (the seed's show)",
            target=f"≤ {INGEST_CORE_PER_CONTRIBUTION} core",
            measured=f"{per_contribution:.3f} core ({r.cpu['ingest']:.2f} core for "
            f"{r.stations} contributions over {r.seconds:.0f} s)",
            reference=f"the platform's processes: {platform:.2f} cores",
            ratio=f"{per_contribution / INGEST_CORE_PER_CONTRIBUTION:.2f} of the target",
            met=per_contribution <= INGEST_CORE_PER_CONTRIBUTION,
        ),
        Result(
            name="The seed's show on two cores: the platform's processes",
            target=f"≤ {PLATFORM_CORES} cores, 0 skipped or dropped frames",
            measured=f"{platform:.2f} cores, {drops:.0f} skipped or dropped over {r.seconds:.0f} s",
            reference=f"the stations' process (not the platform's): "
            f"{r.cpu.get('stations', 0.0):.2f} core",
            ratio=f"{platform / PLATFORM_CORES:.2f} of the target",
            met=platform <= PLATFORM_CORES and r.held,
        ),
    ]


def run(runs: int) -> list[Result]:
    del runs  # one long run: the figure is a count over the run, not a rate to average
    main = asyncio.run(show(SHOW_STATIONS, SHOW_S))
    tried = {SHOW_STATIONS: main}
    # Up from the show while it holds, down from it while it does not.
    if main.held:
        for n in [n for n in SEARCH if n > SHOW_STATIONS]:
            tried[n] = asyncio.run(show(n, SEARCH_S))
            if not tried[n].held:
                break
    else:
        for n in sorted((n for n in SEARCH if n < SHOW_STATIONS), reverse=True):
            tried[n] = asyncio.run(show(n, SEARCH_S))
            if tried[n].held:
                break
    holding = [n for n, r in tried.items() if r.held]
    largest = f"{max(holding)} contributions" if holding else "none tried"
    mixer_held = [n for n, r in tried.items() if not r.error and r.skipped_ticks == 0]
    mixer_largest = max(mixer_held) if mixer_held else 0
    searched = ", ".join(_describe(tried[n]) for n in sorted(tried))
    notes = [
        f"Runs: {searched}.",
        _usage(main),
        "The stations' process (WebRTC packetising and DTLS/SRTP for every station) runs on "
        "the same two cores as the platform; on a real show it is elsewhere. What saturates: "
        "the two cores as a whole (the sum above), led by ingest and distribution (x264 "
        "1080p). Since the mixer pulls the sources' sound from rings (ADR 0029), ingest and the "
        "mixer exchange no message per 40 ms of sound: on one host in the same hour, ingest "
        "0.73 → 0.68 core, the mixer 0.27 → 0.23, the platform's processes 1.52 → 1.41. "
        "A `perf` profile of ingest at 12 contributions (at earlier code, on an earlier "
        "host): 33 % in the "
        "Python interpreter (aiortc's RTP, SRTP and jitter buffer for every packet, the event "
        "loop's hand-offs), 19 % H.264 decoding (the stations replay a test card, cheap to "
        "decode), 18 % kernel (UDP and thread wake-ups), 12 % scaling to the box sizes (two "
        "of them 1080p while a source is full screen on program and preview); of the mixer: "
        "22 % memory copies, 21 % numpy, 20 % interpreter, 18 % kernel. No one function "
        "stands out. x264 falls behind in bursts on a busy box; distribution rides out up to "
        "1 s of encoder backlog (the outputs' latency grows meanwhile) and skips pictures only "
        "beyond that, or when its clock wakes > 0.5 s late. Whether the show holds depends on "
        "the host and its other tenants: on an AMD EPYC host of this kind in a quiet hour the "
        "same code held 12 contributions for 60 s and 16 for 30 s with nothing dropped (1.84 "
        "cores busy at 12); on the same host in a busy hour distribution skipped 238 pictures "
        "at 12 and 44 at 8, and on an Intel Xeon host in a busy hour 279 at 12. Memory: "
        "since ADR 0010 a reader's mapped ring pages count in its RSS as well as the "
        "writer's, so ingest's and the mixer's RSS both include the same shared frames.",
    ]
    return [
        *targets(main),
        Result(
            name=f"Capacity: {SHOW_STATIONS} × 720p25 WebRTC → 1080p25 + graphics → "
            "2 RTMP + HLS + recording",
            target="0 dropped program frames",
            measured=f"{main.skipped_ticks:.0f} skipped program frames, "
            f"{main.dist_skipped + main.dist_dropped:.0f} distribution drops in {SHOW_S:.0f} s"
            + (f" ({main.error})" if main.error else ""),
            reference=f"{main.program_frames:.0f} program frames made",
            ratio=f"largest with no drop anywhere: {largest}; mixer without a skipped frame "
            f"up to {mixer_largest} (tried {sorted(tried)})",
            met=main.held,
            notes=notes,
        ),
    ]
