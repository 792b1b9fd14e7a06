"""What a station gets back and may take: its returns, then the feeds the exchange policy allows.

The list a station's page and `baycast ctl return url` show; the rules are access.py's, the ones
WHEP enforces, so the list never offers what WHEP would refuse.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.common.gen.baycast.v1 import exchange_pb2, mixer_pb2
from services.distribution.access import source_ids, station_allowed

PROGRAM_FEEDS = (
    ("program", "节目 Program"),
    ("clean", "净信号 Clean"),
    ("multiview", "多画面 Multiview"),
)
RETURN_LABEL = "返送 Return"


def is_source(production: mixer_pb2.Production, station: str) -> bool:
    return any(s.id == station for s in production.sources)


def may_take(
    access: mixer_pb2.ExchangeAccess.ValueType,
    production: mixer_pb2.Production,
    station: str,
) -> bool:
    """Whether `access` lets `station` take a feed of `production`."""
    return station_allowed(access, station, production, source_ids(production))


def whep_url(base_url: str, production: str, handle: str) -> str:
    return f"{base_url}/whep/{production}/{handle}"


def events_url(base_url: str, station: str) -> str:
    return f"{base_url}/exchange/{station}/events"


def station_exchange(
    station: str,
    name: str,
    productions: Iterable[mixer_pb2.Production],
    base_url: str,
) -> exchange_pb2.StationExchange:
    """The station's returns (one per production it is a source of), then what it may take."""
    ordered = sorted(productions, key=lambda p: p.id)
    returns: list[exchange_pb2.ExchangeFeed] = []
    takes: list[exchange_pb2.ExchangeFeed] = []
    for prod in ordered:
        policy = prod.exchange
        if is_source(prod, station):
            handle = f"return/{station}"
            returns.append(
                exchange_pb2.ExchangeFeed(
                    production=prod.id,
                    handle=handle,
                    label=f"{prod.name or prod.id} {RETURN_LABEL}",
                    whep_url=whep_url(base_url, prod.id, handle),
                )
            )
        if may_take(policy.program, prod, station):
            for handle, label in PROGRAM_FEEDS:
                takes.append(
                    exchange_pb2.ExchangeFeed(
                        production=prod.id,
                        handle=handle,
                        label=label,
                        whep_url=whep_url(base_url, prod.id, handle),
                    )
                )
        if may_take(policy.sources, prod, station):
            for source in prod.sources:
                if source.id == station:
                    continue  # its own picture it has already
                handle = f"source/{source.id}"
                takes.append(
                    exchange_pb2.ExchangeFeed(
                        production=prod.id,
                        handle=handle,
                        label=source.name or source.id,
                        whep_url=whep_url(base_url, prod.id, handle),
                    )
                )
    return exchange_pb2.StationExchange(
        station=station,
        name=name,
        feeds=[*returns, *takes],
        events_url=events_url(base_url, station),
    )
