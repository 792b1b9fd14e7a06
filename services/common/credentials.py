"""Who is asking: bearer tokens of stations and operators, and what they resolve to.

Stations (bucket `stations`, ingest's) and operators (bucket `operators`, the control service's)
hold a random salt and `sha256(salt || token)`; the token itself exists only in the reply to `add`
or `rotate`. Tokens are 256 random bits, so a leaked bucket does not let anyone in.

`CredentialBook` keeps both buckets mirrored in memory, so a service that takes tokens from the
outside (WHIP, WHEP, the station's event stream, the control room) checks one without a bus round
trip, and answers a wrong token the same way whether or not the id it names exists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Protocol, TypeVar

from services.common.bus import Bus
from services.common.gen.baycast.v1 import ingest_pb2, operators_pb2
from services.common.kv_mirror import KvMirror

STATIONS_BUCKET = "stations"
OPERATORS_BUCKET = "operators"
TOKEN_BYTES = 32
SALT_BYTES = 16
SRT_PASSPHRASE_CHARS = 32
# Station and operator ids: used in subjects, URLs, handles and source ids.
PRINCIPAL_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
ROLE_NAMES = {
    operators_pb2.ROLE_VIEWER: "viewer",
    operators_pb2.ROLE_AUDIO: "audio",
    operators_pb2.ROLE_GRAPHICS: "graphics",
    operators_pb2.ROLE_DIRECTOR: "director",
}


class Hashed(Protocol):
    """A stored principal: its token's salt and hash, and whether it was revoked."""

    token_salt: str
    token_sha256: str
    revoked: bool


H = TypeVar("H", ingest_pb2.Station, operators_pb2.Operator)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(salt: str, token: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + token.encode()).hexdigest()


def with_new_token(record: H) -> tuple[H, str]:
    """A copy of `record` holding the hash of a fresh token, and that token."""
    token = new_token()
    salt = secrets.token_hex(SALT_BYTES)
    out = type(record)()
    out.CopyFrom(record)
    out.token_salt = salt
    out.token_sha256 = token_hash(salt, token)
    return out, token


def token_matches(record: Hashed, token: str) -> bool:
    if record.revoked or not record.token_salt or not token:
        return False
    return hmac.compare_digest(token_hash(record.token_salt, token), record.token_sha256)


def srt_passphrase(secret: str, station: ingest_pb2.Station) -> str:
    """The station's SRT passphrase ('' for a revoked station: it has no token salt).

    Derived from the platform's SRT secret and the station's token salt, so it changes when the
    token is rotated and the bucket alone does not give it away. Ingest (contribution) and
    distribution (the return) derive the same one from the same `BAYCAST_SRT_SECRET`.
    """
    if not station.token_salt or station.revoked:
        return ""
    digest = hmac.new(
        secret.encode(), f"srt:{station.id}:{station.token_salt}".encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).decode()[:SRT_PASSPHRASE_CHARS]


@dataclass(frozen=True)
class Principal:
    """Who a token belongs to."""

    kind: str  # "station" or "operator"
    id: str
    name: str
    role: operators_pb2.Role.ValueType = operators_pb2.ROLE_UNSPECIFIED  # operators only

    @property
    def label(self) -> str:
        """`station:gz`, `operator:zhang`: for logs, metrics and as-run entries."""
        return f"{self.kind}:{self.id}"

    @property
    def is_operator(self) -> bool:
        return self.kind == "operator"

    def may(self, role: operators_pb2.Role.ValueType) -> bool:
        """True for an operator whose role includes `role` (the director's includes all)."""
        return self.is_operator and (self.role == operators_pb2.ROLE_DIRECTOR or self.role == role)


class CredentialBook:
    """Stations and operators mirrored from their buckets; tokens checked in memory."""

    def __init__(
        self,
        stations: KvMirror[ingest_pb2.Station],
        operators: KvMirror[operators_pb2.Operator],
    ) -> None:
        self.stations = stations
        self.operators = operators

    @classmethod
    async def open(cls, bus: Bus) -> CredentialBook:
        stations = await KvMirror.open(bus, STATIONS_BUCKET, ingest_pb2.Station)
        operators = await KvMirror.open(bus, OPERATORS_BUCKET, operators_pb2.Operator)
        return cls(stations, operators)

    async def close(self) -> None:
        await self.stations.close()
        await self.operators.close()

    def station(self, station_id: str) -> ingest_pb2.Station | None:
        """The station, unless unknown or revoked."""
        station = self.stations.get(station_id)
        return station if station is not None and not station.revoked else None

    def identify(self, token: str) -> Principal | None:
        """Whose token this is (a current, unrevoked one), or None.

        Every record is checked, so the answer takes as long for a wrong token as for a right one
        and says nothing about which ids exist.
        """
        found: Principal | None = None
        if not token:
            return None
        for station in self.stations.values():
            if token_matches(station, token):
                found = Principal("station", station.id, station.name)
        for operator in self.operators.values():
            if token_matches(operator, token):
                found = Principal("operator", operator.id, operator.name, operator.role)
        return found
