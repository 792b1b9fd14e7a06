"""The health model from bus events, on a fake clock."""

from __future__ import annotations

from services.common.gen.baycast.v1 import (
    control_pb2,
    distribution_pb2,
    graphics_pb2,
    mixer_pb2,
    monitoring_pb2,
)
from services.monitoring.alerts import AlertBook
from services.monitoring.health import HealthModel
from services.monitoring.status_page import build_status, render_html

RETRYING = distribution_pb2.OUTPUT_STATUS_RETRYING
CONNECTING = distribution_pb2.OUTPUT_STATUS_CONNECTING
LIVE = distribution_pb2.OUTPUT_STATUS_LIVE
FAILED = distribution_pb2.OUTPUT_STATUS_FAILED


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeBus:
    connected = True
    disconnects = 0


def model() -> tuple[HealthModel, list[monitoring_pb2.Alert], Clock]:
    sent: list[monitoring_pb2.Alert] = []
    clock = Clock()
    health = HealthModel(AlertBook("mon", sent.append), heartbeat_interval_s=2.0, clock=clock)
    return health, sent, clock


def beat(t_s: float, cpu: float, ready: bool = True) -> control_pb2.Heartbeat:
    return control_pb2.Heartbeat(
        service="mixer",
        instance="mixer-0",
        version="0.1.0",
        ready=ready,
        started_at_us=1,
        time_us=int(t_s * 1e6),
        cpu_seconds=cpu,
        rss_bytes=100 << 20,
        loop_lag_ms=3.0,
    )


def states(sent: list[monitoring_pb2.Alert]) -> list[tuple[str, str, bool]]:
    return [(a.condition, a.target, a.state == monitoring_pb2.ALERT_STATE_RAISED) for a in sent]


def test_instance_missing_after_three_missed_beats_and_back() -> None:
    health, sent, clock = model()
    health.heartbeat(beat(0, 1.0))
    clock.now += 2
    health.heartbeat(beat(2, 1.5))
    inst = health.instances["mixer/mixer-0"]
    assert inst.cpu_fraction == 0.25
    clock.now += 5.9
    health.evaluate()
    assert sent == []
    clock.now += 0.2
    health.evaluate()
    health.evaluate()
    assert states(sent) == [("service_missing", "mixer/mixer-0", True)]
    clock.now += 1
    health.heartbeat(beat(11, 2.0))
    assert states(sent)[-1] == ("service_missing", "mixer/mixer-0", False)
    clock.now += 301
    health.evaluate()
    assert "mixer/mixer-0" not in health.instances


def test_source_lost_when_offline_or_stale_and_quality_reasons() -> None:
    health, sent, clock = model()
    health.source_state(
        control_pb2.SourceState(source="gz", online=True, video=control_pb2.VideoFormat(fps=25))
    )
    health.source_stats(
        control_pb2.SourceStats(source="gz", fps=15, loss_fraction=0.05, jitter_ms=80, black=True)
    )
    gz = health.sources["gz"]
    assert gz.reasons(clock()) == ["black", "loss", "jitter", "low_fps"]
    assert gz.quality(clock()) == "bad"
    health.source_stats(control_pb2.SourceStats(source="gz", fps=25, decode_errors=3))
    assert gz.reasons(clock()) == ["decode_errors"] and gz.quality(clock()) == "degraded"
    health.source_stats(control_pb2.SourceStats(source="gz", fps=25, decode_errors=3))
    assert gz.quality(clock()) == "good"
    assert health.sources_online() == 1
    clock.now += 3.5
    health.evaluate()
    assert states(sent) == [("source_lost", "gz", True)]
    assert gz.quality(clock()) == "bad" and "stale" in gz.reasons(clock())
    health.source_stats(control_pb2.SourceStats(source="gz", fps=25))
    health.source_state(control_pb2.SourceState(source="gz", online=False, reason="hung up"))
    health.evaluate()
    assert states(sent) == [
        ("source_lost", "gz", True),
        ("source_lost", "gz", False),
        ("source_lost", "gz", True),
    ]
    assert gz.quality(clock()) == "offline" and gz.reasons(clock()) == ["hung up"]


def output(status: int, reconnects: int = 0) -> distribution_pb2.OutputState:
    return distribution_pb2.OutputState(
        id="rtmp-1", production="qihang", status=status, reconnects=reconnects, reason="refused"
    )


