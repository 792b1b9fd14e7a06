"""The media plane between two processes: 1080p frames arrive whole and in order."""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import numpy as np

from services.common.gen.baycast.v1 import media_pb2
from services.common.media import proto_to_i420
from services.common.rpc import ChannelCache
from tests.support.nats import NatsServer
from tests.support.probe_service import PATTERN_HANDLE, pattern_frame
from tests.support.services import service_process


async def test_subscribe_carries_1080p_frames_between_processes(
    nats_server: NatsServer, tmp_path
) -> None:
    probe = service_process(
        "tests.support.probe_service",
        nats_server.url,
        tmp_path,
        "probe",
        env={"BAYCAST_PROBE_FRAME_INTERVAL_S": "0.01"},
    ).start()
    channels = ChannelCache()
    try:
        stub = channels.media(f"127.0.0.1:{probe.grpc_port}")
        request = media_pb2.SubscribeRequest(
            handle=PATTERN_HANDLE, rendition=media_pb2.Rendition(width=1920, height=1080)
        )
        call = stub.Subscribe(request)
        received = []
        async for frame in call:
            received.append(frame.video)
            if len(received) == 12:
                break
        call.cancel()
        assert [f.sequence for f in received] == list(range(12))
        assert [f.pts_us for f in received] == [s * 40_000 for s in range(12)]
        for f in received:
            assert (f.width, f.height, f.pixel_format) == (1920, 1080, media_pb2.PIXEL_FORMAT_I420)
            assert np.array_equal(proto_to_i420(f), pattern_frame(1920, 1080, f.sequence))

        # The server outlives a cancelled subscriber and serves the next one.
        call = stub.Subscribe(request)
        first = await anext(aiter(call))
        assert first.video.sequence == 0
        call.cancel()

        # When the server stops, the client's stream ends with an error, it does not hang.
        call = stub.Subscribe(request)
        await anext(aiter(call))
        probe.signal(signal.SIGTERM)
        started = time.monotonic()
        code = None
        try:
            async with asyncio.timeout(15):
                async for _ in call:
                    pass
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        assert code in (None, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        assert time.monotonic() - started < 15
        assert probe.wait(timeout=15) == 0
    finally:
        await channels.close()
        probe.stop()


async def test_unknown_handle_is_not_found(nats_server: NatsServer, tmp_path) -> None:
    probe = service_process(
        "tests.support.probe_service", nats_server.url, tmp_path, "probe"
    ).start()
    channels = ChannelCache()
    try:
        call = channels.media(f"127.0.0.1:{probe.grpc_port}").Subscribe(
            media_pb2.SubscribeRequest(handle="source/nowhere")
        )
        try:
            await anext(aiter(call))
            raise AssertionError("expected NOT_FOUND")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
            assert "source/nowhere" in (exc.details() or "")
    finally:
        await channels.close()
        probe.stop()
