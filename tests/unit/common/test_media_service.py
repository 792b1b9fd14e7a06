"""The one Media.Subscribe servicer: errors as gRPC statuses, the queue streamed with keepalives,
the feed let go however the stream ends."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from prometheus_client import CollectorRegistry, Counter

from services.common import errors
from services.common.gen.baycast.v1 import media_pb2
from services.common.media import DropOldestQueue
from services.common.media_service import SENT_BYTES_HELP, Feed, MediaService

REGISTRY = CollectorRegistry()
SENT = Counter(
    "test_media_sent_bytes_total", SENT_BYTES_HELP, ["handle", "kind"], registry=REGISTRY
)


class Aborted(Exception):
    pass


class Context:
    """What the servicer uses of grpc.aio.ServicerContext: abort, which raises."""

    def __init__(self) -> None:
        self.status: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status = (code, details)
        raise Aborted


def request(handle: str) -> media_pb2.SubscribeRequest:
    return media_pb2.SubscribeRequest(handle=handle)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.NotFound("no handle 'x' here"), grpc.StatusCode.NOT_FOUND),
        (errors.InvalidArgument("width and height go together"), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_a_feed_that_cannot_open_is_the_errors_status(
    error: errors.BaycastError, status: grpc.StatusCode
) -> None:
    async def open_feed(_request: media_pb2.SubscribeRequest) -> Feed:
        raise error

    context = Context()
    with pytest.raises(Aborted):
        async for _ in MediaService(open_feed, SENT).Subscribe(request("x"), context):
            pass
    assert context.status == (status, str(error))


async def test_the_queue_is_streamed_with_keepalives_and_let_go_when_the_producer_closes_it() -> (
    None
):
    queue: DropOldestQueue[media_pb2.MediaFrame] = DropOldestQueue(4)
    closed: list[str] = []
    asked: list[str] = []

    async def open_feed(req: media_pb2.SubscribeRequest) -> Feed:
        asked.append(req.handle)
        return Feed(queue, lambda: closed.append(req.handle), keepalive_s=0.05)

    stream = MediaService(open_feed, SENT).Subscribe(request("source/a"), Context())
    queue.put(media_pb2.MediaFrame(video=media_pb2.VideoFrame(sequence=7)))
    first = await anext(stream)
    assert first.video.sequence == 7 and asked == ["source/a"] and closed == []
    quiet = await anext(stream)  # nothing for 50 ms: a keepalive
    assert quiet.WhichOneof("body") == "keepalive"
    queue.close()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert closed == ["source/a"]


async def test_a_consumer_that_goes_away_lets_the_feed_go() -> None:
    queue: DropOldestQueue[media_pb2.MediaFrame] = DropOldestQueue(4)
    closed = asyncio.Event()

    async def open_feed(_req: media_pb2.SubscribeRequest) -> Feed:
        return Feed(queue, closed.set)

    stream = MediaService(open_feed, SENT).Subscribe(request("prod/p/program"), Context())
    queue.put(media_pb2.MediaFrame(video=media_pb2.VideoFrame(sequence=1)))
    assert (await anext(stream)).video.sequence == 1
    await stream.aclose()  # what grpc does when the call is cancelled
    assert closed.is_set()


async def test_what_a_feed_sends_is_counted_in_bytes_by_handle_and_kind() -> None:
    def sent(kind: str) -> float:
        labels = {"handle": "prod/count/program", "kind": kind}
        return REGISTRY.get_sample_value("test_media_sent_bytes_total", labels) or 0.0

    queue: DropOldestQueue[media_pb2.MediaFrame] = DropOldestQueue(4)

    async def open_feed(_req: media_pb2.SubscribeRequest) -> Feed:
        return Feed(queue, lambda: None)

    before = {kind: sent(kind) for kind in ("packet", "audio")}
    packet = media_pb2.MediaFrame(packet=media_pb2.VideoPacket(data=b"\0" * 5000, keyframe=True))
    audio = media_pb2.MediaFrame(audio=media_pb2.AudioFrame(pcm=b"\0" * 7680, samples=1920))
    for message in (packet, packet, audio):
        queue.put(message)
    queue.close()
    stream = MediaService(open_feed, SENT).Subscribe(request("prod/count/program"), Context())
    assert len([m async for m in stream]) == 3
    assert sent("packet") - before["packet"] == 2 * packet.ByteSize() > 10_000
    assert sent("audio") - before["audio"] == audio.ByteSize() > 7680


async def test_a_stopping_producer_ends_its_streams_and_refuses_new_ones() -> None:
    queue: DropOldestQueue[media_pb2.MediaFrame] = DropOldestQueue(4)
    closed: list[str] = []

    async def open_feed(req: media_pb2.SubscribeRequest) -> Feed:
        return Feed(queue, lambda: closed.append(req.handle))

    service = MediaService(open_feed, SENT)
    stream = service.Subscribe(request("source/a"), Context())
    queue.put(media_pb2.MediaFrame(video=media_pb2.VideoFrame(sequence=1)))
    assert (await anext(stream)).video.sequence == 1
    queue.put(media_pb2.MediaFrame(video=media_pb2.VideoFrame(sequence=2)))
    service.end_feeds()
    assert (await anext(stream)).video.sequence == 2  # what was queued still goes
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert closed == ["source/a"]
    context = Context()
    with pytest.raises(Aborted):
        await anext(service.Subscribe(request("source/a"), context))
    assert context.status == (grpc.StatusCode.UNAVAILABLE, "this producer is stopping")
    assert closed == ["source/a"]  # refused before a feed was opened
