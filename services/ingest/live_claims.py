"""Live claims: a source is live on one ingest instance at a time, across all of them.

Every live source (a station's contribution over WHIP, RTMP or SRT, a director's talkback)
holds a claim: the key `<source>` of the JetStream key-value bucket `ingest-live`, whose value
is a `Lease` naming the ingest instance. A contribution starts only once its claim is taken, so
a second one of the same source is refused whichever ingest pod it reaches.

    take     with compare-and-swap (create, or update at the revision read), when nobody holds
             the key, its lease has expired, or it names this very instance from a past life
             (restarted in place under the same name) and no session here holds it
    refresh  every `refresh_s`, at the revision last written; entries of the bucket expire
             `ttl_s` after they were written (as does the lease in the value), so the claims of
             an instance that died lapse within `ttl_s` and its stations can publish elsewhere
    release  deleted at its revision when the contribution ends

A claim is reserved in this process before any await, so two protocols admitting one station
at once cannot both get it. When the bucket cannot be reached (JetStream down, NATS away) a
contribution is not refused for that: its claim is held in this process only, as a lone ingest
does, with a warning, and written to the bucket by the first refresh that reaches it (a claim
then found held elsewhere is logged; both contributions go on: the show does not stop).
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
import structlog

from services.common import errors
from services.common.bus import Bus, KvBucket, encode
from services.common.gen.baycast.v1 import control_pb2
from services.common.media import now_us
from services.ingest import metrics

BUCKET = "ingest-live"
# A bucket slower than this is taken for unreachable: the contribution is admitted, not stalled.
CALL_TIMEOUT_S = 2.0
TAKE_ATTEMPTS = 3  # compare-and-swap rounds lost to other writers before giving up
UNREACHABLE = (nats.errors.Error, TimeoutError, errors.Unavailable)

log = structlog.get_logger("ingest.live_claims")


class Claim(enum.Enum):
    """The outcome of `LiveClaims.claim`; a refusal's value completes "station X is ..."."""

    TAKEN = "taken"
    LIVE_HERE = "already live"
    LIVE_ELSEWHERE = "already live on another ingest instance"


@dataclass
class _Held:
    revision: int = 0  # of the entry last written; 0: not in the bucket (held here only)
    acquired_us: int = field(default_factory=now_us)
    taking: bool = True  # `claim` is still at it: refreshes leave it alone
    contested: bool = False  # a refresh found it held elsewhere (logged once)


class LiveClaims:
    """The claims of one ingest instance; `instance` is the name written into them."""

    def __init__(self, bus: Bus, instance: str, *, ttl_s: float, refresh_s: float) -> None:
        self.bus = bus
        self.instance = instance
        self.ttl_s = ttl_s
        self.refresh_s = refresh_s
        self.held: dict[str, _Held] = {}
        self._bucket: KvBucket[control_pb2.Lease] | None = None
        self._reachable = True
        # A release never crosses a refresh in flight: its delete would miss the revision that
        # refresh writes, and the claim would linger. (A claim needs no turn: compare-and-swap.)
        self._writing = asyncio.Lock()

    async def open(self) -> None:
        """Open the bucket, creating it; when it cannot be reached, `run` tries again."""
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                self._bucket = await self.bus.kv(BUCKET, control_pb2.Lease, max_age_s=self.ttl_s)
        except UNREACHABLE as exc:
            self._set_reachable(False, exc)

    async def claim(self, source_id: str) -> Claim:
        """Claim `source_id` for a contribution to this instance (then `release` it)."""
        if source_id in self.held:
            return Claim.LIVE_HERE
        held = self.held[source_id] = _Held()
        try:
            owner = await self._write(source_id, held)
        except BaseException:
            self.held.pop(source_id, None)
            raise
        held.taking = False
        if owner is None:
            metrics.LIVE_CLAIMS_UNCHECKED.inc()
            log.warning(
                "live_claim_unchecked",
                source=source_id,
                detail="the live-claims bucket is unreachable: only this instance was checked",
            )
        elif owner:
            self.held.pop(source_id, None)
            log.info("live_claim_refused", source=source_id, owner=owner)
            return Claim.LIVE_ELSEWHERE
        return Claim.TAKEN

    async def release(self, source_id: str) -> None:
        """Give the claim up (its contribution ended, or never started)."""
        held = self.held.pop(source_id, None)
        if held is None:
            return
        try:
            async with self._writing, asyncio.timeout(CALL_TIMEOUT_S):
                # Not when claimed again meanwhile: the entry is that new claim's now.
                if held.revision and self._bucket is not None and source_id not in self.held:
                    await self._bucket.store.delete(source_id, last=held.revision)
        except UNREACHABLE as exc:
            # Taken over meanwhile (another revision), or unreachable: it lapses within ttl_s.
            log.info("live_claim_not_deleted", source=source_id, error=repr(exc))

    async def run(self) -> None:
        """Refresh every claim held here each `refresh_s`, until cancelled."""
        while True:
            await asyncio.sleep(self.refresh_s)
            if self._bucket is None or not self._reachable:
                await self.open()  # again: a NATS that lost its state has lost the bucket too
            async with self._writing:
                claims = [(s, held) for s, held in self.held.items() if not held.taking]
                owners = await asyncio.gather(*(self._write(s, held) for s, held in claims))
            for (source_id, held), owner in zip(claims, owners, strict=True):
                if owner and not held.contested:  # both went live while the bucket was away
                    log.warning("live_claim_held_elsewhere", source=source_id, owner=owner)
                held.contested = bool(owner)

    async def _write(self, source_id: str, held: _Held) -> str | None:
        """Write our lease: "" when written, the owner of a live lease in the way, or None when
        the bucket cannot be reached."""
        if self._bucket is None or not self.bus.connected:
            self._set_reachable(False, "not connected" if self._bucket else "bucket not open")
            return None
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                owner = await self._take(self._bucket, source_id, held)
        except UNREACHABLE as exc:
            self._set_reachable(False, exc)
            return None
        self._set_reachable(True)
        return owner

    async def _take(self, bucket: KvBucket[control_pb2.Lease], source_id: str, held: _Held) -> str:
        lease = encode(
            control_pb2.Lease(
                owner=self.instance,
                expires_us=now_us() + int(self.ttl_s * 1_000_000),
                acquired_us=held.acquired_us,
            )
        )
        if held.revision:
            try:
                held.revision = await bucket.store.update(source_id, lease, last=held.revision)
                return ""
            except nats.js.errors.KeyWrongLastSequenceError:
                held.revision = 0  # it lapsed (a stalled refresh) or was taken: see below
        owner = ""
        for _ in range(TAKE_ATTEMPTS):
            entry = await bucket.get(source_id)
            try:
                if entry is None:
                    held.revision = await bucket.store.create(source_id, lease)
                    return ""
                owner = entry.value.owner
                if owner != self.instance and entry.value.expires_us > now_us():
                    return owner
                held.revision = await bucket.store.update(source_id, lease, last=entry.revision)
                return ""
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # written by someone else between our read and our write
        return owner or "another ingest instance"

    def _set_reachable(self, reachable: bool, why: object = None) -> None:
        """Log the bucket going away and coming back once each, not at every call."""
        if reachable and not self._reachable:
            log.info("live_claims_reachable")
        elif not reachable and self._reachable:
            log.warning("live_claims_unreachable", error=str(why) or repr(why))
        self._reachable = reachable
