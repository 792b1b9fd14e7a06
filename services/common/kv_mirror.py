"""A key-value bucket mirrored in memory, kept current by a watch.

For state read often and written rarely by another service: stations and operators (token
checks), productions (the exchange policy). `open()` returns once the mirror holds the bucket as
it was; a watch then applies each change as it happens, and a full re-read every `resync_s`
repairs what a watch lost while NATS was away (an ordered consumer may not survive a server
restart). Reads are plain dict lookups, never a bus round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import nats.errors
import structlog
from google.protobuf.message import Message
from nats.js.kv import KeyValue

from services.common import errors
from services.common.bus import Bus, KvBucket, decode
from services.common.tasks import cancel_and_wait

M = TypeVar("M", bound=Message)
RESYNC_S = 30.0
WATCH_RETRY_S = 1.0

log = structlog.get_logger("kv_mirror")


class KvMirror(Generic[M]):
    def __init__(self, bucket: KvBucket[M], *, resync_s: float = RESYNC_S) -> None:
        self.bucket = bucket
        self.resync_s = resync_s
        self._values: dict[str, M] = {}
        self._revisions: dict[str, int] = {}
        self._listeners: list[Callable[[str, M | None], None]] = []
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, bus: Bus, bucket: str, message_type: type[M], *, resync_s: float = RESYNC_S
    ) -> KvMirror[M]:
        mirror = cls(await bus.kv(bucket, message_type), resync_s=resync_s)
        await mirror.start()
        return mirror

    async def start(self) -> None:
        await self.resync()
        self._task = asyncio.create_task(self._follow(), name=f"mirror-{self.bucket.store._name}")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    def on_change(self, listener: Callable[[str, M | None], None]) -> None:
        """Call `listener(key, value)` after each change (value None: deleted)."""
        self._listeners.append(listener)

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> M | None:
        return self._values.get(key)

    def values(self) -> Iterator[M]:
        return iter(list(self._values.values()))

    def items(self) -> dict[str, M]:
        return dict(self._values)

    def __len__(self) -> int:
        return len(self._values)

    # -- keeping it current ------------------------------------------------------------------

    def note(self, key: str, value: M | None, revision: int) -> None:
        """A write this process just made (`revision` from the put): readers see it at once,
        before the watch brings it back (which then changes nothing)."""
        self._apply(key, value, revision)

    def _apply(self, key: str, value: M | None, revision: int) -> None:
        if revision and revision < self._revisions.get(key, 0):
            return  # an older write arriving after a newer one (a resync raced the watch)
        self._revisions[key] = revision
        before = self._values.get(key)
        if value is None:
            if self._values.pop(key, None) is None:
                return
        else:
            if before == value:
                return
            self._values[key] = value
        for listener in self._listeners:
            try:
                listener(key, value)
            except Exception:
                log.exception("mirror_listener_failed", key=key)

    async def resync(self) -> None:
        """Read the whole bucket and make the mirror match it."""
        keys = await self.bucket.keys()
        seen: set[str] = set()
        for key in keys:
            entry = await self.bucket.get(key)
            if entry is not None:
                seen.add(key)
                self._apply(key, entry.value, entry.revision)
        for key in set(self._values) - seen:
            self._apply(key, None, 0)

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        next_resync = loop.time() + self.resync_s
        store: KeyValue = self.bucket.store
        while True:
            watcher = None
            try:
                # New values only: the resync above (or below) has the current ones.
                watcher = await store.watchall(include_history=False)
                while True:
                    timeout = max(0.1, next_resync - loop.time())
                    try:
                        entry = await watcher.updates(timeout=timeout)
                    except nats.errors.TimeoutError:
                        entry = None
                    if loop.time() >= next_resync:
                        await self.resync()
                        next_resync = loop.time() + self.resync_s
                    if entry is None:
                        continue
                    if entry.operation is not None or entry.value is None:
                        self._apply(entry.key, None, entry.revision or 0)
                    else:
                        try:
                            value = decode(entry.value, self.bucket.message_type)
                        except errors.InvalidArgument:
                            log.warning("mirror_value_malformed", key=entry.key)
                            continue
                        self._apply(entry.key, value, entry.revision or 0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away: try again, re-reading everything when back
                log.debug("mirror_watch_broken", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(WATCH_RETRY_S)
                next_resync = loop.time()
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()
