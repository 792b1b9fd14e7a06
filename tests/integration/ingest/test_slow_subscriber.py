"""A subscriber that stops reading loses its oldest frames: memory stays bounded, others go on."""

from __future__ import annotations

import asyncio
import resource

import pytest

from services.common.gen.baycast.v1 import media_pb2
from services.ingest import metrics
from tests.support.nats import NatsServer
from tests.support.station import add_station, publishing, running_ingest, wait_online

pytestmark = pytest.mark.timeout(90)
STALL_S = 10.0
QUEUE = 6


async def test_stalled_subscriber_is_bounded_and_others_keep_their_rate(
    nats_server: NatsServer,
) -> None:
    async with running_ingest(nats_server.url, subscriber_queue=QUEUE) as ingest:
        token = await add_station(ingest, "slow", "慢台")
        async with publishing(ingest, "slow", token, mode="packets", size=(640, 360)):
            await wait_online(ingest, "slow")
            hub = ingest.sources.hub("slow")
            assert hub is not None
            endpoint = f"127.0.0.1:{ingest.grpc.port}"
            stub = ingest.channels.media(endpoint)
            stalled = stub.Subscribe(
                media_pb2.SubscribeRequest(
                    handle="source/slow",
                    rendition=media_pb2.Rendition(width=640, height=360),
                    subscriber="stalled",
                )
            )
            first = await stalled.read()
            assert first.WhichOneof("body") in ("video", "audio")

            reader_frames = 0

            async def steady() -> None:
                nonlocal reader_frames
                call = stub.Subscribe(
                    media_pb2.SubscribeRequest(
                        handle="source/slow",
                        rendition=media_pb2.Rendition(width=320, height=180, no_audio=True),
                        subscriber="steady",
                    )
                )
                async for frame in call:
                    if frame.WhichOneof("body") == "video":
                        reader_frames += 1

            before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            produced_before = hub.measurements.video_frames
            reader = asyncio.create_task(steady())
            longest = 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STALL_S
            while loop.time() < deadline:
                await asyncio.sleep(0.5)
                longest = max(longest, *(len(s.queue) for s in hub.fanout.subscriptions()))
            produced = hub.measurements.video_frames - produced_before
            reader.cancel()
            stalled_sub = next(s for s in hub.fanout.subscriptions() if s.subscriber == "stalled")
            steady_sub = next(s for s in hub.fanout.subscriptions() if s.subscriber == "steady")

            assert longest <= QUEUE  # never more than the queue holds
            assert produced >= 100  # the source kept going (25 fps nominal, loaded box)
            # The stalled one lost most of what was produced; its drops are counted.
            assert stalled_sub.dropped >= produced // 2
            metric = metrics.FRAMES_DROPPED.labels("slow", "stalled")._value.get()
            assert metric >= stalled_sub.dropped
            # The steady one kept (nearly) every frame the source produced.
            assert reader_frames >= produced * 0.8
            assert steady_sub.dropped <= produced * 0.2
            # Memory: bounded queues, not 10 s of 640x360 frames (~90 MB); allow 60 MB of noise.
            growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_rss
            assert growth_kb < 60_000
            stalled.cancel()
