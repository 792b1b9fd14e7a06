"""Confidence monitoring of a real mixer's program: a black source cut to program is seen."""

from __future__ import annotations

import uuid

from services.common.bus import Bus
from services.common.gen.baycast.v1 import mixer_pb2, monitoring_pb2
from services.common.handles import HandleDirectory
from services.mixer.service import MixerService
from services.mixer.settings import MixerSettings
from services.monitoring.service import MonitoringService
from services.monitoring.settings import MonitoringSettings
from tests.integration.monitoring.conftest import AlertRecorder, wait_until
from tests.support.media_source import Card, FakeMediaServer
from tests.support.mixer import admin, command, production
from tests.support.nats import NatsServer
from tests.support.services import running_service

RAISED = monitoring_pb2.ALERT_STATE_RAISED
CLEARED = monitoring_pb2.ALERT_STATE_CLEARED
ON_TARGET = 10 ** (-23 / 20)


def cut(source: str) -> mixer_pb2.MixerCommand:
    return mixer_pb2.MixerCommand(cut=mixer_pb2.MixerCommand.Cut(source=source))


async def test_black_source_on_a_real_mixer_program(
    nats_server: NatsServer, bus: Bus, alerts: AlertRecorder
) -> None:
    tag = uuid.uuid4().hex[:6]
    prod = f"mon-{tag}"
    media = await FakeMediaServer().start()
    lit = media.add(Card(f"source/{tag}-gz", (81, 90, 240), amplitude=ON_TARGET))
    dark = media.add(Card(f"source/{tag}-sz", (16, 128, 128), amplitude=0.0))
    await media.announce(HandleDirectory(bus))
    try:
        async with (
            running_service(
                MixerService, MixerSettings, nats_server.url, unready_seconds=0.0
            ) as _mixer,
            running_service(
                MonitoringService, MonitoringSettings, nats_server.url, discovery_interval_s=0.2
            ) as monitoring,
        ):
            # Audio follows video: the program sounds only of the source on air.
            afv = [mixer_pb2.SourceAudio(source=f"{tag}-{s}", afv=True) for s in ("gz", "sz")]
            show = production(prod, [lit, dark], audio=afv)
            await admin(bus, mixer_pb2.ProductionCommand(create=show))
            await command(bus, prod, cut(f"{tag}-gz"))
            await wait_until(
                lambda: (
                    prod in monitoring.watchers
                    and monitoring.watchers[prod].monitor.reading.video_frames > 5
                ),
                15,
                "program watched",
            )
            reading = monitoring.watchers[prod].monitor.reading
            assert (reading.width, reading.height) == (320, 180)  # the rendition it asked for
            assert abs(reading.luma - 81) < 3
            # The mixer's state reaches the health model.
            await wait_until(
                lambda: any(
                    p["mixer"] and p["mixer"]["program"] == f"{tag}-gz"
                    for p in monitoring.status()["productions"]
                ),
                5,
                "mixer state",
            )
            await command(bus, prod, cut(f"{tag}-sz"))
            await alerts.wait_for("program_black", prod, RAISED, 10)
            await alerts.wait_for("program_silent", prod, RAISED, 10)
            await command(bus, prod, cut(f"{tag}-gz"))
            await alerts.wait_for("program_black", prod, CLEARED, 10)
            await alerts.wait_for("program_silent", prod, CLEARED, 10)
            await admin(
                bus, mixer_pb2.ProductionCommand(delete=mixer_pb2.ProductionCommand.Delete(id=prod))
            )
    finally:
        for card in media.cards.values():
            card.ended = True
        await media.stop()
    assert len(alerts.matching("program_black", prod, RAISED)) == 1
    assert len(alerts.matching("program_silent", prod, RAISED)) == 1
