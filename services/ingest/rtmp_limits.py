"""What an RTMP client may cost ingest before its stream key is accepted.

Nothing is known of a client until its key has been checked, so everything before that is
bounded, and each refusal is counted by reason in `baycast_ingest_rtmp_refused_total`:

* connections negotiating at once, per client address and in all (`ConnectionGate`; an IPv6
  client counts by its /64, which one subscriber usually holds whole). Past the total, a
  newcomer from an address with none takes the slot of the oldest connection of the address
  holding the most (one already negotiating, only when that holds two more): a few addresses
  cannot lock every station out. A refused connection is cut at its accept, with no task;
* one deadline from the accept to the accepted key (`negotiation_timeout_s`), not one per read:
  a client dripping a byte a second is gone when it passes;
* what the chunk stream may hold (`rtmp_chunks.ChunkLimits`): before the publish, commands of
  at most `max_command_bytes`, one at a time, a few of them and no media; after it, media
  messages up to `max_media_bytes` and `max_partial_bytes` of partial messages in all;
* AMF0 decoding (`rtmp_amf`): a bounded count of values and depth of nesting;
* stream-key tries (`KeyTries`): a token bucket per address and one for all; a try refused
  there is answered as a wrong key and costs no read of the stations bucket.

Log lines (`RefusalLog`) name the reason and the client's address, at most once a second per
reason (with the count of those left unlogged); never a key.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog

from services.common.rate_limiter import RateLimiter
from services.ingest import metrics
from services.ingest import settings as defaults
from services.ingest.rtmp_chunks import ChunkLimits
from services.ingest.settings import IngestSettings

# Reasons (the metric's label values) decided here; the chunk stream's come from ChunkError.
PER_ADDRESS = "per_address"
TOTAL = "total"
EVICTED = "evicted"
DEADLINE = "deadline"
AMF = "amf"
KEY_RATE_ADDRESS = "key_rate_address"
KEY_RATE_TOTAL = "key_rate_total"
ALL_CLIENTS = "*"  # the one client of the bucket for every address together

log = structlog.get_logger("ingest.rtmp")

Entry = TypeVar("Entry")


@dataclass(frozen=True)
class RtmpLimits:
    """The RTMP listener's bounds (ingest's settings `RTMP_*`)."""

    max_connections: int = defaults.DEFAULT_RTMP_MAX_CONNECTIONS
    max_connections_per_addr: int = defaults.DEFAULT_RTMP_MAX_CONNECTIONS_PER_ADDR
    negotiation_timeout_s: float = defaults.DEFAULT_RTMP_NEGOTIATION_TIMEOUT_S
    max_command_bytes: int = defaults.DEFAULT_RTMP_MAX_COMMAND_BYTES
    max_media_bytes: int = defaults.DEFAULT_RTMP_MAX_MEDIA_BYTES
    max_partial_streams: int = defaults.DEFAULT_RTMP_MAX_PARTIAL_STREAMS
    max_partial_bytes: int = defaults.DEFAULT_RTMP_MAX_PARTIAL_BYTES
    key_rate_per_s: float = defaults.DEFAULT_RTMP_KEY_RATE_PER_S
    key_rate_burst: int = defaults.DEFAULT_RTMP_KEY_RATE_BURST
    key_rate_total_per_s: float = defaults.DEFAULT_RTMP_KEY_RATE_TOTAL_PER_S
    key_rate_total_burst: int = defaults.DEFAULT_RTMP_KEY_RATE_TOTAL_BURST

    @classmethod
    def from_settings(cls, s: IngestSettings) -> RtmpLimits:
        return cls(
            max_connections=s.rtmp_max_connections,
            max_connections_per_addr=s.rtmp_max_connections_per_addr,
            negotiation_timeout_s=s.rtmp_negotiation_timeout_s,
            max_command_bytes=s.rtmp_max_command_bytes,
            max_media_bytes=s.rtmp_max_media_bytes,
            max_partial_streams=s.rtmp_max_partial_streams,
            max_partial_bytes=s.rtmp_max_partial_bytes,
            key_rate_per_s=s.rtmp_key_rate_per_s,
            key_rate_burst=s.rtmp_key_rate_burst,
            key_rate_total_per_s=s.rtmp_key_rate_total_per_s,
            key_rate_total_burst=s.rtmp_key_rate_total_burst,
        )

    def publishing_chunks(self) -> ChunkLimits:
        """The chunk stream's limits once the publish is accepted."""
        return ChunkLimits(
            max_command_bytes=self.max_command_bytes,
            max_media_bytes=self.max_media_bytes,
            max_partial_streams=self.max_partial_streams,
            max_partial_bytes=self.max_partial_bytes,
        )

    def negotiating_chunks(self) -> ChunkLimits:
        """The chunk stream's limits until then."""
        return self.publishing_chunks().before_publish()

    def key_tries(self) -> KeyTries:
        return KeyTries(
            RateLimiter(self.key_rate_per_s, self.key_rate_burst),
            RateLimiter(self.key_rate_total_per_s, self.key_rate_total_burst),
        )


