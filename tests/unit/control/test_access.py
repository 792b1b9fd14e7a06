"""Sessions, CSRF and origin checks, and token checks, without a network."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from services.common import errors
from services.common.credentials import CredentialBook, media_grant, with_new_token
from services.common.gen.baycast.v1 import ingest_pb2, operators_pb2
from services.common.rate_limiter import RateLimiter
from services.common.settings import load_settings
from services.control.access import CSRF_HEADER, SESSION_COOKIE, Caller, Gatekeeper
from services.control.sessions import SessionBook
from services.control.settings import ControlSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Mirror(dict[str, Any]):
    """What CredentialBook reads of a KvMirror."""

    def values(self) -> Any:  # type: ignore[override]
        return iter(list(super().values()))


def operator(op_id: str, role: operators_pb2.Role.ValueType) -> tuple[operators_pb2.Operator, str]:
    return with_new_token(operators_pb2.Operator(id=op_id, name=op_id.upper(), role=role))


@pytest.fixture
def world() -> dict[str, Any]:
    director, director_token = operator("zhang", operators_pb2.ROLE_DIRECTOR)
    station, station_token = with_new_token(ingest_pb2.Station(id="gz", name="广州台"))
    operators, stations = Mirror(zhang=director), Mirror(gz=station)
    clock = Clock()
    sessions = SessionBook(ttl_s=100.0, idle_s=10.0, max_sessions=3, clock=clock)
    settings = load_settings(ControlSettings, "control", environ={})
    gate = Gatekeeper(CredentialBook(stations, operators), sessions, settings)  # type: ignore[arg-type]
    return {
        "gate": gate,
        "sessions": sessions,
        "clock": clock,
        "operators": operators,
        "director_token": director_token,
        "station_token": station_token,
    }


def request(method: str = "GET", path: str = "/api/me", **headers: str) -> Any:
    return make_mocked_request(method, path, headers={"Host": "control.example:8106", **headers})


def test_bearer_tokens(world: dict[str, Any]) -> None:
    gate: Gatekeeper = world["gate"]
    caller = gate.authenticate(request(Authorization=f"Bearer {world['director_token']}"))
    assert (caller.id, caller.role, caller.session) == ("zhang", operators_pb2.ROLE_DIRECTOR, None)
    for header in ("Bearer wrong", "Bearer ", "Basic abc", f"Token {world['director_token']}"):
        with pytest.raises(errors.Unauthenticated):
            gate.authenticate(request(Authorization=header))
    with pytest.raises(errors.PermissionDenied):
        gate.authenticate(request(Authorization=f"Bearer {world['station_token']}"))
    # No credentials at all.
    with pytest.raises(errors.Unauthenticated):
        gate.authenticate(request())
    # A bearer caller needs no CSRF token, whatever the method.
    gate.check_write(request("POST", Authorization="Bearer x"), caller)


def test_a_session_holds_its_own_csrf_token_and_needs_our_origin(world: dict[str, Any]) -> None:
    gate: Gatekeeper = world["gate"]
    book: SessionBook = world["sessions"]
    caller = gate.by_token(world["director_token"])
    mine = book.open(caller.id, caller.fingerprint)
    other = book.open(caller.id, caller.fingerprint)
    cookie = {"Cookie": f"{SESSION_COOKIE}={mine.id}"}
    by_cookie = gate.authenticate(request(**cookie))
    assert by_cookie.session is mine and by_cookie.id == "zhang"

    origin = "http://control.example:8106"
    gate.check_write(
        request("POST", **cookie, Origin=origin, **{CSRF_HEADER: mine.csrf}), by_cookie
    )
    gate.check_write(request("GET", **cookie), by_cookie)  # reads need neither
    refusals = {
        "no CSRF token": {"Origin": origin},
        "another session's token": {"Origin": origin, CSRF_HEADER: other.csrf},
        "a prefix of the token": {"Origin": origin, CSRF_HEADER: mine.csrf[:-1]},
        "no Origin": {CSRF_HEADER: mine.csrf},
        "a foreign Origin": {"Origin": "http://evil.example", CSRF_HEADER: mine.csrf},
        "another port": {"Origin": "http://control.example:9999", CSRF_HEADER: mine.csrf},
        "https for http": {"Origin": "https://control.example:8106", CSRF_HEADER: mine.csrf},
        "a null Origin": {"Origin": "null", CSRF_HEADER: mine.csrf},
    }
    for why, headers in refusals.items():
        with pytest.raises(errors.PermissionDenied) as refused:
            gate.check_write(request("POST", **cookie, **headers), by_cookie)
        assert refused.value.field in (CSRF_HEADER, "Origin"), why


def test_the_origin_behind_a_trusted_proxy(world: dict[str, Any]) -> None:
    settings = load_settings(ControlSettings, "control", environ={}, trust_proxy=True)
    gate = Gatekeeper(world["gate"].credentials, world["sessions"], settings)
    behind = request(
        **{
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "control.baycast.example",
            "X-Forwarded-For": "198.51.100.7, 10.0.0.2",
        }
    )
    assert gate.is_secure(behind)
    assert gate.own_origin(behind) == "https://control.baycast.example"
    assert gate.client_address(behind) == "10.0.0.2"  # the one our proxy appended
    # Without trust, the headers mean nothing.
    assert not world["gate"].is_secure(behind)
    assert world["gate"].own_origin(behind) == "http://control.example:8106"
    fixed = load_settings(ControlSettings, "control", environ={}, public_url="https://cr.example/")
    assert (
        Gatekeeper(world["gate"].credentials, world["sessions"], fixed).own_origin(behind)
        == "https://cr.example"
    )


def test_sessions_expire_idle_and_end_with_their_token(world: dict[str, Any]) -> None:
    gate: Gatekeeper = world["gate"]
    book: SessionBook = world["sessions"]
    clock: Clock = world["clock"]
    caller = gate.by_token(world["director_token"])
    session = book.open(caller.id, caller.fingerprint)
    clock.now += 9
    assert book.get(session.id) is session  # touched: idle clock restarts
    clock.now += 9
    assert book.get(session.id) is session
    clock.now += 10
    assert book.get(session.id) is None and len(book) == 0  # idle for 10 s

    session = book.open(caller.id, caller.fingerprint)
    for _ in range(12):
        clock.now += 9
        book.get(session.id)
    assert book.get(session.id) is None  # over the absolute lifetime (100 s)

    session = book.open(caller.id, caller.fingerprint)
    as_caller = Caller(caller.operator, caller.fingerprint, session)
    assert gate.still_valid(as_caller)
    rotated, _new_token = with_new_token(world["operators"]["zhang"])
    world["operators"]["zhang"] = rotated
    assert not gate.still_valid(as_caller)
    assert book.end_where(lambda s: gate.current(s.operator, s.fingerprint) is None) == 1
    with pytest.raises(errors.Unauthenticated):
        gate.authenticate(request(Cookie=f"{SESSION_COOKIE}={session.id}"))
    with pytest.raises(errors.Unauthenticated):
        gate.by_token(world["director_token"])

    # At most max_sessions (3): the oldest goes first.
    opened = [book.open("zhang", rotated.token_sha256) for _ in range(4)]
    assert opened[0].id not in book and all(s.id in book for s in opened[1:])
    assert book.close(opened[1].id) and not book.close(opened[1].id)


def test_a_revoked_operator_has_no_valid_caller(world: dict[str, Any]) -> None:
    gate: Gatekeeper = world["gate"]
    caller = gate.by_token(world["director_token"])
    revoked = operators_pb2.Operator()
    revoked.CopyFrom(world["operators"]["zhang"])
    revoked.revoked = True
    world["operators"]["zhang"] = revoked
    assert not gate.still_valid(caller)
    del world["operators"]["zhang"]
    assert not gate.still_valid(caller)


def test_the_login_rate_limiter() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=0.5, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(2.0)
    assert limiter.take("b") == 0.0  # another address has its own bucket
    clock.now += 2.0
    assert limiter.take("a") == 0.0
    clock.now += 100
    limiter.take("c")
    assert len(limiter) == 1  # full buckets are forgotten


def test_a_media_grant_opens_nothing_in_the_control_room(world: dict[str, Any]) -> None:
    gate: Gatekeeper = world["gate"]
    director = world["operators"]["zhang"]
    gate.credentials.grant_secret = "shared"
    grant = media_grant("shared", director)
    assert gate.credentials.identify(grant) is not None  # what ingest and distribution accept
    with pytest.raises(errors.Unauthenticated):
        gate.by_token(grant)
    with pytest.raises(errors.Unauthenticated):
        gate.authenticate(request(Authorization=f"Bearer {grant}"))
