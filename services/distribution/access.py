"""Who may watch which feed of a production over the exchange (docs/adr/0012).

A WHEP handle names a *feed*: `return/<station>` (the production's picture with the station's
mix-minus), `program`, `clean`, `multiview` or `source/<id>`. `parse_feed` turns a handle into
the media-plane handles it is made of; `check_access` says whether a principal may read it:

* an operator (any role) reads everything;
* a station always reads its own return and never another station's;
* the program, clean and multiview feeds follow `production.exchange.program`, the production's
  sources follow `production.exchange.sources`: UNSPECIFIED and STATIONS let every station that
  is a source of the production in, LISTED only `exchange.stations`, NONE no station.

Both raise `NotFound` for what does not exist in the production (an unknown handle, a source or
station that is not one of its sources) before `PermissionDenied`, so the codes follow the
endpoint's order: 404, then 403.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.common import errors
from services.common.credentials import Principal
from services.common.gen.baycast.v1 import mixer_pb2

PICTURES = ("program", "clean")
SHARED_FEEDS = ("program", "clean", "multiview")
FEED_KINDS = ("return", *SHARED_FEEDS, "source")
# A production's source ids, as the mixer accepts them (a station's id is one of them).
SOURCE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")


@dataclass(frozen=True)
class Feed:
    """One watchable feed of one production, and the media-plane handles it is made of."""

    production: str
    handle: str  # as asked: return/gz, program, clean, multiview, source/sz
    kind: str  # one of FEED_KINDS: a bounded metric label
    subject: str  # the station of a return, the source of a source feed, else ""
    video_handle: str
    audio_handle: str


def parse_feed(production: str, handle: str, picture: str = "program") -> Feed:
    """The feed `handle` names in `production` (NotFound for a handle of no known shape).

    `picture` (program or clean) chooses a return's picture; other feeds ignore it.
    """
    if picture not in PICTURES:
        raise errors.InvalidArgument(f"picture must be one of {', '.join(PICTURES)}")
    prod = f"prod/{production}"
    kind, _, rest = handle.partition("/")
    if kind == "return" and SOURCE_ID.match(rest):
        return Feed(production, handle, kind, rest, f"{prod}/{picture}", f"{prod}/mixminus/{rest}")
    if kind == "source" and SOURCE_ID.match(rest):
        return Feed(production, handle, kind, rest, handle, handle)
    if handle in SHARED_FEEDS:
        # The clean feed and the multiview have no sound of their own: the program's goes along.
        return Feed(production, handle, kind, "", f"{prod}/{handle}", f"{prod}/program")
    raise errors.NotFound(
        "no such feed: use return/<station>, program, clean, multiview or source/<id>"
    )


def source_ids(production: mixer_pb2.Production) -> set[str]:
    return {source.id for source in production.sources}


def check_access(principal: Principal, production: mixer_pb2.Production, feed: Feed) -> None:
    """Return if `principal` may read `feed` of `production`; NotFound or PermissionDenied."""
    sources = source_ids(production)
    if feed.kind in ("return", "source") and feed.subject not in sources:
        what = "station" if feed.kind == "return" else "source"
        raise errors.NotFound(f"{what} {feed.subject!r} is not in production {production.id!r}")
    if principal.is_operator:
        return
    if principal.kind != "station":
        raise errors.PermissionDenied("only stations and operators watch the exchange")
    if feed.kind == "return":
        if feed.subject != principal.id:
            raise errors.PermissionDenied("a station reads its own return only")
        return
    access = production.exchange.sources if feed.kind == "source" else production.exchange.program
    if not station_allowed(access, principal.id, production, sources):
        raise errors.PermissionDenied(
            f"production {production.id!r} does not share its {feed.kind} feeds with this station"
        )


def station_allowed(
    access: mixer_pb2.ExchangeAccess.ValueType,
    station: str,
    production: mixer_pb2.Production,
    sources: set[str],
) -> bool:
    if access in (mixer_pb2.EXCHANGE_ACCESS_UNSPECIFIED, mixer_pb2.EXCHANGE_ACCESS_STATIONS):
        return station in sources
    if access == mixer_pb2.EXCHANGE_ACCESS_LISTED:
        return station in production.exchange.stations
    return False  # EXCHANGE_ACCESS_NONE, and any value this version does not know
