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
is applied as before (each replica's own cache still answers a retry that comes back to it): a
shared record must never stop the show. The bus consults the record only for queue groups
(`Bus.shared_replies`); a subject one instance serves needs none.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

import nats.js.errors
import structlog

from services.common.bus import Bus, KvBucket, encode
from services.common.gen.baycast.v1 import control_pb2

BUCKET = "command-log"
TTL_S = 600.0
STALE_CLAIM_S = 10.0
REACH_S = 2.0
WAIT_POLL_S = 0.05
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

    async def _open(self) -> KvBucket[control_pb2.CommandRecord]:
        if self._bucket is None:
            self._bucket = await self.bus.kv(BUCKET, control_pb2.CommandRecord, max_age_s=TTL_S)
        return self._bucket

    async def begin(self, subj: str, command_id: str) -> tuple[bytes, dict[str, str]] | None:
        key = command_key(subj, command_id)
        try:
            return await asyncio.wait_for(self._claim(key), STALE_CLAIM_S + REACH_S)
        except Exception as exc:
            log.warning("command_log_unreachable", error=str(exc) or type(exc).__name__)
            return None

    async def end(
        self, subj: str, command_id: str, data: bytes, headers: dict[str, str], *, keep: bool
    ) -> None:
        key = command_key(subj, command_id)
        revision = self._claims.pop(key, None)
        if revision is None or self._bucket is None:
            return  # applied without a claim (the record was out of reach)
        if not keep:
            try:
                await asyncio.wait_for(self._bucket.store.delete(key, last=revision), REACH_S)
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
        try:
            await asyncio.wait_for(
                self._bucket.store.update(key, encode(record), last=revision), REACH_S
            )
        except nats.js.errors.KeyWrongLastSequenceError:
            # Taken over meanwhile (this replica was too slow): the other one's reply stands.
            log.warning("command_claim_lost", subject=subj)
        except Exception as exc:
            log.warning("command_log_unreachable", error=str(exc) or type(exc).__name__)

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
