"""What `baycast up` reads from the services' metrics to say the machine cannot keep up."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

from services.up import demo


def test_contribution_drops_sum_every_source_and_subscriber() -> None:
    registry = CollectorRegistry()
    dropped = Counter(
        "baycast_ingest_subscriber_frames_dropped_total",
        "Frames dropped because a media subscriber read too slowly",
        ["source", "subscriber"],
        registry=registry,
    )
    text = generate_latest(registry).decode()
    assert demo.contribution_drops(text) == 0.0
    dropped.labels("gz", "mixer/qihang").inc(12)
    dropped.labels("gz", "monitoring-0").inc(5)
    dropped.labels("sz", "mixer/qihang").inc(30)
    assert demo.contribution_drops(generate_latest(registry).decode()) == 47.0


def test_skipped_ticks_count_only_the_show() -> None:
    registry = CollectorRegistry()
    skipped = Counter(
        "baycast_mixer_ticks_skipped_total", "Ticks skipped", ["production"], registry=registry
    )
    skipped.labels(demo.PRODUCTION).inc(3)
    skipped.labels("another").inc(50)
    assert demo.skipped_ticks(generate_latest(registry).decode()) == 3.0
    assert demo.skipped_ticks("") == 0.0
