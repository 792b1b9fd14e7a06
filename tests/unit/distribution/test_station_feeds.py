"""What a station gets back and may take, under each exchange policy (docs/adr/0012)."""

from __future__ import annotations

from services.common.gen.baycast.v1 import mixer_pb2
from services.distribution.station_feeds import station_exchange

BASE = "http://dist.example:8080"


def production(prod_id: str, *sources: str, **policy: object) -> mixer_pb2.Production:
    return mixer_pb2.Production(
        id=prod_id,
        name="启航·大湾区",
        sources=[mixer_pb2.ProductionSource(id=s, name=f"{s}台") for s in sources],
        exchange=mixer_pb2.ExchangePolicy(**policy),  # type: ignore[arg-type]
    )


def handles(exchange: object) -> list[tuple[str, str]]:
    return [(f.production, f.handle) for f in exchange.feeds]  # type: ignore[attr-defined]


def test_by_default_a_station_takes_the_program_and_the_other_sources_after_its_return() -> None:
    got = station_exchange("gz", "广州台", [production("qh", "gz", "sz")], BASE)
    assert handles(got) == [
        ("qh", "return/gz"),
        ("qh", "program"),
        ("qh", "clean"),
        ("qh", "multiview"),
        ("qh", "source/sz"),
    ]
    assert got.feeds[0].whep_url == f"{BASE}/whep/qh/return/gz"
    assert got.feeds[0].label == "启航·大湾区 返送 Return"
    assert got.feeds[4].label == "sz台" and got.feeds[4].whep_url == f"{BASE}/whep/qh/source/sz"
    assert got.events_url == f"{BASE}/exchange/gz/events"
    assert (got.station, got.name) == ("gz", "广州台")


def test_returns_come_first_across_productions_and_policies_are_applied_per_production() -> None:
    listed = production(
        "b",
        "gz",
        "sz",
        program=mixer_pb2.EXCHANGE_ACCESS_LISTED,
        sources=mixer_pb2.EXCHANGE_ACCESS_NONE,
        stations=["sz"],
    )
    other = production("c", "fs", program=mixer_pb2.EXCHANGE_ACCESS_LISTED, stations=["gz"])
    closed = production("a", "gz", program=mixer_pb2.EXCHANGE_ACCESS_NONE)
    got = station_exchange("gz", "广州台", [listed, other, closed], BASE)
    # a: no program (NONE), no other source; b: gz is not listed, sources NONE; c: gz is
    # listed for the program, and c's sources are for c's stations only.
    assert handles(got) == [
        ("a", "return/gz"),
        ("b", "return/gz"),
        ("c", "program"),
        ("c", "clean"),
        ("c", "multiview"),
    ]
    sz = station_exchange("sz", "深圳台", [listed], BASE)
    assert handles(sz) == [("b", "return/sz"), ("b", "program"), ("b", "clean"), ("b", "multiview")]


def test_a_station_of_no_production_gets_nothing_but_its_event_stream() -> None:
    got = station_exchange("zh", "珠海台", [production("qh", "gz")], BASE)
    assert list(got.feeds) == [] and got.events_url == f"{BASE}/exchange/zh/events"
