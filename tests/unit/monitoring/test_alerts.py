"""The alert book: one raise and one clear per condition and target."""

from __future__ import annotations

from services.common.gen.baycast.v1 import monitoring_pb2
from services.monitoring.alerts import CONDITIONS, AlertBook


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
