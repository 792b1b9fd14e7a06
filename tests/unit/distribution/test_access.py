"""Who may watch which feed (docs/adr/0012): the table of access.py, one row per rule."""

from __future__ import annotations

import pytest

from services.common import errors
from services.common.credentials import Principal
from services.common.gen.baycast.v1 import mixer_pb2, operators_pb2
from services.distribution.access import check_access, parse_feed

UNSPECIFIED = mixer_pb2.EXCHANGE_ACCESS_UNSPECIFIED
STATIONS = mixer_pb2.EXCHANGE_ACCESS_STATIONS
LISTED = mixer_pb2.EXCHANGE_ACCESS_LISTED
NONE = mixer_pb2.EXCHANGE_ACCESS_NONE

GZ = Principal("station", "gz", "广州台")
SZ = Principal("station", "sz", "深圳台")
BJ = Principal("station", "bj", "北京台")  # a station, but not a source of the production
VIEWER_OP = Principal("operator", "li", "李", operators_pb2.ROLE_VIEWER)
DIRECTOR = Principal("operator", "zhang", "张导", operators_pb2.ROLE_DIRECTOR)


def production(
    program: int = UNSPECIFIED, sources: int = UNSPECIFIED, listed: tuple[str, ...] = ()
) -> mixer_pb2.Production:
    return mixer_pb2.Production(
        id="qihang",
        sources=[
            mixer_pb2.ProductionSource(id="gz"),
            mixer_pb2.ProductionSource(id="sz"),
            mixer_pb2.ProductionSource(id="fs"),
        ],
        exchange=mixer_pb2.ExchangePolicy(program=program, sources=sources, stations=listed),
    )


def outcome(principal: Principal, prod: mixer_pb2.Production, handle: str) -> int:
    """200 allowed, else the HTTP status of the refusal."""
    try:
        check_access(principal, prod, parse_feed(prod.id, handle))
    except errors.BaycastError as exc:
        return exc.http_status
    return 200


def test_feeds_are_made_of_the_right_handles() -> None:
    ret = parse_feed("qihang", "return/gz")
    assert (ret.kind, ret.subject) == ("return", "gz")
    assert (ret.video_handle, ret.audio_handle) == (
        "prod/qihang/program",
        "prod/qihang/mixminus/gz",
    )
    clean_return = parse_feed("qihang", "return/gz", "clean")
    assert clean_return.video_handle == "prod/qihang/clean"
    assert clean_return.audio_handle == "prod/qihang/mixminus/gz"
    program = parse_feed("qihang", "program")
    assert (program.video_handle, program.audio_handle) == (
        "prod/qihang/program",
        "prod/qihang/program",
    )
    for name in ("clean", "multiview"):
        feed = parse_feed("qihang", name)
        assert (feed.kind, feed.video_handle, feed.audio_handle) == (
            name,
            f"prod/qihang/{name}",
            "prod/qihang/program",
        )
    source = parse_feed("qihang", "source/sz")
    assert (source.kind, source.subject, source.video_handle, source.audio_handle) == (
        "source",
        "sz",
        "source/sz",
        "source/sz",
    )


@pytest.mark.parametrize(
    "handle",
    ["preview", "return", "return/", "return/gz/x", "source/../gz", "Program", "mixminus/gz", ""],
)
def test_unknown_handles_are_404(handle: str) -> None:
    with pytest.raises(errors.NotFound):
        parse_feed("qihang", handle)


def test_picture_must_be_program_or_clean() -> None:
    with pytest.raises(errors.InvalidArgument):
        parse_feed("qihang", "return/gz", "multiview")


@pytest.mark.parametrize(
    ("principal", "handle", "status"),
    [
        (GZ, "return/gz", 200),  # its own return
        (GZ, "return/sz", 403),  # another station's return
        (BJ, "return/bj", 404),  # not in the production: it has no mix-minus there
        (GZ, "return/bj", 404),  # no such station in the production
        (GZ, "source/nowhere", 404),
        (VIEWER_OP, "return/gz", 200),  # an operator of any role reads everything
        (VIEWER_OP, "return/sz", 200),
        (DIRECTOR, "source/fs", 200),
        (DIRECTOR, "multiview", 200),
        (VIEWER_OP, "return/bj", 404),  # even an operator: no such return
    ],
)
def test_returns_sources_and_operators(principal: Principal, handle: str, status: int) -> None:
    assert outcome(principal, production(), handle) == status


@pytest.mark.parametrize(
    ("access", "gz", "sz", "bj"),
    [
        (UNSPECIFIED, 200, 200, 403),  # the default: every station of the production
        (STATIONS, 200, 200, 403),
        (LISTED, 200, 403, 200),  # only the listed ones, listed: gz and bj
        (NONE, 403, 403, 403),
    ],
)
@pytest.mark.parametrize("handle", ["program", "clean", "multiview"])
def test_program_feeds_follow_the_program_policy(
    access: int, gz: int, sz: int, bj: int, handle: str
) -> None:
    prod = production(program=access, listed=("gz", "bj"))
    assert [outcome(p, prod, handle) for p in (GZ, SZ, BJ)] == [gz, sz, bj]
    assert outcome(VIEWER_OP, prod, handle) == 200
    # The sources' policy is a different one: the default lets stations of the production in.
    assert outcome(GZ, prod, "source/sz") == 200


@pytest.mark.parametrize(
    ("access", "gz", "sz", "bj"),
    [
        (UNSPECIFIED, 200, 200, 403),
        (STATIONS, 200, 200, 403),
        (LISTED, 403, 200, 403),  # listed: sz only
        (NONE, 403, 403, 403),
    ],
)
def test_sources_follow_the_sources_policy(access: int, gz: int, sz: int, bj: int) -> None:
    prod = production(sources=access, listed=("sz",))
    assert [outcome(p, prod, "source/fs") for p in (GZ, SZ, BJ)] == [gz, sz, bj]
    assert outcome(DIRECTOR, prod, "source/fs") == 200
    # A station's own return does not depend on either policy.
    assert outcome(GZ, prod, "return/gz") == 200
    assert outcome(GZ, production(program=NONE, sources=NONE), "return/gz") == 200


def test_a_station_may_take_its_own_source_like_any_other() -> None:
    prod = production(sources=NONE)
    assert outcome(GZ, prod, "source/gz") == 403
    assert outcome(GZ, production(), "source/gz") == 200
