from __future__ import annotations

import pytest

from services.common import errors
from services.common.bus import decode, encode, redact_url, subject
from services.common.gen.baycast.v1 import control_pb2


def test_round_trip_is_canonical_json() -> None:
    state = control_pb2.SourceState(source="gz", name="广州台", online=True)
    data = encode(state)
    assert b'"online": true' in data or b'"online":true' in data
    assert "广州台" in data.decode()
    assert decode(data, control_pb2.SourceState) == state


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"online": "yes"}', "online"),
        (b'{"flavour": 1}', "flavour"),
        (b'{"video": {"width": "wide"}}', "video.width"),
        (b'{"video": {"depth": 8}}', "video.depth"),
    ],
)
def test_decode_names_the_offending_field(payload: bytes, field: str) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        decode(payload, control_pb2.SourceState)
    assert info.value.field == field


def test_subject_refuses_wildcards_and_dots() -> None:
    assert subject("source", "gz", "state") == "baycast.v1.source.gz.state"
    for bad in ("g.z", "*", ">", "", "a b"):
        with pytest.raises(errors.InvalidArgument):
            subject("source", bad, "state")


def test_error_codes_round_trip() -> None:
    exc = errors.from_code("NOT_FOUND", "no such station", "station")
    assert isinstance(exc, errors.NotFound) and exc.field == "station" and exc.http_status == 404
    assert isinstance(errors.from_code("WHATEVER", "x"), errors.BaycastError)


def test_credentials_in_the_nats_url_are_redacted() -> None:
    assert redact_url("nats://ingest:pa55@nats:4222") == "nats://***@nats:4222"
    assert redact_url("nats://tok3n@nats:4222") == "nats://***@nats:4222"
    assert redact_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
