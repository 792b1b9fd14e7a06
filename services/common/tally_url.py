"""Where a station's hardware tally goes: `tsl5+udp://host:port` or `tsl5+tcp://host:port`.

Ingest checks the address when an operator sets it (`baycast ctl station set gz --tally ...`);
distribution sends TSL UMD v5 there. Query parameters: `index` (the display's address on the
device, default 1) and `screen` (default 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from services.common import errors

SCHEMES = {"tsl5+udp": "udp", "tsl5+tcp": "tcp"}
DEFAULT_INDEX = 1
DEFAULT_SCREEN = 0
MAX_INDEX = 0xFFFE  # 0xFFFF addresses every display: a station gets one


@dataclass(frozen=True)
class TallyTarget:
    transport: str  # "udp" or "tcp"
    host: str
    port: int
    index: int = DEFAULT_INDEX
    screen: int = DEFAULT_SCREEN


def parse_tally_url(url: str, field: str = "tally_url") -> TallyTarget:
    """The target of a tally URL; InvalidArgument naming `field` when it is not one."""
    parts = urlsplit(url)
    transport = SCHEMES.get(parts.scheme)
    if transport is None:
        raise errors.InvalidArgument(
            "a tally address is tsl5+udp://host:port or tsl5+tcp://host:port", field=field
        )
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or not port:
        raise errors.InvalidArgument("a tally address needs a host and a port", field=field)
    if parts.path not in ("", "/") or parts.username or parts.password or parts.fragment:
        raise errors.InvalidArgument(
            "a tally address is scheme://host:port[?index=N&screen=N], nothing else", field=field
        )
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"index", "screen"}
    if unknown:
        raise errors.InvalidArgument(
            f"unknown tally parameter(s) {', '.join(sorted(unknown))}", field=field
        )
    values = {}
    for name, default, top in (
        ("index", DEFAULT_INDEX, MAX_INDEX),
        ("screen", DEFAULT_SCREEN, 0xFFFE),
    ):
        raw = query.get(name, [str(default)])
        if len(raw) != 1 or not raw[0].isdigit() or not 0 <= int(raw[0]) <= top:
            raise errors.InvalidArgument(f"tally {name} must be 0..{top}", field=field)
        values[name] = int(raw[0])
    return TallyTarget(transport, parts.hostname, port, values["index"], values["screen"])
