"""Token hashing and station validation, without a bus."""

from __future__ import annotations

import pytest

from services.common import errors
from services.common.credentials import token_hash, token_matches, with_new_token
from services.common.gen.baycast.v1 import ingest_pb2
from services.ingest.stations import check_station_id


def test_a_new_token_is_stored_only_as_a_salted_hash() -> None:
    station, token = with_new_token(ingest_pb2.Station(id="gz", name="广州台"))
    assert token not in station.SerializeToString().decode("latin-1")
    assert station.token_sha256 == token_hash(station.token_salt, token)
    assert token_matches(station, token)
    assert not token_matches(station, token + "x")
    assert not token_matches(station, "")


def test_same_token_under_two_salts_hashes_differently() -> None:
    assert token_hash("00" * 16, "t") != token_hash("11" * 16, "t")


def test_rotation_invalidates_the_old_token_and_revocation_all() -> None:
    station, old = with_new_token(ingest_pb2.Station(id="gz"))
    rotated, new = with_new_token(station)
    assert new != old and not token_matches(rotated, old) and token_matches(rotated, new)
    rotated.revoked = True
    assert not token_matches(rotated, new)


@pytest.mark.parametrize("good", ["gz", "rp-1", "a", "x" * 32])
def test_station_ids_accepted(good: str) -> None:
    assert check_station_id(good) == good


@pytest.mark.parametrize("bad", ["", "GZ", "-gz", "gz-", "a.b", "a b", "x" * 33, "广州"])
def test_station_ids_refused_with_the_field(bad: str) -> None:
    with pytest.raises(errors.InvalidArgument) as exc:
        check_station_id(bad, "add.id")
    assert exc.value.field == "add.id"
