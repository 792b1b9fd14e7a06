"""The monitoring service over a real bus: heartbeats, sources, outputs, /status, ctl, NATS loss."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import control_pb2, distribution_pb2, monitoring_pb2
from services.monitoring.service import MonitoringService
from services.monitoring.settings import MonitoringSettings
from tests.integration.monitoring.conftest import AlertRecorder, wait_until
from tests.support.nats import NatsServer
from tests.support.services import http_get_json, running_service, service_process

RAISED = monitoring_pb2.ALERT_STATE_RAISED
CLEARED = monitoring_pb2.ALERT_STATE_CLEARED
ROOT = Path(__file__).resolve().parents[3]


async def test_instances_sources_and_outputs_reach_status_and_alerts(
    nats_server: NatsServer, bus: Bus, alerts: AlertRecorder
) -> None:
    tag = uuid.uuid4().hex[:6]
    instance, source, prod = f"mixer-{tag}", f"gz{tag}", f"show{tag}"
    target = f"mixer/{instance}"
    async with running_service(
        MonitoringService,
        MonitoringSettings,
        nats_server.url,
        heartbeat_interval_s=0.3,
        output_retrying_alert_s=1.0,
    ) as svc:
        base = f"http://127.0.0.1:{svc.http.port}"

        async def beat() -> None:
            await bus.publish(
                subject("svc", "mixer", instance, "heartbeat"),
                control_pb2.Heartbeat(
                    service="mixer", instance=instance, version="9.9", ready=True, loop_lag_ms=2
                ),
            )

        for _ in range(3):
            await beat()
            await asyncio.sleep(0.1)
        await bus.publish(
            subject("source", source, "state"),
            control_pb2.SourceState(source=source, name="广州台", online=True, protocol="srt"),
        )
        await bus.publish(
            subject("source", source, "stats"),
            control_pb2.SourceStats(source=source, fps=25, bitrate_kbps=3000, loss_fraction=0.05),
        )
        await bus.publish(
            subject("prod", prod, "dist", "output", "rtmp-1", "state"),
            distribution_pb2.OutputState(
                id="rtmp-1", production=prod, status=distribution_pb2.OUTPUT_STATUS_RETRYING
            ),
        )
        await wait_until(lambda: source in svc.health.sources, 5, "source known")
        code, status = await asyncio.to_thread(http_get_json, base + "/status")
        assert code == 200
        mixer = next(s for s in status["services"] if s["instance"] == instance)
        assert mixer["up"] and mixer["ready"] and mixer["version"] == "9.9"
        own = next(s for s in status["services"] if s["service"] == "monitoring")
        assert own["instance"] == svc.settings.instance
        src = next(s for s in status["sources"] if s["source"] == source)
        assert src["online"] and src["quality"] == "degraded" and src["reasons"] == ["loss"]
        assert src["stats"]["bitrate_kbps"] == 3000
        assert status["nats"]["connected"] is True

        # The instance stops beating: missing after 3 beats (0.9 s), back when it beats again.
        _, missing = await alerts.wait_for("service_missing", target, RAISED, 5)
        assert missing.severity == "warning" and missing.subject == "service"
        # The output has been retrying for over a second (the test's limit): one raise.
        await alerts.wait_for("output_retrying", f"{prod}/rtmp-1", RAISED, 5)
        await beat()
        await alerts.wait_for("service_missing", target, CLEARED, 5)
        await bus.publish(
            subject("source", source, "state"),
            control_pb2.SourceState(source=source, online=False, reason="station hung up"),
        )
        _, lost = await alerts.wait_for("source_lost", source, RAISED, 5)
        assert "station hung up" in lost.message

        # Active alerts: as JSON, as an HTML page, over the bus (what `baycast ctl alerts` asks).
        code, status = await asyncio.to_thread(http_get_json, base + "/status")
        active = {(a["condition"], a["target"]) for a in status["alerts"]}
        assert {("output_retrying", f"{prod}/rtmp-1"), ("source_lost", source)} <= active
        assert ("service_missing", target) not in active
        reply = await bus.request(
            subject("monitoring", "alerts"),
            monitoring_pb2.AlertsRequest(),
            monitoring_pb2.AlertList,
        )
        assert {(a.condition, a.target) for a in reply.alerts} == active
        page = await asyncio.to_thread(_get_text, base + "/")
        assert "广州台" in page and "output_retrying" in page and instance in page
    assert len(alerts.matching("service_missing", target, RAISED)) == 1
    assert len(alerts.matching("output_retrying", f"{prod}/rtmp-1", RAISED)) == 1


def _get_text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/html")
        text: str = resp.read().decode()
    return text


async def test_nats_loss_is_a_metric_and_an_alert_after_reconnect(
    own_nats_server: NatsServer,
) -> None:
    beater = Bus(own_nats_server.url, "beater")
    await beater.connect()

    beating = asyncio.Event()
    beating.set()

    async def beat_forever() -> None:
        while True:
            await beating.wait()
            if beater.connected:
                with contextlib.suppress(Exception):
                    await beater.publish(
                        subject("svc", "mixer", "beater", "heartbeat"),
                        control_pb2.Heartbeat(service="mixer", instance="beater", ready=True),
                    )
            await asyncio.sleep(0.1)

    beats = asyncio.create_task(beat_forever())
    try:
        async with running_service(
            MonitoringService,
            MonitoringSettings,
            own_nats_server.url,
            evaluate_interval_s=0.1,
            heartbeat_interval_s=0.3,  # missing after 0.9 s; the outage lasts longer
        ) as svc:
            target = f"monitoring/{svc.settings.instance}"
            await wait_until(lambda: "mixer/beater" in svc.health.instances, 5, "beats seen")
            published: list[monitoring_pb2.Alert] = []
            send = svc.alerts.publish
            svc.alerts.publish = lambda alert: (published.append(alert), send(alert))[1]
            beating.clear()
            own_nats_server.kill()
            await wait_until(lambda: not svc.bus.connected, 15, "disconnect noticed")
            await wait_until(
                lambda: svc.alerts.is_active("nats_disconnected", target), 5, "alert raised"
            )
            url = f"http://127.0.0.1:{svc.http.port}/metrics"
            metrics = await asyncio.to_thread(_get_text_any, url)
            assert "baycast_monitoring_nats_connected 0.0" in metrics
            await asyncio.sleep(1.5)
            own_nats_server.start()
            await wait_until(lambda: svc.bus.connected, 20, "reconnected")
            # The instance beats again a moment after the bus is back (within its 0.9 s).
            await asyncio.sleep(0.4)
            beating.set()
            await wait_until(
                lambda: not svc.alerts.is_active("nats_disconnected", target), 5, "alert cleared"
            )
            await asyncio.sleep(0.8)  # evaluations after the bus came back
            metrics = await asyncio.to_thread(_get_text_any, url)
            assert "baycast_monitoring_nats_connected 1.0" in metrics
            raised = 'baycast_monitoring_alerts_raised_total{condition="nats_disconnected"} 1.0'
            assert raised in metrics
            assert "baycast_monitoring_nats_disconnects_total 1.0" in metrics
            # The beats stopped during the outage, but that was the bus, not the instance.
            # (The monitoring instance itself beats every 2 s, so at this test's 0.3 s it may
            # be called missing; the beater, back within 0.9 s of the bus, must not be.)
            missing = [a.target for a in published if a.condition == "service_missing"]
            assert "mixer/beater" not in missing
            assert [a.condition for a in published if a.target == target][:2] == [
                "nats_disconnected",
                "nats_disconnected",
            ]
            await wait_until(lambda: svc.publisher.pending() == 0, 5, "alert events sent")
    finally:
        beats.cancel()
        await beater.drain()


def _get_text_any(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:
        text: str = resp.read().decode()
    return text


async def test_baycast_monitoring_runs_and_drains_on_sigterm(
    nats_server: NatsServer, bus: Bus, tmp_path: Path
) -> None:
    source = f"zh{uuid.uuid4().hex[:6]}"
    proc = service_process("monitoring", nats_server.url, tmp_path, "monitoring")
    await asyncio.to_thread(proc.start)
    try:
        code, status = await asyncio.to_thread(http_get_json, proc.http + "/status")
        assert code == 200 and status["nats"]["connected"] is True
        await bus.publish(
            subject("source", source, "state"),
            control_pb2.SourceState(source=source, online=False, reason="no signal"),
        )
        out = None
        for _ in range(20):  # bounded: the event may not have landed yet
            out = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "services.cli", "ctl", "--nats", nats_server.url, "alerts"],
                capture_output=True,
                text=True,
                timeout=30,
                cwd=ROOT,
            )
            assert out.returncode == 0, out.stderr
            if source in out.stdout:
                break
            await asyncio.sleep(0.2)
        assert out is not None
        row = next(line for line in out.stdout.splitlines() if source in line)
        assert row.split()[:3] == ["warning", "source_lost", source]
        assert "no signal" in row
        proc.signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        proc.stop()


async def test_a_restarted_monitoring_service_knows_the_live_sources(
    nats_server: NatsServer, bus: Bus
) -> None:
    tag = uuid.uuid4().hex[:6]
    live, gone = f"sz{tag}", f"hz{tag}"
    bucket = await bus.kv("sources", control_pb2.SourceState)
    await bucket.put(live, control_pb2.SourceState(source=live, name="深圳台", online=True))
    await bucket.put(gone, control_pb2.SourceState(source=gone, online=False, reason="ended"))
    try:
        async with running_service(MonitoringService, MonitoringSettings, nats_server.url) as svc:
            assert svc.health.sources[live].online
            assert not svc.health.sources[gone].online
            # Already offline before it started: known, not a new alarm.
            assert not svc.alerts.is_active("source_lost", gone)
            _, status = await asyncio.to_thread(
                http_get_json, f"http://127.0.0.1:{svc.http.port}/status"
            )
            names = {s["source"]: s["name"] for s in status["sources"]}
            assert names[live] == "深圳台"
    finally:
        await bucket.delete(live)
        await bucket.delete(gone)
