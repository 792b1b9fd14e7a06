"""Fault 6: the RTMP receiver disappears for 5, 20 and 60 s.

The push retries with backoff and resumes after each outage; the HLS and the recording beside it
never notice; monitoring raises `output_retrying` once the push has been retrying for its
threshold (60 s), only during the long outage, and clears it when the push is live again.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from services.common.bus import PREFIX
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.gen.baycast.v1 import monitoring_pb2
from services.monitoring.service import MonitoringService
from services.monitoring.settings import MonitoringSettings
from tests.integration.distribution.conftest import FPS, Show
from tests.integration.distribution.media_check import largest_gap, video_times
from tests.support.nats import NatsServer
from tests.support.rtmp import RtmpServer
from tests.support.services import running_service

OUTAGES_S = (5, 20, 60)
ALERT_AFTER_S = 60.0
# The backoff doubles up to 30 s (with jitter): a push back within 30 s + jitter + connect.
RESUME_WITHIN_S = 45.0


@pytest.mark.timeout(420)
@pytest.mark.parametrize("show", [{"hls_list_size": 200}], indirect=True)
async def test_rtmp_receiver_gone_for_5_20_and_60_s(
    show: Show, rtmp: RtmpServer, nats_server: NatsServer
) -> None:
    alerts: list[monitoring_pb2.Alert] = []

    async def on_alert(alert: monitoring_pb2.Alert, _subject: str) -> None:
        # Outputs other tests left retrying on the shared bus raise their own alerts: not ours.
        if alert.condition == "output_retrying" and alert.target == f"{show.prod}/push":
            alerts.append(alert)

    await show.bus.subscribe(PREFIX + "alert.>", monitoring_pb2.Alert, on_alert)
    async with running_service(
        MonitoringService,
        MonitoringSettings,
        nats_server.url,
        output_retrying_alert_s=ALERT_AFTER_S,
    ):
        await show.add(id="push", kind=dist.OUTPUT_KIND_RTMP, url=rtmp.app_url(), stream_key="k6")
        await show.add(id="web", kind=dist.OUTPUT_KIND_HLS)
        await show.add(id="archive", kind=dist.OUTPUT_KIND_RECORDING, segment_seconds=20)
        for name in ("push", "web", "archive"):
            await show.wait_status(name, dist.OUTPUT_STATUS_LIVE)
        await asyncio.sleep(2)

        figures = []
        for outage in OUTAGES_S:
            rtmp.kill()
            gone = time.monotonic()
            await show.wait_status("push", dist.OUTPUT_STATUS_RETRYING, timeout=15)
            await asyncio.sleep(max(0.0, outage - (time.monotonic() - gone)))
            alerts_before_restart = len(alerts)
            rtmp.start()
            back = time.monotonic()
            await show.wait_status("push", dist.OUTPUT_STATUS_LIVE, timeout=RESUME_WITHIN_S)
            resumed_after = time.monotonic() - back
            figures.append((outage, resumed_after, alerts_before_restart))
            print(
                f"receiver gone {outage} s: push live again {resumed_after:.1f} s after it returned"
            )
            await asyncio.sleep(3)

        push = await show.state("push")
        assert push.reconnects == len(OUTAGES_S)
        # Raised once, during the 60 s outage only, at the threshold; cleared once it was live.
        raised = [a for a in alerts if a.state == monitoring_pb2.ALERT_STATE_RAISED]
        cleared = [a for a in alerts if a.state == monitoring_pb2.ALERT_STATE_CLEARED]
        assert [f[2] for f in figures[:2]] == [0, 0], "alert raised during a short outage"
        assert len(raised) == 1 and len(cleared) == 1 and raised[0].id == cleared[0].id
        assert raised[0].target.endswith("/push") and raised[0].value >= ALERT_AFTER_S
        print(
            f"output_retrying raised after {raised[0].value:.0f} s of retrying, cleared on resume"
        )

        for name in ("push", "web", "archive"):
            await show.command(stop=dist.OutputRef(id=name))

    # The outputs beside the push never noticed.
    for name in ("web", "archive"):
        state = await show.state(name)
        assert state.reconnects == 0
    assert dist.OUTPUT_STATUS_RETRYING not in {s.status for s in show.states if s.id != "push"}
    files = sorted((show.data_dir / "recordings" / show.prod / "archive").glob("*.ts"))
    times = video_times(files)
    assert largest_gap(times) <= 1.5 / FPS
    assert len(rtmp.recordings("k6")) == len(OUTAGES_S) + 1
