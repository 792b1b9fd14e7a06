"""Where live streams are: the directory of stream handles.

A producer announces each handle it serves (`source/gz`, `prod/qihang/program`, `gfx/qihang`) in
the JetStream key-value bucket `handles`, and withdraws it when the stream ends. A consumer looks
a handle up each time it (re)subscribes, so it follows a producer that restarted elsewhere.

Handle names: `source/<source>` (ingest), `prod/<prod>/program|clean|preview|multiview` and
`prod/<prod>/mixminus/<source>` (mixer), `gfx/<prod>` (graphics).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.common.bus import Bus, KvBucket
from services.common.gen.baycast.v1 import control_pb2, media_pb2
from services.common.media import subscribe
from services.common.rpc import ChannelCache

BUCKET = "handles"
# A director's microphone is an ingest source like a station's, named after the operator; no
# station id can take this form (station ids have no "_").
TALK_SOURCE_PREFIX = "talk_"


def talk_source_id(operator: str) -> str:
    """The source a director's microphone is, over WHIP: `talk_<operator>`."""
    return TALK_SOURCE_PREFIX + operator


class HandleDirectory:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._bucket: KvBucket[control_pb2.StreamHandle] | None = None

    async def bucket(self) -> KvBucket[control_pb2.StreamHandle]:
        if self._bucket is None:
            self._bucket = await self.bus.kv(BUCKET, control_pb2.StreamHandle)
        return self._bucket

    async def announce(self, name: str, endpoint: str) -> control_pb2.StreamHandle:
        handle = control_pb2.StreamHandle(name=name, endpoint=endpoint)
        await (await self.bucket()).put(name, handle)
        return handle

    async def withdraw(self, name: str, endpoint: str) -> None:
        """Remove `name`, unless another producer has announced it since (compare-and-delete:
        an owner that lost its unit while paused never removes its successor's announcement)."""
        bucket = await self.bucket()
        entry = await bucket.get(name)
        if entry is not None and entry.value.endpoint == endpoint:
            await bucket.delete(name, last=entry.revision)

    async def resolve(self, name: str) -> str | None:
        """The endpoint serving `name`, or None if nobody announces it."""
        try:
            entry = await (await self.bucket()).get(name)
        except Exception:  # the bus is down: the caller retries
            return None
        return entry.value.endpoint if entry else None

    def frames(
        self,
        channels: ChannelCache,
        name: str,
        rendition: media_pb2.Rendition,
        *,
        subscriber: str = "",
    ) -> AsyncIterator[media_pb2.MediaFrame]:
        """Frames of handle `name`, looked up again on every resubscription."""
        return subscribe(
            channels, lambda: self.resolve(name), name, rendition, subscriber=subscriber
        )
