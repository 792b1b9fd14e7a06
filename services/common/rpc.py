"""The media plane's gRPC plumbing: a server with the standard health service, and channels.

Message limits are raised on both ends: a 1080p RGBA frame is 8.3 MB, well over grpcio's 4 MiB
default. `drain_completion_wakeups` keeps grpc.aio's completion poller from stalling under load
(ADR 0011).
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import struct
import termios
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common.gen.baycast.v1 import media_pb2_grpc
from services.common.tls import INTERNAL_CHANNEL_OPTIONS

if TYPE_CHECKING:
    from services.common.media_service import MediaService

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


log = structlog.get_logger("rpc")


def drain_completion_wakeups() -> bool:
    """Make grpc.aio's wake-up socket drain as fast as its poller thread fills it (ADR 0011).

    grpc.aio's poller thread takes every completion (a message written, a message read) from
    gRPC's core, queues it, and writes one byte to a socket pair; the event loop's reader for
    that socket takes one byte per wake-up and runs every queued completion. When completions
    come faster than the loop goes round (six hundred a second into a loop busy with a dozen
    WebRTC peers), the bytes pile up until the socket's buffer is full; the poller thread then
    blocks in `write()` and every gRPC stream of the process stops, for seconds at a time. This
    wraps that reader so each wake-up first reads all but one of the waiting bytes (the one is
    left for grpc's own read, which blocks on an empty socket), then runs grpc's handler.
    Idempotent; returns True when the reader is (now) wrapped, False when there is none yet.
    """
    loop = asyncio.get_running_loop()
    selector = getattr(loop, "_selector", None)
    if selector is None:  # not a selector loop: nothing known to wrap
        return False
    for key in list(selector.get_map().values()):
        handle = key.data[0] if key.data else None
        callback: Any = getattr(handle, "_callback", None)
        if getattr(callback, "baycast_drains", False):
            return True
        target = getattr(callback, "func", None)
        owner = type(getattr(target, "__self__", None)).__name__
        if owner != "PollerCompletionQueue" or not hasattr(key.fileobj, "recv"):
            continue
        wrapped = functools.partial(_drain_then_handle, key.fileobj, callback)
        wrapped.baycast_drains = True  # type: ignore[attr-defined]
        loop.remove_reader(key.fd)
        loop.add_reader(key.fd, wrapped)
        log.debug("grpc_wakeups_drained", fd=key.fd)
        return True
    return False


def _drain_then_handle(sock: Any, handle_events: Any) -> None:
    try:
        count = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        waiting = struct.unpack("i", count)[0]
        if waiting > 1:
            sock.recv(waiting - 1)
    except OSError:  # the socket closed under us (grpc shutting down): its handler decides
        pass
    handle_events()


class GrpcServer:
    """A grpc.aio server that reports its health through grpc.health.v1."""

    def __init__(self, addr: str, credentials: grpc.ServerCredentials | None = None) -> None:
        self.addr = addr
        # Mutual TLS when given (services/common/tls.py); else plain.
        self.credentials = credentials
        self.port = 0
        self._media: MediaService | None = None
        # grpc.aio objects bind to the running event loop: they are made in start().
        self.server: grpc.aio.Server | None = None
        self.health: health.aio.HealthServicer | None = None

    def add_media(self, servicer: MediaService) -> None:
        self._media = servicer

    async def start(self) -> None:
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if self._media is not None:
            media_pb2_grpc.add_MediaServicer_to_server(self._media, self.server)
        if self.credentials is not None:
            self.port = self.server.add_secure_port(self.addr, self.credentials)
        else:
            self.port = self.server.add_insecure_port(self.addr)
        if self.port == 0:
            raise OSError(f"cannot bind gRPC to {self.addr}")
        await self.server.start()
        drain_completion_wakeups()

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
        """End the media streams (their consumers see the stream end and look for the handle
        elsewhere), then stop, giving unary calls `grace` to finish."""
        if self._media is not None:
            self._media.end_feeds()
        if self.server is not None:
            await self.server.stop(grace)


class ChannelCache:
    """One channel per endpoint, shared by every subscription to it."""

    def __init__(self, credentials: grpc.ChannelCredentials | None = None) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        # Mutual TLS when given: the peer is checked against INTERNAL_NAME, whatever address the
        # handle names.
        self.credentials = credentials

    def channel(self, endpoint: str) -> grpc.aio.Channel:
        ch = self._channels.get(endpoint)
        if ch is None:
            if self.credentials is not None:
                ch = grpc.aio.secure_channel(
                    endpoint,
                    self.credentials,
                    options=[*CHANNEL_OPTIONS, *INTERNAL_CHANNEL_OPTIONS],
                )
            else:
                ch = grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
            self._channels[endpoint] = ch
            drain_completion_wakeups()
        return ch

    def media(self, endpoint: str) -> media_pb2_grpc.MediaStub:
        return media_pb2_grpc.MediaStub(self.channel(endpoint))

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for ch in channels.values():
            await ch.close()
