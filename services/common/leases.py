"""One owner for every stateful unit: a lease per unit in a key-value bucket (docs/adr/0004).

A unit is what exactly one instance of a service may run at a time: a mixer production,
distribution's outputs of a production, a production's graphics scene. Leases are taken with
compare-and-swap (create, or update at the revision read), renewed by the owner at the revision it
last wrote, and up for grabs once expired. An instance that finds a lease naming itself (restarted
in place under the same name) takes it back at once.
"""

from __future__ import annotations

import contextlib

import nats.js.errors

from services.common.bus import Bus, KvBucket, encode
from services.common.gen.baycast.v1 import control_pb2
from services.common.media import now_us


class Leases:
    def __init__(
        self, bucket: KvBucket[control_pb2.Lease], instance: str, lease_seconds: float
    ) -> None:
        self.bucket = bucket
        self.instance = instance
        self.lease_us = int(lease_seconds * 1_000_000)

    @classmethod
    async def open(cls, bus: Bus, bucket: str, instance: str, lease_seconds: float) -> Leases:
        return cls(await bus.kv(bucket, control_pb2.Lease), instance, lease_seconds)

    def _lease(self, acquired_us: int = 0) -> bytes:
        now = now_us()
        return encode(
            control_pb2.Lease(
                owner=self.instance, expires_us=now + self.lease_us, acquired_us=acquired_us or now
            )
        )

    async def acquire(self, unit: str) -> int | None:
        """Take the lease if nobody holds it, it expired, or it is ours from a past life.

        Returns the revision written (keep it to renew), or None if another instance holds it.
        """
        entry = await self.bucket.get(unit)
        try:
            if entry is None:
                return await self.bucket.store.create(unit, self._lease())
            lease = entry.value
            if lease.owner == self.instance or lease.expires_us < now_us():
                return await self.bucket.store.update(unit, self._lease(), last=entry.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None
        return None

    async def renew(self, unit: str, revision: int) -> int | None:
        """Extend our lease; None if it was taken from us (then stop running the unit)."""
        try:
            return await self.bucket.store.update(unit, self._lease(), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None

    async def release(self, unit: str, revision: int) -> None:
        """Delete our lease; nothing when it moved on meanwhile (the server answers a delete at
        a stale revision with a bad request, not a wrong-last-sequence error)."""
        with contextlib.suppress(
            nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError
        ):
            await self.bucket.store.delete(unit, last=revision)

    async def owner(self, unit: str) -> str:
        """The instance holding an unexpired lease on `unit` ("" when none does)."""
        entry = await self.bucket.get(unit)
        if entry is None or entry.value.expires_us <= now_us():
            return ""
        return entry.value.owner

    async def owners(self) -> dict[str, str]:
        now = now_us()
        return {k: v.owner for k, v in (await self.bucket.items()).items() if v.expires_us > now}
