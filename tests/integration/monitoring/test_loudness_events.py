"""Monitoring publishes the program's loudness for the control room's meters."""

from __future__ import annotations

import asyncio

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import monitoring_pb2
from services.monitoring.service import MonitoringService
from services.monitoring.settings import MonitoringSettings
from tests.integration.monitoring.conftest import ProgramFeed, wait_until
from tests.support.nats import NatsServer
from tests.support.services import running_service


async def test_program_loudness_is_published_five_times_a_second(
    nats_server: NatsServer, program_feed: ProgramFeed, bus: Bus
) -> None:
    p = program_feed.production
    readings: list[tuple[float, monitoring_pb2.ProgramLoudness]] = []
    loop = asyncio.get_running_loop()

    async def on_reading(reading: monitoring_pb2.ProgramLoudness, _subject: str) -> None:
        readings.append((loop.time(), reading))

    sub = await bus.subscribe(
        subject("prod", p, "loudness"), monitoring_pb2.ProgramLoudness, on_reading
    )
    try:
        async with running_service(
            MonitoringService, MonitoringSettings, nats_server.url, discovery_interval_s=0.2
        ):
            # The on-target tone (-23 LUFS) needs 3 s of program for a short-term reading.
            await wait_until(
                lambda: bool(readings) and readings[-1][1].short_term_lufs > -100,
                10,
                "a short-term reading",
            )
            settled = len(readings)
            await wait_until(lambda: len(readings) >= settled + 10, 5, "ten more readings")
    finally:
        await sub.unsubscribe()
    recent = readings[settled:]
    span = recent[-1][0] - recent[0][0]
    rate = (len(recent) - 1) / span
    assert 4.0 <= rate <= 6.5, rate
    last = recent[-1][1]
    assert last.production == p
    assert abs(last.short_term_lufs - -23.0) <= 0.5, last
    assert abs(last.momentary_lufs - -23.0) <= 0.5, last
    assert abs(last.integrated_lufs - -23.0) <= 0.5, last
    assert -25.0 < last.true_peak_dbtp < -15.0, last
    # Before anything was measured, readings say -120, not -inf (JSON carries no infinity).
    assert readings[0][1].short_term_lufs == -120.0
