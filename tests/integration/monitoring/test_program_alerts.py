"""Black, frozen and silent injected into a live program: each alert raised in time, once."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import REGISTRY, generate_latest

from services.common.bus import Bus
from services.common.gen.baycast.v1 import monitoring_pb2
from services.common.handles import HandleDirectory
from services.monitoring.service import MonitoringService
from services.monitoring.settings import MonitoringSettings
from tests.integration.monitoring.conftest import AlertRecorder, ProgramFeed, wait_until
from tests.support.nats import NatsServer
from tests.support.services import running_service

RAISED = monitoring_pb2.ALERT_STATE_RAISED
CLEARED = monitoring_pb2.ALERT_STATE_CLEARED
# The brief: raised within its threshold + 1 s, cleared within 2 s of recovery.
RAISE_SLACK_S = 1.0
CLEAR_WITHIN_S = 2.0


async def _inject(
    alerts: AlertRecorder,
    condition: str,
    target: str,
    threshold_s: float,
    start: Callable[[], None],
    stop: Callable[[], None],
) -> None:
    began = time.monotonic()
    start()
    raised_at, alert = await alerts.wait_for(condition, target, RAISED, threshold_s + 3)
    assert raised_at - began <= threshold_s + RAISE_SLACK_S, (condition, raised_at - began)
    # Not before the threshold either (the measurement clock is the frame's arrival).
    assert raised_at - began >= threshold_s - 0.1, (condition, raised_at - began)
    assert alert.severity == "critical" and alert.subject == "production"
    recovered = time.monotonic()
    stop()
    cleared_at, cleared = await alerts.wait_for(condition, target, CLEARED, CLEAR_WITHIN_S + 2)
    assert cleared_at - recovered <= CLEAR_WITHIN_S, (condition, cleared_at - recovered)
    assert cleared.id == alert.id and cleared.cleared_at_us >= alert.raised_at_us


async def test_black_frozen_and_silence_raise_and_clear_once_each(
    nats_server: NatsServer, program_feed: ProgramFeed, alerts: AlertRecorder
) -> None:
    p, card = program_feed.production, program_feed.card
    async with running_service(
        MonitoringService, MonitoringSettings, nats_server.url, discovery_interval_s=0.2
    ) as svc:
        await wait_until(
            lambda: p in svc.watchers and svc.watchers[p].monitor.reading.audio_frames > 90,
            10,
            "program frames analysed",
        )
        monitor = svc.watchers[p].monitor
        assert monitor.reading.width == 320 and monitor.reading.height == 180
        # On target: a -23 dBFS 1 kHz tone reads -23 LUFS through the real media plane.
        assert abs(monitor.loudness.short_term - -23.0) < 0.2
        assert abs(monitor.loudness.integrated - -23.0) < 0.2

        def set_black(on: bool) -> None:
            card.black = on

        def set_moving(on: bool) -> None:
            card.moving = on

        def set_amplitude(value: float) -> None:
            card.amplitude = value

        amplitude = card.amplitude
        await _inject(
            alerts, "program_black", p, 1.0, lambda: set_black(True), lambda: set_black(False)
        )
        await _inject(
            alerts, "program_frozen", p, 2.0, lambda: set_moving(False), lambda: set_moving(True)
        )
        await _inject(
            alerts,
            "program_silent",
            p,
            2.0,
            lambda: set_amplitude(0.0),
            lambda: set_amplitude(amplitude),
        )
        status = svc.status()
        production = next(x for x in status["productions"] if x["production"] == p)
        assert production["program"]["receiving"] is True
        assert not [a for a in status["alerts"] if a["target"] == p]

    for condition in ("program_black", "program_frozen", "program_silent"):
        assert len(alerts.matching(condition, p, RAISED)) == 1, condition
        assert len(alerts.matching(condition, p, CLEARED)) == 1, condition
    # Nothing else about this program: not lost, and loudness stayed on target.
    others = {a.condition for _, a in alerts.events if a.target == p}
    assert others == {"program_black", "program_frozen", "program_silent"}


async def test_a_stalled_program_is_lost_and_a_withdrawn_one_ends_its_alerts(
    nats_server: NatsServer, program_feed: ProgramFeed, alerts: AlertRecorder, bus: Bus
) -> None:
    p, card = program_feed.production, program_feed.card
    async with running_service(
        MonitoringService, MonitoringSettings, nats_server.url, discovery_interval_s=0.2
    ) as svc:
        await wait_until(
            lambda: p in svc.watchers and svc.watchers[p].monitor.reading.video_frames > 5,
            10,
            "program frames analysed",
        )
        began = time.monotonic()
        card.paused = True
        raised_at, lost = await alerts.wait_for("program_lost", p, RAISED, 5)
        # Lost after 2 s without frames (plus the time a loaded machine takes to notice).
        assert 2.0 - 0.1 <= raised_at - began <= 4.5
        assert lost.severity == "critical"
        card.paused = False
        await alerts.wait_for("program_lost", p, CLEARED, 3)
        card.black = True
        await alerts.wait_for("program_black", p, RAISED, 3)
        assert f'baycast_monitoring_program_black{{production="{p}"}} 1.0' in svc_metrics()
        # The mixer withdraws the handle (the production ended): watching stops, alerts end.
        await HandleDirectory(bus).withdraw(card.name, program_feed.server.endpoint)
        _, cleared = await alerts.wait_for("program_black", p, CLEARED, 3)
        assert "withdrawn" in cleared.message
        await wait_until(lambda: p not in svc.watchers, 3, "watcher stopped")
        assert f'production="{p}"' not in svc_metrics()
    assert len(alerts.matching("program_lost", p, RAISED)) == 1
    assert len(alerts.matching("program_black", p, RAISED)) == 1


def svc_metrics() -> str:
    return generate_latest(REGISTRY).decode()
