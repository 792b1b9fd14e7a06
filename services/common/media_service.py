"""`Media.Subscribe`, served the same way by every producer: ingest's sources, the mixer's
outputs and graphics' layers.

A producer says only how to open a feed: from the SubscribeRequest, the subscriber's queue and
how to let it go (`Feed`), or a BaycastError that goes out as that error's gRPC status (a handle
that is not here is NOT_FOUND, a rendition out of bounds INVALID_ARGUMENT). The servicer streams
the queue, with a keepalive whenever it is quiet for the feed's interval, and lets the feed go
however the stream ends: the consumer went away, or the producer closed the queue. A stopping
service ends every stream before its gRPC server stops (`end_feeds`), so none is cut off mid-call
and none holds the stop up.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

import grpc
from prometheus_client import Counter

from services.common import errors
from services.common.gen.baycast.v1 import media_pb2, media_pb2_grpc
from services.common.media import KEEPALIVE_INTERVAL_S, DropOldestQueue, queue_stream

SENT_BYTES_HELP = (
    "Bytes of Media.Subscribe messages sent, by handle and kind (video, packet, audio, layer, ring,"
    " keepalive); a video frame by shared memory counts only its reference"
)


@dataclass
class Feed:
    """One subscriber's side of a producer."""

    queue: DropOldestQueue[media_pb2.MediaFrame]
    close: Callable[[], None]  # the producer forgets the subscriber
    keepalive_s: float = KEEPALIVE_INTERVAL_S


OpenFeed = Callable[[media_pb2.SubscribeRequest], Awaitable[Feed]]


class MediaService(media_pb2_grpc.MediaServicer):
    """`sent_bytes`: the producer's counter of what it sends, labelled handle and kind
    (`baycast_<service>_media_sent_bytes_total`, help text SENT_BYTES_HELP)."""

    def __init__(self, open_feed: OpenFeed, sent_bytes: Counter) -> None:
        self.open_feed = open_feed
        self.sent_bytes = sent_bytes
        self.ended = False
        self._open: dict[int, Feed] = {}

    def end_feeds(self) -> None:
        """The producer is stopping: every open stream ends once what is queued is sent, and a
        new subscription is refused as UNAVAILABLE (its consumer tries again, elsewhere)."""
        self.ended = True
        for feed in list(self._open.values()):
            feed.queue.close()

    async def Subscribe(
        self, request: media_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[media_pb2.MediaFrame, None]:
        try:
            if self.ended:
                raise errors.Unavailable("this producer is stopping")
            feed = await self.open_feed(request)
        except errors.BaycastError as exc:
            await context.abort(exc.grpc_status, str(exc))
            return
        self._open[id(feed)] = feed
        if self.ended:  # it stopped while the feed opened
            feed.queue.close()
        counters: dict[str, Counter] = {}
        try:
            async for message in queue_stream(feed.queue, feed.keepalive_s):
                kind = message.WhichOneof("body") or ""
                counter = counters.get(kind)
                if counter is None:
                    counter = counters[kind] = self.sent_bytes.labels(request.handle, kind)
                counter.inc(message.ByteSize())
                yield message
        finally:
            self._open.pop(id(feed), None)
            feed.close()
