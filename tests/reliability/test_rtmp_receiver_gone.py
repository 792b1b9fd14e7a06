"""Fault 6: the RTMP receiver disappears for 5, 20 and 60 s.

A `baycast station` process publishes to an ingest process, a mixer process has it on program,
a distribution process pushes the program over RTMP to a real nginx-rtmp with an HLS output and
a recording beside the push, and a monitoring process watches. nginx-rtmp is killed three times.
The push retries with its backoff (1, 2, 4 ... 30 s, jittered) and resumes after each outage at
its first attempt after the receiver is back; the HLS and the recording beside it never notice;
monitoring raises `output_retrying` once the push has been retrying for its threshold (60 s),
only during the long outage, and clears it when the push is live again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common import errors
from services.common.bus import PREFIX, Bus, subject
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.gen.baycast.v1 import mixer_pb2, monitoring_pb2
from services.distribution.outputs import JITTER
from services.distribution.settings import DEFAULT_RETRY_MAX_S
from services.monitoring.settings import EVALUATE_INTERVAL_S
from tests.integration.distribution.media_check import largest_gap, video_times
from tests.reliability.helpers import (
    PUSH_FPS,
    create_production,
    delete_production,
    distribution_process,
    ingest_process,
    live_station,
    mixer_process,
    monitoring_process,
    processes,
    wait_for,
)
from tests.reliability.proc_stats import metric_value
from tests.support.nats import NatsServer
from tests.support.rtmp import RtmpServer

OUTAGES_S = (5, 20, 60)
ALERT_AFTER_S = 60.0
# The longest backoff the push may announce (30 s, jittered), and the wait for its return.
BACKOFF_MAX_S = DEFAULT_RETRY_MAX_S * (1 + JITTER)
RESUME_BOUND_S = BACKOFF_MAX_S + 15
# Near the figures of docs/RELIABILITY.md (row 6), with room for a busy 2-core box: the push's
# first attempt after the receiver returned came when its backoff said (within 0.01 s), and it
# was live 0.25-0.47 s after that attempt began.
ATTEMPT_LATE_S = 0.25
CONNECT_WITHIN_S = 0.75
LIVE, RETRYING, CONNECTING, IDLE = (
    dist.OUTPUT_STATUS_LIVE,
    dist.OUTPUT_STATUS_RETRYING,
    dist.OUTPUT_STATUS_CONNECTING,
    dist.OUTPUT_STATUS_IDLE,
)


@dataclass
class Resumption:
    """One outage as the push's own state events tell it (wall-clock seconds)."""

    outage: int
    back: float  # the receiver listening again
    due: float  # when the push's backoff said its next attempt would be
    backoff: float  # the backoff it announced for that attempt
    attempt: float  # the first attempt after the receiver was back
    live: float

    @property
    def resumed_after(self) -> float:
        return self.live - self.back

    @property
    def connect(self) -> float:
        return self.live - self.attempt


def at(state: dist.OutputState) -> float:
    return state.since_us / 1e6


