"""Fault 8: WHIP connect/disconnect cycles leave the ingest process as it was.

An aiortc station connects (ICE, DTLS, media decoded: the source goes online), then ends the
session with DELETE, over and over against one ingest process. Memory (RSS), open files, threads
and asyncio tasks (`baycast_ingest_asyncio_tasks`) must come back to within 5 % of the baseline
taken after a warm-up: the first few dozen sessions grow the heap by ~6 MiB (codecs, thread
pools, allocator arenas), after which RSS is flat: RSS every 50 cycles stays within the 5 % too.
What comes back is polled for (bounded), not read once after a fixed wait.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import pytest

from services.common import ice
from services.common.bus import Bus
from services.station.publisher import WhipPublisher
from services.station.testcard import TestCard
from services.station.tracks import PacketLoopTrack, ToneAudioTrack, encode_loop
from tests.reliability.helpers import add_station, ingest_process, processes, wait_for
from tests.reliability.proc_stats import metric_value, open_fds, rss_bytes, threads
from tests.support.nats import NatsServer
from tests.support.services import ServiceProcess

pytestmark = pytest.mark.timeout(240)

WARMUP_CYCLES = 60
CYCLES = 200
TOLERANCE = 0.05  # RSS (the target); measured +1.8 % to +2.6 %
FPS = 25
# Near the figures of docs/RELIABILITY.md (row 8), with room for a busy 2-core box: a cycle
# took 140-185 ms on average (288 ms once, with the box under heavy load).
CYCLE_WITHIN_S = 0.37
# Open files, threads and asyncio tasks came back exactly to the baseline.
COUNTED = ("fds", "threads", "tasks")
SETTLE_S = 15.0


def snapshot(ingest: ServiceProcess) -> dict[str, float]:
    return {
        "rss_mib": rss_bytes(ingest) / 2**20,
        "fds": open_fds(ingest),
        "threads": threads(ingest),
        "tasks": metric_value(ingest.http, "baycast_ingest_asyncio_tasks"),
    }


async def settle(ingest: ServiceProcess, station: str) -> None:
    await wait_for(
        lambda: (
            metric_value(ingest.http, "baycast_ingest_sessions") == 0
            and metric_value(ingest.http, "baycast_ingest_source_online", station) == 0
        ),
        15,
        "sessions ended",
        every=0.1,
    )


def within(baseline: dict[str, float], now: dict[str, float]) -> bool:
    return now["rss_mib"] <= baseline["rss_mib"] * (1 + TOLERANCE) and all(
        now[k] <= baseline[k] for k in COUNTED
    )


async def steady_snapshot(ingest: ServiceProcess) -> dict[str, float]:
    """A snapshot once two in a row, half a second apart, agree on what is counted."""
    last = snapshot(ingest)
    for _ in range(int(SETTLE_S / 0.5)):
        await asyncio.sleep(0.5)
        now = snapshot(ingest)
        if all(now[k] == last[k] for k in COUNTED):
            return now
        last = now
    return last


async def test_whip_cycles_leave_no_leak(nats_server: NatsServer, bus: Bus, tmp_path) -> None:
    station = f"cyc-{uuid.uuid4().hex[:5]}"
    ingest = ingest_process(nats_server.url, tmp_path, BAYCAST_INGEST_WHIP_RATE_PER_S="1000")
    ice.configure(("127.0.0.1",))
    card = TestCard(station, "循环", 320, 180)
    units = encode_loop(card, FPS)
    with processes(ingest):
        token = await add_station(bus, station, "循环台")
        url = f"{ingest.http}/whip/{station}"
        publisher = WhipPublisher(
            url, token, lambda: [PacketLoopTrack(units, FPS), ToneAudioTrack(card)], h264_only=True
        )

        async def cycle(http: aiohttp.ClientSession) -> None:
            await publisher.publish_once(http)
            await asyncio.wait_for(publisher.connected.wait(), 15)
            await wait_for(
                lambda: metric_value(ingest.http, "baycast_ingest_source_online", station) == 1,
                15,
                "online",
                every=0.02,
            )
            await publisher.close(http)
            await wait_for(
                lambda: (
                    metric_value(ingest.http, "baycast_ingest_sessions") == 0
                    and metric_value(ingest.http, "baycast_ingest_source_online", station) == 0
                ),
                15,
                "ended",
                every=0.02,
            )

        async with aiohttp.ClientSession() as http:
            for _ in range(WARMUP_CYCLES):
                await cycle(http)
            await settle(ingest, station)
            baseline = await steady_snapshot(ingest)
            started = time.monotonic()
            rss_every_50: list[float] = []
            for i in range(CYCLES):
                await cycle(http)
                if i % 50 == 49:
                    rss_every_50.append(rss_bytes(ingest) / 2**20)
            took = time.monotonic() - started
            await settle(ingest, station)
            # Back to the baseline: a bounded poll that a leak (which stays) fails.
            after = snapshot(ingest)
            deadline = time.monotonic() + SETTLE_S
            while not within(baseline, after) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                after = snapshot(ingest)

    print(
        f"\nfault 8: {CYCLES} WHIP cycles in {took:.0f} s ({took / CYCLES * 1000:.0f} ms each);"
        + ", ".join(f" {k} {baseline[k]:g} -> {after[k]:g}" for k in baseline)
        + f"; RSS every 50 cycles {[round(r, 1) for r in rss_every_50]} MiB"
    )
    assert after["rss_mib"] <= baseline["rss_mib"] * (1 + TOLERANCE), (baseline, after)
    for key in COUNTED:
        assert after[key] <= baseline[key], (key, baseline, after)
    # Flat after the warm-up: no 50 cycles went past the tolerance either.
    assert max(rss_every_50) <= baseline["rss_mib"] * (1 + TOLERANCE), rss_every_50
    assert took / CYCLES <= CYCLE_WITHIN_S, took
