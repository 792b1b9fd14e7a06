"""Who runs which production: a lease per production in the key-value bucket `mixer-leases`.

Taken with compare-and-swap (create, or update at the revision we read), renewed by the owner
at the revision it last wrote, and up for grabs once expired. See docs/adr/0004.
"""

from __future__ import annotations

import contextlib

import nats.js.errors

from services.common.bus import Bus, KvBucket, encode
from services.common.gen.baycast.v1 import mixer_pb2
from services.common.media import now_us

BUCKET = "mixer-leases"


class LeaseKeeper:
    def __init__(
        self, bucket: KvBucket[mixer_pb2.ProductionLease], instance: str, lease_seconds: float
    ) -> None:
        self.bucket = bucket
        self.instance = instance
        self.lease_us = int(lease_seconds * 1_000_000)

    @classmethod
    async def open(cls, bus: Bus, instance: str, lease_seconds: float) -> LeaseKeeper:
        return cls(await bus.kv(BUCKET, mixer_pb2.ProductionLease), instance, lease_seconds)

    def _lease(self, acquired_us: int = 0) -> bytes:
        now = now_us()
        return encode(
            mixer_pb2.ProductionLease(
                owner=self.instance, expires_us=now + self.lease_us, acquired_us=acquired_us or now
            )
        )

    async def acquire(self, prod_id: str) -> int | None:
        """Take the lease if nobody holds it, it expired, or it is ours from a past life.

        Returns the revision written (keep it to renew), or None if another instance holds it.
        """
        entry = await self.bucket.get(prod_id)
        try:
            if entry is None:
                return await self.bucket.store.create(prod_id, self._lease())
            lease = entry.value
            if lease.owner == self.instance or lease.expires_us < now_us():
                return await self.bucket.store.update(prod_id, self._lease(), last=entry.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None
        return None

    async def renew(self, prod_id: str, revision: int) -> int | None:
        """Extend our lease; None if it was taken from us (then stop running the production)."""
        try:
            return await self.bucket.store.update(prod_id, self._lease(), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None

    async def release(self, prod_id: str, revision: int) -> None:
        with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
            await self.bucket.store.delete(prod_id, last=revision)

    async def owners(self) -> dict[str, str]:
        now = now_us()
        return {k: v.owner for k, v in (await self.bucket.items()).items() if v.expires_us > now}
