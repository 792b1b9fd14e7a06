"""RTMP before authentication: a flood of drip-feeding connections, oversized chunks and AMF0
bombs against an ingest process, while a real ffmpeg push with a good key goes live.

500 connections each send one byte a second and reconnect a second after being cut, for the length
of the attack: 49 from each of ten busy loopback addresses and one from each of ten quiet ones
(every address of 127.0.0.0/8 reaches the listener and counts as a client of its own). ingest runs
with small caps so that every one is exercised: 4 negotiating connections per address, 48 in all
(the busy addresses want 40 and the quiet 10; a newcomer from an address holding none, the push's
or a bomb's, displaces the oldest of the largest holder), a 3 s deadline for the whole negotiation.
Beside them, from addresses of their own, the bombs: an 8 MiB command, a million-null strict array
(1 MB), a 1 MiB string, 60,000 nulls, 12,000 levels of nesting and a string that claims 4 GiB (each
within the 64 KiB command limit), 65 chunk streams, 9 partial messages at once. Meanwhile
`/healthz` is timed every 50 ms from a thread (the event loop's lag as a client sees it), ingest's
RSS sampled every 100 ms, and Debian's ffmpeg pushes a test pattern with the station's key from
127.0.0.1: it must go live while the attack lasts, which goes on until the deadline has cut
connections too.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import control_pb2
from services.ingest import rtmp_amf
from services.ingest.rtmp_chunks import (
    COMMAND_AMF0,
    SET_CHUNK_SIZE,
    ChunkWriter,
    Message,
    control,
)
from tests.integration.ingest.rtmp_client import RawRtmp
from tests.reliability.helpers import add_station, ingest_process, processes
from tests.reliability.proc_stats import metric_value, rss_bytes
from tests.support.ffmpeg_push import ffmpeg_push, rtmp_url
from tests.support.nats import NatsServer
from tests.support.services import ServiceProcess

pytestmark = pytest.mark.timeout(90)

CONNECTIONS, BUSY, QUIET = 500, 10, 10
MAX_CONNECTIONS, PER_ADDRESS, DEADLINE_S = 48, 4, 3.0
PROBE_EVERY_S, RSS_EVERY_S, GAUGE_EVERY_S = 0.05, 0.1, 0.25
ATTACK_BEFORE_PUSH_S = 1.0  # the attack alone, at least this long (and until the caps are hit)
ATTACK_AFTER_LIVE_S = 1.5  # the attack goes on this long once the push is live
ATTACK_MAX_S = 20.0  # and never longer than this
ONE_MIB = 1024 * 1024
# Near the figures measured on the 2-core box (see the printed line), with room for a busy box
# (other suites running, load average up to 11): ingest's RSS grew by 0.6-1.1 MiB under the
# attack (at most 48 negotiations of at most 64 KiB held each would be 3 MiB) and 7.6-8.7 MiB once
# the push decoded too; /healthz answered at the median in ~1 ms, p95 3-8 ms, at worst in 6-74 ms
# (once 173 ms with the box at load 11: the process waiting for a core, not its event loop); the
# push was live 0.35-0.95 s after ffmpeg started. Before these limits, one million-null command
# held the event loop for seconds.
ATTACK_RSS_LIMIT = 8 * ONE_MIB
RSS_GROWTH_LIMIT = 24 * ONE_MIB
LAG_P95_LIMIT_S = 0.1
LAG_LIMIT_S = 0.5
LIVE_LIMIT_S = 3.0

REFUSED = "baycast_ingest_rtmp_refused_total"


def command(*values: object, chunk_size: int = 128) -> bytes:
    writer = ChunkWriter()
    writer.chunk_size = chunk_size
    return writer.encode(3, Message(COMMAND_AMF0, 0, 0, rtmp_amf.encode(*values)))


def raw_command(body: bytes, chunk_size: int = 4096) -> bytes:
    """`connect` followed by raw AMF0 bytes, in chunks of `chunk_size` (announced first)."""
    writer = ChunkWriter()
    announce = writer.encode(2, control(SET_CHUNK_SIZE, chunk_size))
    writer.chunk_size = chunk_size
    payload = rtmp_amf.encode("connect", 1) + body
    return announce + writer.encode(3, Message(COMMAND_AMF0, 0, 0, payload))


def header(csid: int, length: int) -> bytes:
    """A type-0 chunk header of a command message, csid from 64 on in the 2-byte form."""
    basic = bytes([csid]) if csid < 64 else bytes([0, csid - 64])
    return basic + b"\x00\x00\x00" + length.to_bytes(3, "big") + bytes([COMMAND_AMF0]) + bytes(4)


STRICT_ARRAY_OF_ONE = bytes([rtmp_amf.STRICT_ARRAY]) + struct.pack(">I", 1)
BOMBS: dict[str, tuple[bytes, str]] = {
    "8 MiB command": (header(3, 8 * ONE_MIB) + bytes(4096), "message_size"),
    "million-null array": (
        raw_command(bytes([rtmp_amf.STRICT_ARRAY]) + struct.pack(">I", 10**6) + b"\x05" * 10**6),
        "message_size",
    ),
    "1 MiB string": (raw_command(rtmp_amf.encode("x" * ONE_MIB)), "message_size"),
    "60,000 nulls": (
        raw_command(bytes([rtmp_amf.STRICT_ARRAY]) + struct.pack(">I", 60_000) + b"\x05" * 60_000),
        "amf",
    ),
    "12,000 levels": (raw_command(STRICT_ARRAY_OF_ONE * 12_000 + b"\x05"), "amf"),
    "4 GiB string": (raw_command(b"\x0c\xff\xff\xff\xff" + b"x" * 60_000), "amf"),
    "65 chunk streams": (
        b"".join(header(csid, 0) for csid in range(64, 64 + 65)),
        "chunk_streams",
    ),
    "9 partial messages": (
        b"".join(header(4 + i, 1000) + bytes(128) for i in range(9)),
        "partial_streams",
    ),
}


async def bomb(port: int, host: str, payload: bytes) -> int:
    """Handshake, then `payload`: the bytes ingest sent after the handshake before it cut the
    connection."""
    client = await RawRtmp.open(port, host)
    try:
        await client.handshake()
        with contextlib.suppress(ConnectionError):
            client.writer.write(payload)
            await client.writer.drain()
        return await client.closed()
    finally:
        client.close()


async def drip(port: int, host: str, stop: asyncio.Event, cut: list[int]) -> None:
    """One byte a second on one connection; a second after ingest cuts it, another one."""
    while not stop.is_set():
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(host, 0))
        except OSError:
            cut[0] += 1
        else:
            try:
                while not stop.is_set():
                    writer.write(b"\x03")
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
            except ConnectionError:
                cut[0] += 1
            finally:
                writer.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def drip_addresses() -> list[str]:
    """The busy addresses 127.0.0.2-11 share what the quiet 127.0.0.50-59 leave."""
    quiet = [f"127.0.0.{50 + i}" for i in range(QUIET)]
    return quiet + [f"127.0.0.{2 + i % BUSY}" for i in range(CONNECTIONS - QUIET)]


class HealthProbe:
    """Times `/healthz` over one kept-alive connection, from a thread of its own: the answer's
    delay is ingest's, not this test's event loop's (busy opening hundreds of connections)."""

    def __init__(self, port: int) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def healthz(self) -> float:
        started = time.monotonic()
        self.http.request("GET", "/healthz")
        response = self.http.getresponse()
        response.read()
        assert response.status == 200
        return time.monotonic() - started

    def __enter__(self) -> HealthProbe:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.http.close()


