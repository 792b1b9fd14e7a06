"""RTMP before the key: one deadline for the whole negotiation however the bytes trickle in, and
the per-address cap on connections negotiating at once."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from services.ingest import rtmp_amf
from services.ingest.rtmp_chunks import COMMAND_AMF0, ChunkWriter, Message
from tests.integration.ingest.rtmp_client import RawRtmp
from tests.reliability.proc_stats import metric_value
from tests.support.nats import NatsServer
from tests.support.station import running_ingest

pytestmark = pytest.mark.timeout(60)

DEADLINE_S = 1.0
DRIP_EVERY_S = 0.1  # far inside any per-read timeout


async def refused(http: str, reason: str) -> float:
    """ingest's count of RTMP refusals for `reason` (its /metrics is served by this loop)."""
    return await asyncio.to_thread(metric_value, http, "baycast_ingest_rtmp_refused_total", reason)


async def test_one_deadline_covers_the_whole_negotiation(nats_server: NatsServer) -> None:
    async with running_ingest(nats_server.url, rtmp_negotiation_timeout_s=DEADLINE_S) as ingest:
        metrics = f"http://127.0.0.1:{ingest.http.port}"
        # The counters are the process's: other tests in it may have counted refusals before.
        deadlines_before = await refused(metrics, "deadline")
        connect = ChunkWriter().encode(
            3, Message(COMMAND_AMF0, 0, 0, rtmp_amf.encode("connect", 1, {"app": "live"}))
        )
        client = await RawRtmp.open(ingest.rtmp.port)
        opened = time.monotonic()
        try:
            await client.handshake()  # answered at once
            handshaken = time.monotonic() - opened
            sent = 0
            with contextlib.suppress(ConnectionError):
                for byte in connect:  # a byte at a time, never the whole command
                    client.writer.write(bytes([byte]))
                    await client.writer.drain()
                    sent += 1
                    await asyncio.sleep(DRIP_EVERY_S)
                    if client.reader.at_eof():
                        break
            await client.closed()
            cut_after = time.monotonic() - opened
        finally:
            client.close()
        deadlines = await refused(metrics, "deadline") - deadlines_before

    print(
        f"\nnegotiation deadline {DEADLINE_S:g} s: handshake answered after"
        f" {handshaken * 1000:.0f} ms, cut {cut_after:.2f} s after connecting, {sent} of"
        f" {len(connect)} bytes of `connect` sent"
    )
    assert sent < len(connect)
    assert DEADLINE_S <= cut_after < DEADLINE_S + 0.5
    assert deadlines == 1


async def test_connections_per_address_are_capped(nats_server: NatsServer) -> None:
    per_address = 3
    async with running_ingest(
        nats_server.url, rtmp_max_connections=8, rtmp_max_connections_per_addr=per_address
    ) as ingest:
        metrics = f"http://127.0.0.1:{ingest.http.port}"
        over_before = await refused(metrics, "per_address")
        port = ingest.rtmp.port
        held = [await RawRtmp.open(port, "127.0.0.2") for _ in range(per_address)]
        try:
            # The ones within the cap are answered; one more from that address is cut at once,
            # while another address is still answered.
            for client in held:
                await client.handshake()
            extra = await RawRtmp.open(port, "127.0.0.2")
            extra.writer.write(b"\x03" + bytes(1536))
            with contextlib.suppress(ConnectionError):
                await extra.writer.drain()
            extra_got = await extra.closed()
            extra.close()
            other = await RawRtmp.open(port, "127.0.0.3")
            await other.handshake()
            negotiating = await asyncio.to_thread(
                metric_value, metrics, "baycast_ingest_rtmp_negotiating"
            )
            other.close()
        finally:
            for client in held:
                client.close()
        over = await refused(metrics, "per_address") - over_before

    assert extra_got == 0 and over == 1
    assert negotiating == per_address + 1  # the three held, the other address's one