def test_output_retrying_over_a_minute_through_reconnect_attempts() -> None:
    health, sent, clock = model()
    health.output_state(output(CONNECTING))
    health.output_state(output(LIVE))
    clock.now += 10
    health.output_state(output(RETRYING, 1))
    for _ in range(6):  # retrying -> connecting -> retrying ... keeps counting
        clock.now += 5
        health.output_state(output(CONNECTING, 1))
        clock.now += 5
        health.output_state(output(RETRYING, 1))
        health.evaluate()
    assert sent == []
    clock.now += 1
    health.evaluate()
    assert states(sent) == [("output_retrying", "qihang/rtmp-1", True)]
    assert health.outputs["qihang/rtmp-1"].retrying_for(clock()) == 61
    health.output_state(output(LIVE, 1))
    assert states(sent)[-1] == ("output_retrying", "qihang/rtmp-1", False)
    health.output_state(output(FAILED, 1))
    assert states(sent)[-1] == ("output_failed", "qihang/rtmp-1", True)
    assert "refused" in sent[-1].message
    health.evaluate()
    assert len(sent) == 3


def test_status_json_and_page_show_everything() -> None:
    health, _, _ = model()
    health.heartbeat(beat(0, 1.0))
    health.source_state(control_pb2.SourceState(source="gz", name="广州台", online=True))
    health.source_state(control_pb2.SourceState(source="x", name="<b>x</b>", online=True))
    for event, template in (("shown", "logo"), ("shown", "lower_third"), ("hidden", "logo")):
        health.gfx_state(
            graphics_pb2.GfxState(
                production="qihang",
                event=event,
                instance=graphics_pb2.GfxInstance(id=template, template=template, layer=1),
            )
        )
    health.mixer_state(
        mixer_pb2.MixerState(
            production="qihang",
            switcher=mixer_pb2.SwitcherState(
                program="gz", preview="sz", layout=mixer_pb2.Layout(name="wall", kind="city_wall")
            ),
        )
    )
    health.output_state(output(FAILED))
    status = build_status(health, {}, health.alerts, FakeBus())  # type: ignore[arg-type]
    assert status["services"][0]["load"]["rss_bytes"] == 100 << 20
    assert status["sources"][0]["name"] == "广州台"
    assert status["productions"][0]["mixer"]["program"] == "gz"
    assert status["productions"][0]["mixer"]["layout"] == "wall"
    assert [g["template"] for g in status["productions"][0]["graphics"]] == ["lower_third"]
    assert status["outputs"][0]["state"] == "failed"
    assert [a["condition"] for a in status["alerts"]] == ["output_failed"]
    page = render_html(status)
    assert "广州台" in page and "output_failed" in page and "mixer-0" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x" not in page


def test_missing_instances_adopted_from_another_replica_end_as_their_own_would() -> None:
    sent: list[monitoring_pb2.Alert] = []
    clock = Clock()
    book = AlertBook("mon", sent.append)
    health = HealthModel(book, heartbeat_interval_s=2.0, forget_after_s=300.0, clock=clock)
    health.heartbeat(beat(1000.0, 1.0))  # mixer/mixer-0 is known here, and beating
    book.seed(
        [
            monitoring_pb2.Alert(id=f"m/{k}", condition="service_missing", target=k)
            for k in ("mixer/mixer-0", "mixer/mixer-9", "graphics/gone")
        ]
    )
    health.adopt_alerts()
    health.heartbeat(beat(1002.0, 1.1))  # the known one beats: cleared
    back = control_pb2.Heartbeat(service="mixer", instance="mixer-9", time_us=1)
    health.heartbeat(back)  # one never seen here beats: cleared
    assert [(a.id, a.state) for a in sent] == [
        ("m/mixer/mixer-0", monitoring_pb2.ALERT_STATE_CLEARED),
        ("m/mixer/mixer-9", monitoring_pb2.ALERT_STATE_CLEARED),
    ]
    clock.now += 299.0
    health.evaluate()

    def gone() -> list[tuple[str, int]]:
        return [(a.id, a.state) for a in sent if a.target == "graphics/gone"]

    assert gone() == []
    clock.now += 2.0
    health.evaluate()  # the one that never beats again is forgotten, like the others
    assert gone() == [("m/graphics/gone", monitoring_pb2.ALERT_STATE_CLEARED)]
    assert health.inherited_missing == {}
