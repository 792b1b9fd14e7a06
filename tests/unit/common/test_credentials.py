"""Tokens of stations and operators: who a token belongs to, checked without a bus."""

from __future__ import annotations

from services.common import errors
from services.common.credentials import (
    CredentialBook,
    Principal,
    media_grant,
    srt_passphrase,
    with_new_token,
)
from services.common.gen.baycast.v1 import ingest_pb2, operators_pb2
from services.common.tally_url import TallyTarget, parse_tally_url


class _Mirror:
    def __init__(self, values: list) -> None:  # type: ignore[type-arg]
        self._values = {v.id: v for v in values}

    def get(self, key: str):  # type: ignore[no-untyped-def]
        return self._values.get(key)

    def values(self):  # type: ignore[no-untyped-def]
        return iter(self._values.values())


def _book() -> tuple[CredentialBook, dict[str, str]]:
    gz, gz_token = with_new_token(ingest_pb2.Station(id="gz", name="广州台"))
    sz, sz_token = with_new_token(ingest_pb2.Station(id="sz", name="深圳台"))
    old, old_token = with_new_token(ingest_pb2.Station(id="old", name="旧台"))
    old.revoked = True
    zhang, zhang_token = with_new_token(
        operators_pb2.Operator(id="zhang", name="张导", role=operators_pb2.ROLE_DIRECTOR)
    )
    book = CredentialBook(_Mirror([gz, sz, old]), _Mirror([zhang]))  # type: ignore[arg-type]
    return book, {"gz": gz_token, "sz": sz_token, "old": old_token, "zhang": zhang_token}


def test_a_token_names_its_station_or_operator_and_a_revoked_or_wrong_one_nobody() -> None:
    book, tokens = _book()
    assert book.identify(tokens["gz"]) == Principal("station", "gz", "广州台")
    assert book.identify(tokens["sz"]).label == "station:sz"  # type: ignore[union-attr]
    zhang = book.identify(tokens["zhang"])
    assert zhang is not None and zhang.is_operator and zhang.label == "operator:zhang"
    assert zhang.may(operators_pb2.ROLE_GRAPHICS)  # the director's role includes the others
    assert book.identify(tokens["old"]) is None
    assert book.identify(tokens["gz"] + "x") is None
    assert book.identify("") is None
    assert book.station("gz") is not None and book.station("old") is None


def test_roles_other_than_the_director_grant_only_themselves() -> None:
    graphics = Principal("operator", "li", "李", operators_pb2.ROLE_GRAPHICS)
    assert graphics.may(operators_pb2.ROLE_GRAPHICS)
    assert not graphics.may(operators_pb2.ROLE_DIRECTOR)
    assert not graphics.may(operators_pb2.ROLE_AUDIO)
    assert not Principal("station", "gz", "广州台").may(operators_pb2.ROLE_VIEWER)


def test_the_srt_passphrase_follows_the_token_salt_and_the_secret() -> None:
    station, _ = with_new_token(ingest_pb2.Station(id="gz"))
    first = srt_passphrase("secret", station)
    assert len(first) == 32 and first == srt_passphrase("secret", station)
    assert srt_passphrase("other", station) != first
    rotated, _ = with_new_token(station)
    assert srt_passphrase("secret", rotated) != first
    rotated.revoked = True
    assert srt_passphrase("secret", rotated) == ""


def test_tally_urls_parse_and_bad_ones_name_the_field() -> None:
    assert parse_tally_url("tsl5+udp://10.0.0.5:8900") == TallyTarget("udp", "10.0.0.5", 8900)
    assert parse_tally_url("tsl5+tcp://umd.gz.example:9000?index=7&screen=2") == TallyTarget(
        "tcp", "umd.gz.example", 9000, 7, 2
    )
    for bad in (
        "udp://1.2.3.4:5",
        "tsl5+udp://1.2.3.4",
        "tsl5+udp://1.2.3.4:99999",
        "tsl5+udp://1.2.3.4:5/path",
        "tsl5+udp://1.2.3.4:5?index=65535",
        "tsl5+udp://1.2.3.4:5?index=x",
        "tsl5+udp://1.2.3.4:5?colour=red",
        "tsl5+udp://user:pw@1.2.3.4:5",
    ):
        try:
            parse_tally_url(bad, "set.tally_url")
        except errors.InvalidArgument as exc:
            assert exc.field == "set.tally_url"
        else:
            raise AssertionError(f"{bad} was accepted")


def test_a_media_grant_stands_for_its_operator_until_it_expires_or_the_token_changes() -> None:
    book, _tokens = _book()
    book.grant_secret = "s" * 32
    zhang = book.operators.get("zhang")
    assert zhang is not None
    grant = media_grant(book.grant_secret, zhang)
    assert book.identify(grant) == Principal("operator", "zhang", "张导", zhang.role)
    assert book.identify(media_grant("other secret", zhang)) is None  # forged
    assert book.identify(grant[:-1] + ("0" if grant[-1] != "0" else "1")) is None
    assert book.identify(media_grant(book.grant_secret, zhang, lifetime_s=-1)) is None  # expired
    rotated, _ = with_new_token(zhang)
    book.operators._values["zhang"] = rotated  # type: ignore[attr-defined]
    assert book.identify(grant) is None  # the token was rotated since
    book.grant_secret = ""
    assert book.identify(media_grant("s" * 32, rotated)) is None  # grants not taken at all
