"""The alert book: one raise and one clear per condition and target."""

from __future__ import annotations

import asyncio
import contextlib

from services.common.gen.baycast.v1 import monitoring_pb2
from services.monitoring.alerts import CONDITIONS, AlertBook, AlertPublisher


def test_raise_and_clear_are_deduplicated() -> None:
    sent: list[monitoring_pb2.Alert] = []
    book = AlertBook("mon-0", sent.append)
    assert book.raise_("program_black", "qihang", "black", 16.0)
    assert not book.raise_("program_black", "qihang", "black again")
    assert book.raise_("program_black", "other", "black")
    book.set("program_black", "qihang", True, "still black")
    assert book.clear("program_black", "qihang", "back")
    assert not book.clear("program_black", "qihang")
    book.set("program_black", "qihang", False, "still fine")
    assert [(a.target, a.state) for a in sent] == [
        ("qihang", monitoring_pb2.ALERT_STATE_RAISED),
        ("other", monitoring_pb2.ALERT_STATE_RAISED),
        ("qihang", monitoring_pb2.ALERT_STATE_CLEARED),
    ]
    raised, cleared = sent[0], sent[2]
    assert cleared.id == raised.id and cleared.raised_at_us == raised.raised_at_us
    assert cleared.cleared_at_us >= raised.raised_at_us and cleared.message == "back"
    assert raised.severity == "critical" and raised.subject == "production"
    assert raised.value == 16.0 and raised.instance == "mon-0"
    assert book.raised_total == {"program_black": 2}
    assert book.counts() == {("program_black", "critical"): 1}


def test_a_new_occurrence_gets_a_new_id() -> None:
    sent: list[monitoring_pb2.Alert] = []
    book = AlertBook("mon-0", sent.append)
    book.raise_("source_lost", "gz", "lost")
    book.clear("source_lost", "gz")
    book.raise_("source_lost", "gz", "lost")
    assert sent[0].id != sent[2].id
    assert sent[2].severity == "warning"


def test_clear_target_clears_everything_about_it() -> None:
    sent: list[monitoring_pb2.Alert] = []
    book = AlertBook("mon-0", sent.append)
    book.raise_("program_black", "qihang", "")
    book.raise_("program_silent", "qihang", "")
    book.raise_("program_silent", "other", "")
    book.clear_target("qihang", "production ended")
    assert [a.target for a in book.firing()] == ["other"]


def test_every_condition_has_a_known_severity() -> None:
    assert {severity for _, severity in CONDITIONS.values()} == {"critical", "warning"}


def published(condition: str, target: str, instance: str = "mon-old") -> monitoring_pb2.Alert:
    """An alert another replica published as firing."""
    return monitoring_pb2.Alert(
        id=f"{condition}/{target}/1",
        condition=condition,
        target=target,
        severity=CONDITIONS[condition][1],
        state=monitoring_pb2.ALERT_STATE_RAISED,
        raised_at_us=1,
        instance=instance,
    )


def test_a_seeded_book_raises_nothing_already_published_and_clears_it_with_its_id() -> None:
    sent: list[monitoring_pb2.Alert] = []
    book = AlertBook("mon-1", sent.append)
    book.seed(
        [
            published("source_lost", "gz"),
            published("nats_disconnected", "monitoring/mon-old"),  # the other's own: not seeded
        ]
    )
    assert not book.raise_("source_lost", "gz", "lost")
    assert [(a.condition, a.target) for a in book.firing()] == [("source_lost", "gz")]
    assert book.clear("source_lost", "gz", "back")
    assert [(a.id, a.state) for a in sent] == [
        ("source_lost/gz/1", monitoring_pb2.ALERT_STATE_CLEARED)
    ]


def test_taking_over_publishes_only_the_differences() -> None:
    sent: list[monitoring_pb2.Alert] = []
    book = AlertBook("mon-1", sent.append)
    book.raise_("source_lost", "gz", "judged here, raised there too")
    book.raise_("program_black", "qihang", "judged here only")
    sent.clear()  # off duty so far: nothing of that was published by this replica
    book.take_over(
        [
            published("source_lost", "gz"),
            published("output_failed", "qihang/rtmp-1"),  # judged there only: adopted
            published("nats_disconnected", "monitoring/mon-old"),  # the old one's own: cleared
        ]
    )
    assert [(a.condition, a.target, a.state) for a in sent] == [
        ("program_black", "qihang", monitoring_pb2.ALERT_STATE_RAISED),
        ("nats_disconnected", "monitoring/mon-old", monitoring_pb2.ALERT_STATE_CLEARED),
    ]
    assert sent[1].id == "nats_disconnected/monitoring/mon-old/1"
    firing = {(a.condition, a.target): a for a in book.firing()}
    assert set(firing) == {
        ("source_lost", "gz"),
        ("program_black", "qihang"),
        ("output_failed", "qihang/rtmp-1"),
    }
    assert firing[("source_lost", "gz")].id == "source_lost/gz/1"  # the published id is kept
    assert firing[("source_lost", "gz")].instance == "mon-old"


async def test_the_publisher_sends_only_on_duty_and_stores_what_it_sent() -> None:
    class Wire:
        def __init__(self) -> None:
            self.sent: list[tuple[str, monitoring_pb2.Alert]] = []

        async def publish(self, subj: str, alert: monitoring_pb2.Alert) -> None:
            self.sent.append((subj, alert))

    wire = Wire()
    records: list[list[tuple[str, str]]] = []

    async def store(alerts: list[monitoring_pb2.Alert]) -> None:
        records.append([(a.condition, a.target) for a in alerts])

    publisher = AlertPublisher(wire)  # type: ignore[arg-type]
    publisher.store = store
    book = AlertBook("mon-1", publisher.put)
    book.raise_("source_lost", "gz", "judged while off duty")
    assert publisher.pending() == 0
    runner = asyncio.create_task(publisher.run())
    try:
        publisher.start_duty([published("source_lost", "fs")])
        book.take_over([published("source_lost", "fs")])
        await publisher.flush(2.0)
        assert [(s, a.target) for s, a in wire.sent] == [("baycast.v1.alert.warning", "gz")]
        assert records[-1] == [("source_lost", "fs"), ("source_lost", "gz")]
        book.clear("source_lost", "fs", "back")
        await publisher.flush(2.0)
        assert records[-1] == [("source_lost", "gz")]
        publisher.on_duty = False
        book.clear("source_lost", "gz", "back")
        await publisher.flush(2.0)
        assert len(wire.sent) == 2  # judged, not published
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
