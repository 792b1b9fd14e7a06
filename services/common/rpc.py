"""The media plane's gRPC plumbing: a server with the standard health service, and channels.

Message limits are raised on both ends: a 1080p RGBA frame is 8.3 MB, well over grpcio's 4 MiB
default.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common.gen.baycast.v1 import media_pb2_grpc

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Media streams are long-lived: find a dead peer within seconds, not at the next write.
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # A producer that restarts (a mixer pod) is found again within a second, not after gRPC's
    # default backoff of up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
SERVER_OPTIONS = [
    *CHANNEL_OPTIONS,
    ("grpc.http2.min_ping_interval_without_data_ms", 4000),
    ("grpc.so_reuseport", 0),
]


class GrpcServer:
    """A grpc.aio server that reports its health through grpc.health.v1."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.port = 0
        self._media: media_pb2_grpc.MediaServicer | None = None
        # grpc.aio objects bind to the running event loop: they are made in start().
        self.server: grpc.aio.Server | None = None
        self.health: health.aio.HealthServicer | None = None

    def add_media(self, servicer: media_pb2_grpc.MediaServicer) -> None:
        self._media = servicer

    async def start(self) -> None:
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if self._media is not None:
            media_pb2_grpc.add_MediaServicer_to_server(self._media, self.server)
        self.port = self.server.add_insecure_port(self.addr)
        if self.port == 0:
            raise OSError(f"cannot bind gRPC to {self.addr}")
        await self.server.start()

    async def set_serving(self, serving: bool) -> None:
        if self.health is None:
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set("", status)
        await self.health.set("baycast.v1.Media", status)

    async def stop(self, grace: float) -> None:
        if self.server is not None:
            await self.server.stop(grace)


class ChannelCache:
    """One channel per endpoint, shared by every subscription to it."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, endpoint: str) -> grpc.aio.Channel:
        ch = self._channels.get(endpoint)
        if ch is None:
            ch = grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
            self._channels[endpoint] = ch
        return ch

    def media(self, endpoint: str) -> media_pb2_grpc.MediaStub:
        return media_pb2_grpc.MediaStub(self.channel(endpoint))

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for ch in channels.values():
            await ch.close()
