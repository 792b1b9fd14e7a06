"""Where live streams are: the directory of stream handles.

A producer announces each handle it serves (`source/gz`, `prod/qihang/program`, `gfx/qihang`) in
the JetStream key-value bucket `handles`, and withdraws it when the stream ends. A consumer looks
a handle up each time it (re)subscribes, so it follows a producer that restarted elsewhere.

Handle names: `source/<source>` (ingest), `prod/<prod>/program|clean|preview|multiview` and
`prod/<prod>/mixminus/<source>` (mixer), `gfx/<prod>` (graphics). A handle's key in the bucket
has dots for slashes (`prod.qihang.program`), so that the bus lets each producer write only its
own kind (`$KV.handles.prod.>` for the mixer: nats_accounts.py). Ids never contain a dot.
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


def key_prefix(kind: str) -> str:
    """The first token of the keys of one kind of handle (`source`, `prod`, `gfx`)."""
    return kind


def handle_key(name: str) -> str:
    """`prod/qihang/program` -> `prod.qihang.program`."""
    return name.replace("/", ".")


def key_name(key: str) -> str:
    return key.replace(".", "/")


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
        await (await self.bucket()).put(handle_key(name), handle)
        return handle

    async def withdraw(self, name: str, endpoint: str) -> None:
        """Remove `name`, unless another producer has announced it since (compare-and-delete:
        an owner that lost its unit while paused never removes its successor's announcement)."""
        bucket = await self.bucket()
        key = handle_key(name)
        entry = await bucket.get(key)
        if entry is not None and entry.value.endpoint == endpoint:
            await bucket.delete(key, last=entry.revision)

    async def lookup(self, name: str) -> str | None:
        """The endpoint serving `name`, or None if nobody announces it; raises if the bus does."""
        entry = await (await self.bucket()).get(handle_key(name))
        return entry.value.endpoint if entry else None

    async def resolve(self, name: str) -> str | None:
        """The endpoint serving `name`, or None if nobody announces it (or the bus is down)."""
        try:
            return await self.lookup(name)
        except Exception:  # the bus is down: the caller retries
            return None

    async def names(self) -> list[str]:
        """Every announced handle's name."""
        return [key_name(k) for k in await (await self.bucket()).keys()]

    def frames(
        self,
        channels: ChannelCache,
        name: str,
        rendition: media_pb2.Rendition,
        *,
        subscriber: str = "",
        pull: bool = False,
        pull_sound: bool = False,
        compression: media_pb2.Compression | None = None,
    ) -> AsyncIterator[media_pb2.MediaFrame]:
        """Frames of handle `name`, looked up again on every resubscription (`pull`,
        `pull_sound` and `compression`: see `media.subscribe`)."""
        return subscribe(
            channels,
            lambda: self.resolve(name),
            name,
            rendition,
            subscriber=subscriber,
            pull=pull,
            pull_sound=pull_sound,
            compression=compression,
        )