@pytest.mark.timeout(420)
async def test_rtmp_receiver_gone_for_5_20_and_60_s(
    own_nats_server: NatsServer, tmp_path: Path
) -> None:
    nats_url = own_nats_server.url
    tag = uuid.uuid4().hex[:5]
    prod, a, key = f"rg-{tag}", f"rg-a-{tag}", f"k6{tag}"
    ingest = ingest_process(nats_url, tmp_path)
    mixer = mixer_process(nats_url, tmp_path)
    distribution = distribution_process(
        nats_url,
        tmp_path,
        BAYCAST_DISTRIBUTION_HLS_LIST_SIZE="200",
        BAYCAST_DISTRIBUTION_HLS_SEGMENT_S="2",
    )
    monitoring = monitoring_process(
        nats_url, tmp_path, BAYCAST_MONITORING_OUTPUT_RETRYING_ALERT_S=str(ALERT_AFTER_S)
    )
    rtmp = RtmpServer(tmp_path / "rtmp").start()
    bus = Bus(nats_url, "receiver-gone-test")
    await bus.connect()
    states: list[dist.OutputState] = []
    alerts: list[tuple[float, monitoring_pb2.Alert]] = []  # (wall-clock arrival, alert)

    async def on_state(state: dist.OutputState, _subject: str) -> None:
        states.append(state)

    async def on_alert(alert: monitoring_pb2.Alert, _subject: str) -> None:
        if alert.condition == "output_retrying" and alert.target == f"{prod}/push":
            alerts.append((time.time(), alert))

    subs = [
        await bus.subscribe(
            subject("prod", prod, "dist", "output") + ".*.state", dist.OutputState, on_state
        ),
        await bus.subscribe(PREFIX + "alert.>", monitoring_pb2.Alert, on_alert),
    ]

    async def command(**kw: object) -> dist.DistReply:
        for _ in range(50):  # the production is being taken by a replica: retry, as ctl does
            with contextlib.suppress(errors.Unavailable):
                return await bus.request(
                    subject("prod", prod, "dist", "cmd"),
                    dist.DistCommand(production=prod, **kw),  # type: ignore[arg-type]
                    dist.DistReply,
                    timeout=10,
                )
            await asyncio.sleep(0.2)
        raise AssertionError("distribution never took the production")

    def push_events(since: float, status: int) -> list[dist.OutputState]:
        return [s for s in states if s.id == "push" and s.status == status and at(s) >= since]

    figures: list[Resumption] = []
    gones: list[float] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(processes(ingest, mixer, distribution, monitoring))
            await stack.enter_async_context(live_station(bus, ingest, a, "广州台", tmp_path))
            await create_production(
                bus,
                mixer_pb2.Production(
                    id=prod,
                    name="断流",
                    width=1280,
                    height=720,
                    sources=[mixer_pb2.ProductionSource(id=a, name="广州台")],
                ),
            )
            await command(
                add=dist.AddOutput(
                    output=dist.OutputSpec(
                        id="push",
                        kind=dist.OUTPUT_KIND_RTMP,
                        url=rtmp.app_url(),
                        stream_key=key,
                        enabled=True,
                    )
                )
            )
            await command(
                add=dist.AddOutput(
                    output=dist.OutputSpec(id="web", kind=dist.OUTPUT_KIND_HLS, enabled=True)
                )
            )
            await command(
                add=dist.AddOutput(
                    output=dist.OutputSpec(
                        id="archive",
                        kind=dist.OUTPUT_KIND_RECORDING,
                        segment_seconds=20,
                        enabled=True,
                    )
                )
            )

            def live_now(name: str) -> bool:
                mine = [s for s in states if s.id == name]
                return bool(mine) and mine[-1].status == LIVE

            await wait_for(lambda: all(live_now(n) for n in ("push", "web", "archive")), 30, "live")
            await wait_for(lambda: rtmp.publishers(key) == 1, 10, "nginx-rtmp sees the push")

            for outage in OUTAGES_S:
                rtmp.kill()
                gone = time.time()
                gones.append(gone)
                await wait_for(lambda g=gone: bool(push_events(g, RETRYING)), 15, "push retrying")
                await asyncio.sleep(max(0.0, outage - (time.time() - gone)))
                rtmp.start()
                back = time.time()
                await wait_for(
                    lambda b=back: bool(push_events(b, LIVE)), RESUME_BOUND_S, "push live again"
                )
                live = push_events(back, LIVE)[0]
                # The attempt that connected, and the backoff it waited out.
                attempt = [s for s in push_events(gone, CONNECTING) if at(s) <= at(live)][-1]
                waiting = [s for s in push_events(gone, RETRYING) if at(s) <= at(attempt)][-1]
                figures.append(
                    Resumption(
                        outage,
                        back,
                        at(waiting) + waiting.retry_in_s,
                        waiting.retry_in_s,
                        at(attempt),
                        at(live),
                    )
                )
                print(
                    f"receiver gone {outage} s: push live again"
                    f" {figures[-1].resumed_after:.1f} s after it returned (its backoff"
                    f" {waiting.retry_in_s:.1f} s, attempt due {figures[-1].due - back:+.2f} s"
                    f" from the return, made {figures[-1].attempt - back:+.2f} s; connected"
                    f" {figures[-1].connect:.2f} s after the attempt began)"
                )
            long_outage_from = gones[-1]
            # The alert is cleared once the push is live: wait for it (every raise before it has
            # arrived by then, one publisher, in order).
            await wait_for(
                lambda: any(a.state == monitoring_pb2.ALERT_STATE_CLEARED for _, a in alerts),
                10,
                "output_retrying cleared",
            )

            stopping = time.time()
            replies = {
                name: await command(stop=dist.OutputRef(id=name))
                for name in ("push", "web", "archive")
            }
            # Each output's idle state comes after every state it had before.
            await wait_for(
                lambda: all(
                    any(s.id == n and s.status == IDLE and at(s) >= stopping for s in states)
                    for n in ("push", "web", "archive")
                ),
                10,
                "outputs idle",
            )
            push_state = replies["push"].outputs[0]
            beside = {n: replies[n].outputs[0] for n in ("web", "archive")}
            # Pictures the encoder let go because it was behind its clock (a busy box): every
            # output misses them alike, whatever the push does.
            skipped = await asyncio.to_thread(
                metric_value, distribution.http, "baycast_distribution_skipped_frames_total", prod
            )
            await delete_production(bus, prod)
        for sub in subs:
            await sub.unsubscribe()
        await bus.drain()
        pushes = len(rtmp.recordings(key))
    finally:
        rtmp.cleanup()

    raised = [(t, a) for t, a in alerts if a.state == monitoring_pb2.ALERT_STATE_RAISED]
    cleared = [(t, a) for t, a in alerts if a.state == monitoring_pb2.ALERT_STATE_CLEARED]
    files = sorted((tmp_path / "distribution" / "recordings" / prod / "archive").glob("*.ts"))
    times = video_times(files)
    recording_gap = largest_gap(times)
    missing = sum(
        round((y - x) * PUSH_FPS) - 1
        for x, y in itertools.pairwise(times)
        if y - x > 1.5 / PUSH_FPS
    )
    print(
        f"\nfault 6: output_retrying raised {len(raised)} time(s), after"
        f" {[round(a.value, 1) for _, a in raised]} s of retrying,"
        f" {[round(t - long_outage_from, 1) for t, _ in raised]} s into the 60 s outage;"
        f" cleared {len(cleared)} time(s); push reconnects {push_state.reconnects};"
        f" beside it reconnects {[s.reconnects for s in beside.values()]}, recording's largest"
        f" gap {recording_gap * 1000:.0f} ms ({missing} pictures missing, {skipped:g} skipped by"
        f" the encoder behind its clock); {pushes} pushes received"
    )
    for f in figures:
        assert f.backoff <= BACKOFF_MAX_S, f
        # The first attempt after the receiver returned was the one the backoff had announced
        # (or one at once, had it been due already), and it connected.
        assert f.attempt - max(f.due, f.back) <= ATTEMPT_LATE_S, f
        assert f.connect <= CONNECT_WITHIN_S, f
    assert push_state.reconnects == len(OUTAGES_S)
    # Raised once, during the 60 s outage only, at the threshold; cleared once it was live.
    assert len(raised) == 1 and len(cleared) == 1, alerts
    assert raised[0][1].id == cleared[0][1].id
    assert ALERT_AFTER_S <= raised[0][1].value <= ALERT_AFTER_S + 2 * EVALUATE_INTERVAL_S
    assert long_outage_from + ALERT_AFTER_S <= raised[0][0] <= figures[-1].live, raised
    assert figures[-1].live <= cleared[0][0]
    # The outputs beside the push never noticed.
    for name, state in beside.items():
        assert state.reconnects == 0, name
    assert RETRYING not in {s.status for s in states if s.id != "push"}
    # The recording has every picture but those the encoder skipped (none on a quiet box).
    assert missing <= skipped, (missing, skipped, recording_gap)
    assert skipped or recording_gap <= 1.5 / PUSH_FPS
    assert pushes == len(OUTAGES_S) + 1
