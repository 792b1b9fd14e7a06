"""The event hub: fan-out by production, bounded queues, slow clients dropped."""

from __future__ import annotations

import pytest

from services.common import errors
from services.common.gen.baycast.v1 import operators_pb2
from services.control.access import Caller
from services.control.event_stream import EventHub
from services.control.show_state import Event

CALLER = Caller(operators_pb2.Operator(id="zhang", role=operators_pb2.ROLE_VIEWER), "hash")


def event(name: str, production: str = "") -> Event:
    return Event(name, production, "{}")


def test_events_go_to_the_clients_that_want_them() -> None:
    hub = EventHub(queue_size=8, max_clients=4)
    qihang = hub.open(CALLER, "qihang")
    everything = hub.open(CALLER, None)
    hub.publish(event("mixer.state", "qihang"))
    hub.publish(event("mixer.state", "other"))
    hub.publish(event("source.stats"))
    assert [qihang.queue.get_nowait().name for _ in range(qihang.queue.qsize())] == [
        "mixer.state",
        "source.stats",
    ]
    assert everything.queue.qsize() == 3
    assert event("tally", "qihang").frame() == b"event: tally\ndata: {}\n\n"


def test_a_slow_client_is_dropped_and_the_others_carry_on() -> None:
    hub = EventHub(queue_size=4, max_clients=4)
    slow = hub.open(CALLER, None)
    fast = hub.open(CALLER, None)
    for i in range(5):
        hub.publish(event("mixer.levels"))
        if i < 4:
            fast.queue.get_nowait()  # the fast client keeps up
    assert slow.closed_reason == "slow"
    # Its queue holds only the end marker, so its writer stops at once.
    assert slow.queue.qsize() == 1 and slow.queue.get_nowait() is None
    assert not fast.closed_reason and fast.queue.qsize() == 1
    hub.publish(event("mixer.levels"))
    assert fast.queue.qsize() == 2


def test_the_hub_is_bounded_and_drops_by_rule() -> None:
    hub = EventHub(queue_size=4, max_clients=2)
    a = hub.open(CALLER, None)
    b = hub.open(Caller(operators_pb2.Operator(id="li"), "hash"), None)
    with pytest.raises(errors.Unavailable):
        hub.open(CALLER, None)
    assert hub.drop_where(lambda c: c.caller.id == "li", "credential") == 1
    assert b.closed_reason == "credential" and not a.closed_reason
    hub.remove(b)
    hub.open(CALLER, None)


def test_a_draining_hub_ends_every_stream_and_takes_no_new_one() -> None:
    hub = EventHub(queue_size=4, max_clients=4)
    client = hub.open(CALLER, "qihang")
    hub.publish(event("tally", "qihang"))
    hub.close()
    assert client.closed_reason == "draining" and client.queue.get_nowait() is None
    with pytest.raises(errors.Unavailable):
        hub.open(CALLER, None)
