"""Commands applied once across replicas: the shared record of command ids and their replies.

`baycast ctl`, the control room and the rundown retry a command through an outage with the same
`Baycast-Command-Id`. When the command's subject is served by a queue group (distribution,
graphics, the control service, productions' admin), the retry may reach another replica than the
first attempt did: a replica's own reply cache cannot know it was applied. This record is a
JetStream key-value bucket, `command-log`, one key per (subject, command id), kept for
`TTL_S`:

* the replica that receives a command first *claims* its id (a create: only one replica can),
  applies it, and stores the reply;
* a replica that finds the id claimed and finished sends that reply again, unapplied;
* a replica that finds it claimed but unfinished waits for the reply (the first replica is still
  applying it); when the claim is older than `STALE_CLAIM_S` (that replica died while applying
  it) it takes the claim over and applies the command itself.

When the bucket cannot be reached within `REACH_S` (no JetStream, a leader election) the command
is answered UNAVAILABLE and not applied: applied unrecorded, its retry could reach another
replica and be applied twice. The client retries (as `baycast ctl` does) until the record is
back, within seconds of an election. A reply that cannot be recorded at once is recorded aside,
retried for `STALE_CLAIM_S`, while the reply itself goes out. The bus consults the record only
for queue groups (`Bus.shared_replies`); a subject one instance serves needs none, and the
mixer's switching commands go to their production's one owner.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

import nats.js.errors
import structlog

from services.common import errors
from services.common.bus import Bus, KvBucket, encode
from services.common.gen.baycast.v1 import control_pb2

BUCKET = "command-log"
TTL_S = 600.0
STALE_CLAIM_S = 10.0
REACH_S = 2.0
WAIT_POLL_S = 0.05
STORE_RETRY_S = 0.25
PENDING = "pending"
DONE = "done"

log = structlog.get_logger("command_log")


def command_key(subj: str, command_id: str) -> str:
    """A key for a command: the id is the client's, so it is hashed (any bytes may come in a
    header) together with the subject (the same id on two subjects is two commands)."""
    return hashlib.sha256(f"{subj}\n{command_id}".encode()).hexdigest()


class CommandLog:
    """`Bus.shared_replies` over the `command-log` bucket, opened on first use."""

    def __init__(self, bus: Bus, instance: str) -> None:
        self.bus = bus
        self.instance = instance
        self._bucket: KvBucket[control_pb2.CommandRecord] | None = None
        self._claims: dict[str, int] = {}  # key -> revision of our pending claim
        self._storing: set[asyncio.Task[None]] = set()  # replies being recorded

    async def _open(self) -> KvBucket[control_pb2.CommandRecord]:
        if self._bucket is None:
            self._bucket = await self.bus.kv(BUCKET, control_pb2.CommandRecord, max_age_s=TTL_S)
        return self._bucket

    async def begin(self, subj: str, command_id: str) -> tuple[bytes, dict[str, str]] | None:
        key = command_key(subj, command_id)
        try:
            return await asyncio.wait_for(self._claim(key), STALE_CLAIM_S + REACH_S)
        except Exception as exc:
            # Applying it unrecorded could apply it twice (its retry may reach another replica):
            # the client retries instead, once the record is back (a leader elected).
            self._bucket = None  # opened again next time (the stream may have been lost)
            log.warning("command_log_unreachable", error=str(exc) or type(exc).__name__)
            raise errors.Unavailable(
                f"the command log is unreachable ({type(exc).__name__}): retry"
            ) from None

    async def end(
        self, subj: str, command_id: str, data: bytes, headers: dict[str, str], *, keep: bool
    ) -> None:
        key = command_key(subj, command_id)
        revision = self._claims.pop(key, None)
        bucket = self._bucket
        if revision is None or bucket is None:
            return
        if not keep:
            try:
                await asyncio.wait_for(bucket.store.delete(key, last=revision), REACH_S)
            except Exception as exc:
                log.warning("command_log_unreachable", error=str(exc) or type(exc).__name__)
            return
        record = control_pb2.CommandRecord(
            status=DONE,
            instance=self.instance,
            time_us=time.time_ns() // 1000,
            reply=data,
            headers=headers,
        )
        # Stored aside, retried while the record is unreachable (a leader being elected): the
        # reply goes out now, and a retry reaching another replica waits for this record
        # instead of taking the claim over as a dead replica's.
        task = asyncio.create_task(self._store(bucket, key, revision, encode(record), subj))
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)

    async def _store(
        self,
        bucket: KvBucket[control_pb2.CommandRecord],
        key: str,
        revision: int,
        record: bytes,
        subj: str,
    ) -> None:
        deadline = time.monotonic() + STALE_CLAIM_S
        while True:
            try:
                await asyncio.wait_for(bucket.store.update(key, record, last=revision), REACH_S)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                # Taken over meanwhile (this replica was too slow): the other one's reply stands.
                log.warning("command_claim_lost", subject=subj)
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    log.warning("command_not_recorded", subject=subj, error=repr(exc))
                    return
                await asyncio.sleep(STORE_RETRY_S)

    async def _claim(self, key: str) -> tuple[bytes, dict[str, str]] | None:
        """Claim `key` (None: apply the command), or the reply stored for it, waiting while
        another replica applies it."""
        bucket = await asyncio.wait_for(self._open(), REACH_S)
        record = control_pb2.CommandRecord(
            status=PENDING, instance=self.instance, time_us=time.time_ns() // 1000
        )
        while True:
            try:
                self._claims[key] = await asyncio.wait_for(
                    bucket.store.create(key, encode(record)), REACH_S
                )
                return None
            except nats.js.errors.KeyWrongLastSequenceError:
                pass
            entry = await asyncio.wait_for(bucket.get(key), REACH_S)
            if entry is None:
                continue  # expired or deleted between the two calls: claim it again
            found = entry.value
            if found.status == DONE:
                return found.reply, dict(found.headers)
            if time.time() - found.time_us / 1e6 > STALE_CLAIM_S:
                # Its claimant died while applying it: take the claim over.
                try:
                    self._claims[key] = await asyncio.wait_for(
                        bucket.store.update(key, encode(record), last=entry.revision), REACH_S
                    )
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue
                log.warning("command_claim_taken_over", claimed_by=found.instance)
                return None
            await asyncio.sleep(WAIT_POLL_S)
