"""A station's event stream drops a reader that fell behind, and who may open which stream."""

from __future__ import annotations

from typing import Any, cast

import pytest
from aiohttp.test_utils import make_mocked_request

from services.common import errors
from services.common.credentials import CredentialBook, with_new_token
from services.common.gen.baycast.v1 import exchange_pb2, ingest_pb2, operators_pb2
from services.distribution.station_events import StationEvents, _Stream


class Transport:
    aborted = False

    def abort(self) -> None:
        self.aborted = True


async def test_a_reader_that_falls_behind_is_dropped_and_its_queue_emptied() -> None:
    stream = _Stream("gz", "token", queue_events=2)
    transport = Transport()
    stream.transport = cast(Any, transport)
    for i in range(2):
        stream.offer(exchange_pb2.StationEvent(cue=exchange_pb2.Cue(id=str(i))))
    assert not stream.closed and stream.queue.qsize() == 2
    stream.offer(exchange_pb2.StationEvent(cue=exchange_pb2.Cue(id="2")))
    assert stream.closed and transport.aborted
    assert stream.queue.get_nowait() is None and stream.queue.empty()
    stream.offer(exchange_pb2.StationEvent(cue=exchange_pb2.Cue(id="3")))  # ignored once ended
    assert stream.queue.empty()


class Mirror:
    def __init__(self, *records: Any) -> None:
        self.records = {r.id: r for r in records}

    def get(self, key: str) -> Any:
        return self.records.get(key)

    def values(self) -> Any:
        return iter(list(self.records.values()))


def events_with_tokens() -> tuple[StationEvents, dict[str, str]]:
    gz, gz_token = with_new_token(ingest_pb2.Station(id="gz", name="广州台"))
    sz, sz_token = with_new_token(ingest_pb2.Station(id="sz", name="深圳台"))
    old, old_token = with_new_token(ingest_pb2.Station(id="hz", name="惠州台"))
    old.revoked = True
    op, op_token = with_new_token(
        operators_pb2.Operator(id="zhang", role=operators_pb2.ROLE_VIEWER)
    )
    book = CredentialBook(cast(Any, Mirror(gz, sz, old)), cast(Any, Mirror(op)))
    none = cast(Any, None)
    events = StationEvents(book, none, none, none, lambda: "http://x")
    tokens = {"gz": gz_token, "sz": sz_token, "hz": old_token, "zhang": op_token}
    return events, tokens


@pytest.mark.parametrize(
    ("station", "token", "refusal"),
    [
        ("gz", "", errors.Unauthenticated),
        ("gz", "wrong", errors.Unauthenticated),
        ("nosuch", "wrong", errors.Unauthenticated),  # the same answer, known or not
        ("hz", "hz", errors.Unauthenticated),  # revoked
        ("gz", "sz", errors.PermissionDenied),
        ("nosuch", "sz", errors.PermissionDenied),
        ("nosuch", "zhang", errors.NotFound),
        ("hz", "zhang", errors.NotFound),
        ("gz", "gz", None),
        ("sz", "zhang", None),
    ],
)
def test_who_may_open_a_station_s_exchange(
    station: str, token: str, refusal: type[errors.BaycastError] | None
) -> None:
    events, tokens = events_with_tokens()
    headers = {"Authorization": f"Bearer {tokens[token]}"} if token in tokens else {}
    if token == "wrong":
        headers = {"Authorization": "Bearer wrong"}
    request = make_mocked_request("GET", f"/exchange/{station}/events", headers=headers)
    if refusal is None:
        assert events.authorize(request, station).id == token
    else:
        with pytest.raises(refusal):
            events.authorize(request, station)


def test_only_the_station_acknowledges_its_cues() -> None:
    events, tokens = events_with_tokens()
    request = make_mocked_request(
        "POST", "/exchange/gz/cues/x/ack", headers={"Authorization": f"Bearer {tokens['zhang']}"}
    )
    with pytest.raises(errors.PermissionDenied):
        events.authorize(request, "gz", operators=False)
