"""The show's as-run log: every executed cue and every talkback, one `AsRunEntry` each.

Entries go to `prod.<prod>.asrun`, kept by the JetStream stream ASRUN for thirty days. The mixer
writes its rundown cues and talkback presses here, distribution the cues sent to stations and
their acknowledgements, the control room every command an operator gives; whoever reads the log
(`baycast ctl rundown asrun`, the control room) sees one ordered history of the show. Each writer
ensures the stream exists, so the log does not depend on which service started first.

Reading the newest N entries of one production without reading the whole stream: the stream
knows how many messages each subject holds; a consumer created at a sequence reports how many of
the production's messages lie at or after it, so a binary search over sequences finds where the
last N start (about 20 consumer look-ups for a million messages), and one consumer reads them.
"""

from __future__ import annotations

import contextlib

import nats.errors
import nats.js.errors
import structlog
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from services.common import errors
from services.common.bus import PREFIX, Bus, decode, encode, subject
from services.common.gen.baycast.v1 import rundown_pb2

ASRUN_STREAM = "ASRUN"
MAX_AGE_S = 30 * 86400
PROBE_INACTIVE_S = 5.0
FETCH_TIMEOUT_S = 2.0

log = structlog.get_logger("asrun")


async def ensure_asrun_stream(bus: Bus) -> None:
    js = bus.nc.jetstream()
    config = StreamConfig(
        name=ASRUN_STREAM,
        subjects=[PREFIX + "prod.*.asrun"],
        max_age=MAX_AGE_S,
        num_replicas=bus.replicas,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        # It exists with another configuration: bring it to this one, never lowering replicas.
        info = await js.stream_info(ASRUN_STREAM)
        config.num_replicas = max(info.config.num_replicas or 1, bus.replicas)
        await js.update_stream(config)
    except nats.js.errors.APIError as exc:
        raise errors.Unavailable(
            f"cannot create the stream {ASRUN_STREAM} with {bus.replicas} replica(s): "
            f"{exc.description}"
        ) from None


async def write_asrun(bus: Bus, entry: rundown_pb2.AsRunEntry, timeout: float = 2.0) -> bool:
    """Log `entry` and store it in the stream; whether it was stored. A failure to store costs
    the entry, never the command or the show (it is logged)."""
    log.info(
        "asrun",
        production=entry.production,
        segment=entry.segment,
        cue=entry.cue,
        detail=entry.detail,
        ok=entry.ok,
        error=entry.error,
        operator=entry.operator,
    )
    try:
        await bus.nc.jetstream().publish(
            subject("prod", entry.production, "asrun"), encode(entry), timeout=timeout
        )
    except Exception as exc:
        log.warning(
            "asrun_not_stored", production=entry.production, error=str(exc) or type(exc).__name__
        )
        return False
    return True


async def recent_asrun(bus: Bus, production: str, limit: int) -> list[rundown_pb2.AsRunEntry]:
    """The newest `limit` entries of `production`, oldest first."""
    js = bus.nc.jetstream()
    subj = subject("prod", production, "asrun")
    try:
        info = await js.stream_info(ASRUN_STREAM, subjects_filter=subj)
    except nats.js.errors.NotFoundError:
        return []
    count = (info.state.subjects or {}).get(subj, 0)
    if count == 0 or limit <= 0:
        return []
    first, last = info.state.first_seq, info.state.last_seq
    start = first if count <= limit else await _start_of_last(bus, subj, limit, first, last)
    return await _read(bus, subj, start, limit)


async def _pending_from(bus: Bus, subj: str, seq: int) -> int:
    """How many messages of `subj` the stream holds at sequence `seq` or later."""
    jsm = bus.nc.jetstream()
    info = await jsm.add_consumer(ASRUN_STREAM, _consumer(subj, seq))
    with contextlib.suppress(Exception):
        await jsm.delete_consumer(ASRUN_STREAM, info.name)
    return int(info.num_pending or 0)


async def _start_of_last(bus: Bus, subj: str, limit: int, low: int, high: int) -> int:
    """The largest sequence from which `limit` (or more) messages of `subj` remain."""
    while low < high:
        middle = (low + high + 1) // 2
        if await _pending_from(bus, subj, middle) >= limit:
            low = middle
        else:
            high = middle - 1
    return low


async def _read(bus: Bus, subj: str, start: int, limit: int) -> list[rundown_pb2.AsRunEntry]:
    js = bus.nc.jetstream()
    config = _consumer(subj, start)
    sub = await js.pull_subscribe(subj, stream=ASRUN_STREAM, config=config)
    entries: list[rundown_pb2.AsRunEntry] = []
    try:
        while len(entries) < limit:
            try:
                batch = await sub.fetch(min(256, limit - len(entries)), timeout=FETCH_TIMEOUT_S)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            for msg in batch:
                with contextlib.suppress(Exception):
                    entries.append(decode(msg.data, rundown_pb2.AsRunEntry))
            if batch and batch[-1].metadata.num_pending == 0:
                break
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await js.delete_consumer(ASRUN_STREAM, config.name or "")
    return entries[-limit:]


def _consumer(subj: str, start: int) -> ConsumerConfig:
    return ConsumerConfig(
        filter_subject=subj,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=PROBE_INACTIVE_S,
        mem_storage=True,
    )
