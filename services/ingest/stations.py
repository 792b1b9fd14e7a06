"""Stations: who may contribute, and the check of their bearer tokens.

The `stations` bucket keeps, per station, a random salt and `sha256(salt || token)`; the token
itself exists only in the reply to `add` or `rotate`. A leaked bucket does not let anyone publish:
tokens are 256 random bits, so the hash cannot be brute-forced.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable

from services.common import errors
from services.common.bus import KvBucket
from services.common.gen.baycast.v1 import ingest_pb2
from services.common.media import now_us
from services.ingest import metrics

BUCKET = "stations"
STATION_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
MAX_NAME_CHARS = 64
TOKEN_BYTES = 32
SALT_BYTES = 16


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(salt: str, token: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + token.encode()).hexdigest()


def with_new_token(station: ingest_pb2.Station) -> tuple[ingest_pb2.Station, str]:
    """A copy of `station` holding the hash of a fresh token, and that token."""
    token = new_token()
    salt = secrets.token_hex(SALT_BYTES)
    out = ingest_pb2.Station()
    out.CopyFrom(station)
    out.token_salt = salt
    out.token_sha256 = token_hash(salt, token)
    return out, token


def token_matches(station: ingest_pb2.Station, token: str) -> bool:
    if station.revoked or not station.token_salt or not token:
        return False
    return hmac.compare_digest(token_hash(station.token_salt, token), station.token_sha256)


def check_station_id(station_id: str, field: str = "id") -> str:
    if not STATION_ID.match(station_id):
        raise errors.InvalidArgument(
            "a station id is 1-32 characters of a-z, 0-9 and '-', not starting or ending with '-'",
            field=field,
        )
    return station_id


class StationRegistry:
    """Station commands over the `stations` bucket, and token checks for the contribution side."""

    def __init__(
        self, bucket: KvBucket[ingest_pb2.Station], whip_base_url: Callable[[], str]
    ) -> None:
        self.bucket = bucket
        self.whip_base_url = whip_base_url

    def info(self, station: ingest_pb2.Station) -> ingest_pb2.StationInfo:
        return ingest_pb2.StationInfo(
            id=station.id,
            name=station.name,
            whip_url=f"{self.whip_base_url()}/whip/{station.id}",
            revoked=station.revoked,
            created_at_us=station.created_at_us,
            rotated_at_us=station.rotated_at_us,
        )

    async def get(self, station_id: str) -> ingest_pb2.Station | None:
        if not STATION_ID.match(station_id):
            return None
        entry = await self.bucket.get(station_id)
        return entry.value if entry else None

    async def authenticate(self, station_id: str, token: str) -> ingest_pb2.Station:
        """The station if `token` is its current token; NotFound or Unauthenticated otherwise."""
        station = await self.get(station_id)
        if station is None:
            raise errors.NotFound(f"no station {station_id!r}")
        if not token_matches(station, token):
            raise errors.Unauthenticated("missing, wrong or revoked token")
        return station

    async def handle(self, command: ingest_pb2.StationCommand) -> ingest_pb2.StationReply:
        verb = command.WhichOneof("command")
        if verb is None:
            raise errors.InvalidArgument("one of add, list, revoke, rotate, show is required")
        metrics.STATION_COMMANDS.labels(verb).inc()
        if verb == "add":
            return await self.add(command.add)
        if verb == "list":
            stations = await self.bucket.items()
            return ingest_pb2.StationReply(
                stations=[self.info(s) for _, s in sorted(stations.items())]
            )
        ref: ingest_pb2.StationRef = getattr(command, verb)
        check_station_id(ref.id, f"{verb}.id")
        if verb == "show":
            station = await self.get(ref.id)
            if station is None:
                raise errors.NotFound(f"no station {ref.id!r}", field=f"{verb}.id")
            return ingest_pb2.StationReply(stations=[self.info(station)])
        if verb == "revoke":
            return await self.revoke(ref.id)
        return await self.rotate(ref.id)

    async def add(self, add: ingest_pb2.AddStation) -> ingest_pb2.StationReply:
        check_station_id(add.id, "add.id")
        name = add.name.strip() or add.id
        if len(name) > MAX_NAME_CHARS or any(c < " " for c in name):
            raise errors.InvalidArgument(
                f"a name is at most {MAX_NAME_CHARS} printable characters", field="add.name"
            )
        now = now_us()
        station, token = with_new_token(
            ingest_pb2.Station(id=add.id, name=name, created_at_us=now, rotated_at_us=now)
        )
        try:
            await self.bucket.create(add.id, station)
        except errors.AlreadyExists:
            raise errors.AlreadyExists(f"station {add.id!r} exists", field="add.id") from None
        return ingest_pb2.StationReply(stations=[self.info(station)], token=token)

    async def rotate(self, station_id: str) -> ingest_pb2.StationReply:
        """A new token; the old one stops working at once. Rotating a revoked station revives it."""
        tokens: list[str] = []

        def change(current: ingest_pb2.Station | None) -> ingest_pb2.Station:
            if current is None:
                raise errors.NotFound(f"no station {station_id!r}", field="rotate.id")
            station, token = with_new_token(current)
            station.revoked = False
            station.rotated_at_us = now_us()
            tokens[:] = [token]
            return station

        station = await self.bucket.update(station_id, change)
        return ingest_pb2.StationReply(stations=[self.info(station)], token=tokens[0])

    async def revoke(self, station_id: str) -> ingest_pb2.StationReply:
        """The token stops working; live sessions of the station are ended by the caller."""

        def change(current: ingest_pb2.Station | None) -> ingest_pb2.Station:
            if current is None:
                raise errors.NotFound(f"no station {station_id!r}", field="revoke.id")
            station = ingest_pb2.Station()
            station.CopyFrom(current)
            station.revoked = True
            station.token_salt = ""
            station.token_sha256 = ""
            return station

        station = await self.bucket.update(station_id, change)
        return ingest_pb2.StationReply(stations=[self.info(station)])
