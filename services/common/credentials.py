"""Who is asking: bearer tokens of stations and operators, and what they resolve to.

Stations (bucket `stations`, ingest's) and operators (bucket `operators`, the control service's)
hold a random salt and `sha256(salt || token)`; the token itself exists only in the reply to `add`
or `rotate`. Tokens are 256 random bits, so a leaked bucket does not let anyone in.

`CredentialBook` keeps both buckets mirrored in memory, so a service that takes tokens from the
outside (WHIP, WHEP, the station's event stream, the control room) checks one without a bus round
trip, and answers a wrong token the same way whether or not the id it names exists.

A *media grant* stands in for an operator's token where a browser page must start a WebRTC
session (the control room's multiview over WHEP, the director's microphone over WHIP) but holds
only a session cookie: the control service, which has checked the operator, signs
`g1.<operator>.<expiry>.<mac>` (HMAC-SHA256 with the platform's `BAYCAST_MEDIA_GRANT_SECRET`);
ingest and distribution, which share the secret, take it as that operator's token until it
expires (a minute) and only while the operator is neither revoked nor rotated since it was made.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Protocol, TypeVar

from services.common.bus import Bus
from services.common.gen.baycast.v1 import ingest_pb2, operators_pb2
from services.common.kv_mirror import KvMirror
from services.common.telemetry import register_secret

STATIONS_BUCKET = "stations"
OPERATORS_BUCKET = "operators"
TOKEN_BYTES = 32
SALT_BYTES = 16
SRT_PASSPHRASE_CHARS = 32
# Station and operator ids: used in subjects, URLs, handles and source ids.
PRINCIPAL_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
GRANT_PREFIX = "g1"
GRANT_LIFETIME_S = 60.0
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
    passphrase = base64.urlsafe_b64encode(digest).decode()[:SRT_PASSPHRASE_CHARS]
    register_secret(passphrase)  # masked in every log line that would show it
    return passphrase


def _grant_mac(secret: str, operator: str, expires_us: int, salt: str) -> str:
    message = f"{GRANT_PREFIX}.{operator}.{expires_us}.{salt}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def media_grant(
    secret: str, operator: operators_pb2.Operator, lifetime_s: float = GRANT_LIFETIME_S
) -> str:
    """A short-lived stand-in for `operator`'s token (see the module's docstring).

    Bound to the operator's current token salt, so rotating or revoking the token voids it."""
    if not secret:
        raise ValueError("no media grant secret")
    expires_us = time.time_ns() // 1000 + int(lifetime_s * 1_000_000)
    mac = _grant_mac(secret, operator.id, expires_us, operator.token_salt)
    return f"{GRANT_PREFIX}.{operator.id}.{expires_us}.{mac}"


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
        *,
        grant_secret: str = "",
    ) -> None:
        self.stations = stations
        self.operators = operators
        self.grant_secret = grant_secret

    @classmethod
    async def open(cls, bus: Bus, *, grant_secret: str = "") -> CredentialBook:
        stations = await KvMirror.open(bus, STATIONS_BUCKET, ingest_pb2.Station)
        operators = await KvMirror.open(bus, OPERATORS_BUCKET, operators_pb2.Operator)
        return cls(stations, operators, grant_secret=grant_secret)

    async def close(self) -> None:
        await self.stations.close()
        await self.operators.close()

    def station(self, station_id: str) -> ingest_pb2.Station | None:
        """The station, unless unknown or revoked."""
        station = self.stations.get(station_id)
        return station if station is not None and not station.revoked else None

    def operator(self, operator_id: str) -> operators_pb2.Operator | None:
        """The operator, unless unknown or revoked."""
        operator = self.operators.get(operator_id)
        return operator if operator is not None and not operator.revoked else None

    def identify(self, token: str) -> Principal | None:
        """Whose token this is (a current, unrevoked one), or None.

        Every record is checked, so the answer takes as long for a wrong token as for a right one
        and says nothing about which ids exist.
        """
        found: Principal | None = None
        if not token:
            return None
        if token.startswith(GRANT_PREFIX + "."):
            return self._granted(token)
        for station in self.stations.values():
            if token_matches(station, token):
                found = Principal("station", station.id, station.name)
        for operator in self.operators.values():
            if token_matches(operator, token):
                found = Principal("operator", operator.id, operator.name, operator.role)
        return found

    def _granted(self, grant: str) -> Principal | None:
        """The operator a media grant stands for, if it is genuine, current and unexpired."""
        parts = grant.split(".")
        if not self.grant_secret or len(parts) != 4 or not parts[2].isdigit():
            return None
        _prefix, operator_id, expires, mac = parts
        operator = self.operator(operator_id)
        if operator is None or int(expires) < time.time_ns() // 1000:
            return None
        expected = _grant_mac(self.grant_secret, operator_id, int(expires), operator.token_salt)
        if not hmac.compare_digest(expected, mac):
            return None
        return Principal("operator", operator.id, operator.name, operator.role)