async def sample(every_s: float, stop: asyncio.Event, take: Callable[[], Awaitable[None]]) -> None:
    while not stop.is_set():
        await take()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


def percentile(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, len(ordered) * p // 100)]


async def refused(ingest: ServiceProcess, reason: str) -> float:
    return await asyncio.to_thread(metric_value, ingest.http, REFUSED, reason)


async def test_rtmp_flood_bombs_and_a_push_going_live(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    station = f"flood-{uuid.uuid4().hex[:5]}"
    ingest = ingest_process(
        nats_server.url,
        tmp_path,
        BAYCAST_INGEST_RTMP_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        BAYCAST_INGEST_RTMP_MAX_CONNECTIONS_PER_ADDR=str(PER_ADDRESS),
        BAYCAST_INGEST_RTMP_NEGOTIATION_TIMEOUT_S=str(DEADLINE_S),
    )
    port = int(ingest.env["BAYCAST_INGEST_RTMP_ADDR"].rpartition(":")[2])
    bus = Bus(nats_server.url, "rtmp-flood-test")
    await bus.connect()
    went_live = asyncio.Event()

    async def on_state(state: control_pb2.SourceState, _subject: str) -> None:
        if state.online:
            went_live.set()

    lags: list[float] = []
    rss: list[tuple[float, int]] = []
    negotiating: list[float] = []
    stop_probes, stop_attack = asyncio.Event(), asyncio.Event()
    cut = [0]
    try:
        with processes(ingest):
            token = await add_station(bus, station, "江门台")
            await bus.subscribe(
                subject("source", station, "state"), control_pb2.SourceState, on_state
            )
            with HealthProbe(ingest.http_port) as prober:

                async def probe() -> None:
                    lags.append(await asyncio.to_thread(prober.healthz))

                async def sample_rss() -> None:
                    rss.append((time.monotonic(), rss_bytes(ingest)))

                async def sample_negotiating() -> None:
                    negotiating.append(
                        await asyncio.to_thread(
                            metric_value, ingest.http, "baycast_ingest_rtmp_negotiating"
                        )
                    )

                for _ in range(5):
                    await probe()  # warm: the kept-alive connection
                rss_before = rss_bytes(ingest)
                baseline_lag = min(lags)
                lags.clear()
                samplers = [
                    asyncio.create_task(sample(PROBE_EVERY_S, stop_probes, probe)),
                    asyncio.create_task(sample(RSS_EVERY_S, stop_probes, sample_rss)),
                    asyncio.create_task(sample(GAUGE_EVERY_S, stop_probes, sample_negotiating)),
                ]
                attack_started = time.monotonic()
                drippers = [
                    asyncio.create_task(drip(port, host, stop_attack, cut))
                    for host in drip_addresses()
                ]
                bombs = {
                    name: asyncio.create_task(bomb(port, f"127.0.0.{100 + i}", payload))
                    for i, (name, (payload, _reason)) in enumerate(BOMBS.items())
                }
                # The caps at work (a positive signal), then the push.
                while not (
                    await refused(ingest, "per_address") > 0
                    and await refused(ingest, "total") + await refused(ingest, "evicted") > 0
                ):
                    assert time.monotonic() - attack_started < ATTACK_MAX_S, "caps not reached"
                    await asyncio.sleep(0.1)
                bomb_answers = {name: await task for name, task in bombs.items()}
                await asyncio.sleep(
                    max(0.0, attack_started + ATTACK_BEFORE_PUSH_S - time.monotonic())
                )
                rss_attack = max(value for _, value in rss)
                push_started = time.monotonic()
                push = await ffmpeg_push(rtmp_url(port, "live", token), "flv", seconds=4)
                try:
                    await asyncio.wait_for(went_live.wait(), ATTACK_MAX_S)
                    live_after = time.monotonic() - push_started
                    # The attack goes on a while, and until the deadline has cut drippers.
                    await asyncio.sleep(ATTACK_AFTER_LIVE_S)
                    while await refused(ingest, "deadline") == 0:
                        assert time.monotonic() - attack_started < ATTACK_MAX_S, "no deadline"
                        await asyncio.sleep(0.1)
                    stop_attack.set()
                    await asyncio.gather(*drippers)
                    attack_s = time.monotonic() - attack_started
                finally:
                    code, encoder_log = await push.finish()
                stop_probes.set()
                await asyncio.gather(*samplers)
                counts = {
                    reason: await refused(ingest, reason)
                    for reason in (
                        "per_address",
                        "total",
                        "evicted",
                        "deadline",
                        "message_size",
                        "amf",
                        "chunk_streams",
                        "partial_streams",
                    )
                }
            logs = ingest.logs()
    finally:
        stop_attack.set()
        stop_probes.set()
        await bus.drain()

    growth_attack = rss_attack - rss_before
    growth = max(value for _, value in rss) - rss_before
    print(
        f"\nRTMP flood: {CONNECTIONS} drip connections from {BUSY + QUIET} addresses for"
        f" {attack_s:.1f} s ({cut[0]} cut by ingest), bombs {bomb_answers}; refusals {counts};"
        f" negotiating at most {max(negotiating):g}; ingest RSS {rss_before / ONE_MIB:.1f} MiB, +"
        f"{growth_attack / ONE_MIB:.1f} MiB under the attack, +{growth / ONE_MIB:.1f} MiB with"
        f" the push; /healthz {baseline_lag * 1000:.1f} ms before, max"
        f" {max(lags) * 1000:.1f} ms, p95 {percentile(lags, 95) * 1000:.1f} ms, median"
        f" {percentile(lags, 50) * 1000:.1f} ms over"
        f" {len(lags)} probes during it; push live {live_after:.2f} s after it started"
    )
    assert code == 0, encoder_log[-2000:]
    # Every cap was reached, and every bomb refused for what it is.
    assert counts["per_address"] > 0 and counts["total"] + counts["evicted"] > 0
    assert counts["deadline"] > 0
    expected: dict[str, int] = {}
    for _payload, reason in BOMBS.values():
        expected[reason] = expected.get(reason, 0) + 1
    for reason, n in expected.items():
        assert counts[reason] == n, (reason, counts)
    assert all(sent == 0 for sent in bomb_answers.values()), bomb_answers  # no answer at all
    assert max(negotiating) == MAX_CONNECTIONS  # full, never over
    # Bounded: memory, the event loop's answers, and the good push went live meanwhile.
    assert growth_attack < ATTACK_RSS_LIMIT, growth_attack
    assert growth < RSS_GROWTH_LIMIT, growth
    assert percentile(lags, 95) < LAG_P95_LIMIT_S, sorted(lags)[-10:]
    assert max(lags) < LAG_LIMIT_S, sorted(lags)[-5:]
    assert live_after < LIVE_LIMIT_S
    assert token not in logs
    assert '"event": "rtmp_connection_refused"' in logs
