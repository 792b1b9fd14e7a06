"""Stations: who may contribute, and the check of their bearer tokens.

The `stations` bucket keeps, per station, a random salt and `sha256(salt || token)`; the token
itself exists only in the reply to `add` or `rotate`. A leaked bucket does not let anyone publish:
tokens are 256 random bits, so the hash cannot be brute-forced.
"""

from __future__ import annotations

from collections.abc import Callable

from services.common import errors
from services.common.bus import KvBucket
from services.common.credentials import PRINCIPAL_ID, token_matches, with_new_token
from services.common.gen.baycast.v1 import ingest_pb2
from services.common.media import now_us
from services.common.tally_url import parse_tally_url
from services.ingest import metrics

BUCKET = "stations"
STATION_ID = PRINCIPAL_ID
MAX_NAME_CHARS = 64
# What a token for a station that does not exist is checked against (it matches no token).
UNKNOWN_STATION = ingest_pb2.Station(token_salt="00" * 16, token_sha256="")


def check_station_id(station_id: str, field: str = "id") -> str:
    if not STATION_ID.match(station_id):
        raise errors.InvalidArgument(
            "a station id is 1-32 characters of a-z, 0-9 and '-', not starting or ending with '-'",
            field=field,
        )
    return station_id


def check_name(name: str, field: str) -> str:
    if not name or len(name) > MAX_NAME_CHARS or any(c < " " for c in name):
        raise errors.InvalidArgument(
            f"a name is 1 to {MAX_NAME_CHARS} printable characters", field=field
        )
    return name


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
            tally_url=station.tally_url,
            page_url=f"{self.whip_base_url()}/station/{station.id}",
        )

    async def get(self, station_id: str) -> ingest_pb2.Station | None:
        if not STATION_ID.match(station_id):
            return None
        entry = await self.bucket.get(station_id)
        return entry.value if entry else None

    async def authenticate(self, station_id: str, token: str) -> ingest_pb2.Station:
        """The station if `token` is its current token; Unauthenticated otherwise, the same for
        a station that does not exist (its token checked against a stand-in, so the answer
        takes as long), so a caller without a token learns nothing of which stations exist."""
        station = await self.get(station_id)
        if station is None:
            token_matches(UNKNOWN_STATION, token)
            raise errors.Unauthenticated("missing, wrong or revoked token")
        if not token_matches(station, token):
            raise errors.Unauthenticated("missing, wrong or revoked token")
        return station

    async def handle(self, command: ingest_pb2.StationCommand) -> ingest_pb2.StationReply:
        verb = command.WhichOneof("command")
        if verb is None:
            raise errors.InvalidArgument("one of add, list, revoke, rotate, show, set is required")
        metrics.STATION_COMMANDS.labels(verb).inc()
        if verb == "add":
            return await self.add(command.add)
        if verb == "list":
            stations = await self.bucket.items()
            return ingest_pb2.StationReply(
                stations=[self.info(s) for _, s in sorted(stations.items())]
            )
        if verb == "set":
            return await self.set(command.set)
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
        name = check_name(add.name.strip() or add.id, "add.name")
        now = now_us()
        station, token = with_new_token(
            ingest_pb2.Station(id=add.id, name=name, created_at_us=now, rotated_at_us=now)
        )
        try:
            await self.bucket.create(add.id, station)
        except errors.AlreadyExists:
            raise errors.AlreadyExists(f"station {add.id!r} exists", field="add.id") from None
        return ingest_pb2.StationReply(stations=[self.info(station)], token=token)

    async def set(self, change: ingest_pb2.SetStation) -> ingest_pb2.StationReply:
        """New settings for a station; the fields left unset keep their values."""
        check_station_id(change.id, "set.id")
        name = check_name(change.name.strip(), "set.name") if change.HasField("name") else None
        if change.HasField("tally_url") and change.tally_url:
            parse_tally_url(change.tally_url, "set.tally_url")

        def apply(current: ingest_pb2.Station | None) -> ingest_pb2.Station:
            if current is None:
                raise errors.NotFound(f"no station {change.id!r}", field="set.id")
            station = ingest_pb2.Station()
            station.CopyFrom(current)
            if name is not None:
                station.name = name
            if change.HasField("tally_url"):
                station.tally_url = change.tally_url
            return station

        station = await self.bucket.update(change.id, apply)
        return ingest_pb2.StationReply(stations=[self.info(station)])

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
