"""Each program's loudness judged against its own production's target (productions bucket)."""

from __future__ import annotations

import asyncio
import time
import uuid

from prometheus_client import REGISTRY, generate_latest

from services.common.bus import PRODUCTIONS_BUCKET, Bus
from services.common.gen.baycast.v1 import mixer_pb2, monitoring_pb2
from services.common.handles import HandleDirectory
from services.monitoring.service import MonitoringService
from services.monitoring.settings import MonitoringSettings
from tests.integration.monitoring.conftest import AlertRecorder, wait_until
from tests.integration.monitoring.program_feed import LiveCard, LiveMediaServer
from tests.support.nats import NatsServer
from tests.support.services import running_service

RAISED = monitoring_pb2.ALERT_STATE_RAISED
CLEARED = monitoring_pb2.ALERT_STATE_CLEARED
LOUDNESS = "program_loudness"
# A 1 kHz stereo sine at -16 dBFS reads -16 LUFS: a streaming platform's target, 7 LU over R128's.
AT_MINUS_16 = 10 ** (-16 / 20)
# Raised after 1 s off target instead of 5, so the test does not wait; the window (short-term,
# 3 s) and the tolerance (±2 LU) are the service's own.
RAISE_AFTER_S = 1.0


async def test_each_program_is_judged_against_its_production_target(
    nats_server: NatsServer,
    bus: Bus,
    alerts: AlertRecorder,
) -> None:
    # The mixer's productions bucket, written here as the mixer would (no mixer runs).
    productions = await bus.kv(PRODUCTIONS_BUCKET, mixer_pb2.Production)
    tag = uuid.uuid4().hex[:6]
    streaming, broadcast, plain = f"s{tag}", f"b{tag}", f"n{tag}"
    targets = {
        streaming: mixer_pb2.Loudness(target_lufs=-16.0),
        broadcast: mixer_pb2.Loudness(target_lufs=-23.0),
        # No loudness control: the mixer levels nothing, the platform's -23 applies.
        plain: mixer_pb2.Loudness(enabled=False, target_lufs=-16.0),
    }
    for production, loudness in targets.items():
        await productions.put(production, mixer_pb2.Production(id=production, loudness=loudness))
    # The same program, -16 LUFS, for each of the three.
    server = LiveMediaServer()
    cards = [
        server.add(LiveCard(f"prod/{p}/program", (120, 128, 128), amplitude=AT_MINUS_16))
        for p in targets
    ]
    await server.start()
    directory = HandleDirectory(bus)
    await server.announce(directory)
    try:
        async with running_service(
            MonitoringService,
            MonitoringSettings,
            nats_server.url,
            discovery_interval_s=0.2,
            loudness_after_s=RAISE_AFTER_S,
        ) as svc:
            began = time.monotonic()
            _, alert = await alerts.wait_for(LOUDNESS, broadcast, RAISED, 10)
            assert "target -23 ± 2" in alert.message and alert.severity == "warning"
            assert -16.5 < alert.value < -15.5, alert
            await alerts.wait_for(LOUDNESS, plain, RAISED, 3)
            # The -16 show had as long, and more, to be judged off target: it was not.
            await asyncio.sleep(max(0.0, began + 3.0 + 2 * RAISE_AFTER_S - time.monotonic()))
            watcher = svc.watchers[streaming]
            assert abs(watcher.monitor.loudness.short_term - -16.0) < 0.2
            assert watcher.loudness_target_lufs == -16.0
            assert not alerts.matching(LOUDNESS, streaming)
            metrics = generate_latest(REGISTRY).decode()
            for production, target in ((streaming, -16.0), (broadcast, -23.0), (plain, -23.0)):
                line = (
                    f'baycast_monitoring_program_loudness_target_lufs{{production="{production}"}}'
                )
                assert f"{line} {target}" in metrics, production
            status = svc.status()
            shown = {p["production"]: p["program"] for p in status["productions"]}
            assert shown[streaming]["loudness"]["target_lufs"] == -16.0
            assert not shown[streaming]["loudness_off_target"]

            # The broadcast show moves to -16 while on air: judged by it from then on.
            moved = mixer_pb2.Production(id=broadcast, loudness=targets[streaming])
            await productions.put(broadcast, moved)
            _, cleared = await alerts.wait_for(LOUDNESS, broadcast, CLEARED, 3)
            assert "within -16 ± 2" in cleared.message
            await wait_until(
                lambda: svc.watchers[broadcast].loudness_target_lufs == -16.0, 1, "retargeted"
            )
    finally:
        for card in cards:
            card.ended = True
            await directory.withdraw(card.name, server.endpoint)
        await server.stop()
        for production in targets:
            await productions.delete(production)
    assert not alerts.matching(LOUDNESS, streaming)
    assert len(alerts.matching(LOUDNESS, broadcast, RAISED)) == 1