def address_key(host: str) -> str:
    """What a client's connections are counted under: its IPv4 address, its IPv6 /64."""
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class ConnectionGate(Generic[Entry]):
    """Connections negotiating now, per address and in all (sans I/O: the caller ends them)."""

    def __init__(
        self, max_total: int, max_per_address: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.clock = clock
        self.total = 0
        self._held: dict[str, list[tuple[float, Entry]]] = {}  # oldest first

    def held(self, address: str) -> int:
        return len(self._held.get(address, ()))

    def enter(self, address: str, entry: Entry) -> tuple[str, tuple[str, Entry] | None]:
        """Admit `entry`: ("", None), or ("", (address, entry)) of a connection it displaced
        (to be ended by the caller, already out of the gate); or (reason, None) if refused."""
        held = self._held.get(address, [])
        if len(held) >= self.max_per_address:
            return PER_ADDRESS, None
        displaced: tuple[str, Entry] | None = None
        if self.total >= self.max_total:
            largest, oldest = self._largest_holder()
            # A fresh address always gets in; one already negotiating only takes from an
            # address holding two more than itself (else equals would displace each other
            # at every connection, and each displacement costs a connection set up and cut).
            if len(self._held[largest]) <= len(held) + (1 if held else 0):
                return TOTAL, None
            displaced = (largest, oldest)
            self.leave(largest, oldest)
        self._held.setdefault(address, []).append((self.clock(), entry))
        self.total += 1
        return "", displaced

    def leave(self, address: str, entry: Entry) -> None:
        """`entry` is no longer negotiating (again: nothing)."""
        held = self._held.get(address)
        if held is None:
            return
        for i, (_since, e) in enumerate(held):
            if e is entry:
                del held[i]
                self.total -= 1
                break
        if not held:
            del self._held[address]

    def _largest_holder(self) -> tuple[str, Entry]:
        """The address holding the most (the one whose oldest is oldest among equals), and its
        oldest connection. At most `max_total` addresses are looked at."""
        address, held = max(self._held.items(), key=lambda item: (len(item[1]), -item[1][0][0]))
        return address, held[0][1]


class KeyTries:
    """Stream-key tries: a token from the client address's bucket, then one from everyone's."""

    def __init__(self, per_address: RateLimiter, total: RateLimiter) -> None:
        self.per_address = per_address
        self.total = total

    def take(self, address: str) -> str:
        """ "" when the try may go ahead; else the reason it is refused."""
        if self.per_address.take(address) > 0:
            return KEY_RATE_ADDRESS
        if self.total.take(ALL_CLIENTS) > 0:
            return KEY_RATE_TOTAL
        return ""


class RefusalLog:
    """Counts every refusal; logs one line per event and reason at most every `interval_s`."""

    def __init__(
        self,
        interval_s: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        logger: Any = log,
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.log = logger
        self._logged_at: dict[tuple[str, str], float] = {}
        self._unlogged: Counter[tuple[str, str]] = Counter()

    def refused(self, event: str, reason: str, **fields: Any) -> None:
        metrics.RTMP_REFUSED.labels(reason).inc()
        self.noted(event, reason, **fields)

    def noted(self, event: str, reason: str, **fields: Any) -> None:
        """Log without counting a refusal (a client that went away)."""
        key = (event, reason)
        now = self.clock()
        if now - self._logged_at.get(key, -math.inf) < self.interval_s:
            self._unlogged[key] += 1
            return
        self._logged_at[key] = now
        self.log.info(event, reason=reason, unlogged=self._unlogged.pop(key, 0), **fields)
