"""grpc.aio's completion poller keeps up with a busy event loop once its wake-ups are drained.

A real grpc.aio server streams small messages on 24 streams to a real client in this process
while a callback keeps every turn of the event loop at least 2 ms long (as a dozen WebRTC peers
do in ingest).
Counted in loop turns, not seconds: without the drain, grpc's poller thread blocks on its full
wake-up socket and delivers about one completion per turn; with it, a turn takes them all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc

from services.common.gen.baycast.v1 import media_pb2, media_pb2_grpc
from services.common.rpc import drain_completion_wakeups

STREAMS = 24  # the mixer's video and audio subscriptions to ingest in the demo show
MESSAGES = 60  # per stream
TURN_S = 0.002


class Chatty(media_pb2_grpc.MediaServicer):
    async def Subscribe(
        self, request: media_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[media_pb2.MediaFrame]:
        for n in range(MESSAGES):
            yield media_pb2.MediaFrame(keepalive=media_pb2.Keepalive(time_us=n))


async def _turns_to_receive(stub: media_pb2_grpc.MediaStub) -> int:
    """Loop turns taken to receive every message of STREAMS streams, each turn at least TURN_S."""
    loop = asyncio.get_running_loop()
    turns = 0
    done = False

    def slow_turn() -> None:
        nonlocal turns
        if done:
            return
        turns += 1
        time.sleep(TURN_S)
        loop.call_soon(slow_turn)

    async def one_stream() -> list[int]:
        return [m.keepalive.time_us async for m in stub.Subscribe(media_pb2.SubscribeRequest())]

    loop.call_soon(slow_turn)
    try:
        streams = await asyncio.gather(*(one_stream() for _ in range(STREAMS)))
    finally:
        done = True
    assert all(s == list(range(MESSAGES)) for s in streams)  # whole and in order, either way
    return turns


async def test_a_busy_loop_gets_every_completion_at_each_turn() -> None:
    server = grpc.aio.server()
    media_pb2_grpc.add_MediaServicer_to_server(Chatty(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = media_pb2_grpc.MediaStub(channel)
        await stub.Subscribe(media_pb2.SubscribeRequest()).initial_metadata()  # connected
        before = await _turns_to_receive(stub)
        assert drain_completion_wakeups()
        after = await _turns_to_receive(stub)
        # Two completions per message (written, read): at one per turn, ~2900 turns.
        assert before > STREAMS * MESSAGES
        # Drained, a turn completes a message on many streams at once.
        assert after * 4 < before
    finally:
        await channel.close()
        await server.stop(0)
