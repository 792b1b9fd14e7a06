"""Debian's ffmpeg calls ingest's per-station SRT listener with the station's passphrase.

Each test has its own nats-server: SRT ports follow the stations' creation order in the
`stations` bucket, so the bucket must hold only this test's stations.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import urllib.error
import urllib.request
from typing import Any

import pytest

from services.common.bus import subject
from services.common.gen.baycast.v1 import control_pb2, ingest_pb2, media_pb2
from services.ingest.service import IngestService
from tests.support.ffmpeg_push import SIZE, TONE_HZ, dominant_hz, ffmpeg_push
from tests.support.nats import NatsServer, free_udp_port
from tests.support.station import (
    add_station,
    collect,
    running_ingest,
    station_command,
    wait_online,
)

pytestmark = pytest.mark.timeout(90)


def srt_settings() -> dict[str, Any]:
    return {
        "rtmp_addr": "127.0.0.1:0",
        "srt_addr": f"127.0.0.1:{free_udp_port()}",
        "srt_ports": 2,
        "srt_secret": "a test secret",
    }


def get_caller(ingest: IngestService, station: str, token: str) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{ingest.http.port}/srt/{station}",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def caller(ingest: IngestService, station: str, token: str) -> dict[str, Any]:
    status, body = await asyncio.to_thread(get_caller, ingest, station, token)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def watch_stats(ingest: IngestService, station: str) -> list[control_pb2.SourceStats]:
    stats: list[control_pb2.SourceStats] = []

    async def on_stats(event: control_pb2.SourceStats, _subject: str) -> None:
        stats.append(event)

    await ingest.bus.subscribe(
        subject("source", station, "stats"), control_pb2.SourceStats, on_stats
    )
    return stats


async def steady_stats(
    stats: list[control_pb2.SourceStats], count: int = 4
) -> control_pb2.SourceStats:
    """The stats event after `count` of them (the first ones may predate the RTT's estimate)."""
    for _ in range(100):
        if len(stats) >= count:
            return stats[-1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{len(stats)} stats events")


def assert_plausible_transport(stats: control_pb2.SourceStats) -> None:
    """Loopback, no impairment: a small RTT, no loss, a finite jitter."""
    assert 0 < stats.rtt_ms < 50, stats
    assert stats.packets_lost == 0 and stats.loss_fraction == 0, stats
    assert math.isfinite(stats.jitter_ms) and stats.jitter_ms >= 0, stats
    assert stats.bitrate_kbps > 0, stats


async def test_srt_push_goes_online_and_frames_arrive(own_nats_server: NatsServer) -> None:
    async with running_ingest(own_nats_server.url, **srt_settings()) as ingest:
        token = await add_station(ingest, "srt-zq", "肇庆台")
        await ingest.srt.refresh()  # rather than wait for the periodic re-read
        info = await caller(ingest, "srt-zq", token)
        assert info["port"] == ingest.srt.first_port and len(info["passphrase"]) == 32
        assert info["url"].startswith(f"srt://127.0.0.1:{info['port']}?mode=caller&passphrase=")
        states: list[control_pb2.SourceState] = []

        async def on_state(state: control_pb2.SourceState, _subject: str) -> None:
            states.append(state)

        await ingest.bus.subscribe(
            subject("source", "srt-zq", "state"), control_pb2.SourceState, on_state
        )
        stats = await watch_stats(ingest, "srt-zq")
        push = await ffmpeg_push(info["url"], "mpegts", seconds=5)
        try:
            await wait_online(ingest, "srt-zq")
            # libsrt listens inside ingest: no process holds the passphrase in its arguments.
            ps = await asyncio.to_thread(
                subprocess.run, ["ps", "-ww", "-eo", "args"], capture_output=True, text=True
            )
            listeners = [line for line in ps.stdout.splitlines() if info["passphrase"] in line]
            assert all(f"mode=caller&passphrase={info['passphrase']}" in line for line in listeners)
            small, native = await asyncio.gather(
                collect(
                    ingest,
                    "source/srt-zq",
                    media_pb2.Rendition(width=320, height=180, no_audio=True),
                    video=10,
                ),
                collect(
                    ingest,
                    "source/srt-zq",
                    media_pb2.Rendition(audio_sample_rate=48000, audio_channels=1),
                    video=5,
                    audio=40,
                ),
            )
            steady = await steady_stats(stats)
            transport = await ingest.sources.live["srt-zq"].source.transport_stats()
        finally:
            code, encoder_log = await push.finish()
        assert code == 0, encoder_log
        assert {(f.width, f.height) for f in small.video} == {(320, 180)}
        assert {(f.width, f.height) for f in native.video} == {SIZE}
        assert abs(dominant_hz(native.audio[5:]) - TONE_HZ) < 15
        assert_plausible_transport(steady)
        assert transport.packets_received > 100 and transport.packets_dropped == 0
        for _ in range(100):  # SRT notices the caller is gone after its peer idle timeout
            if "srt-zq" not in ingest.sources.live:
                break
            await asyncio.sleep(0.1)
        assert "srt-zq" not in ingest.sources.live
        await asyncio.sleep(0.3)

    online = [s for s in states if s.online]
    assert online and online[0].protocol == "srt" and online[0].handle.name == "source/srt-zq"
    assert (online[0].video.width, online[0].video.height) == SIZE
    assert online[0].video.codec == "H264" and online[0].audio.codec == "AAC"
    assert not states[-1].online and states[-1].reason == "publisher disconnected"


async def test_srt_wrong_passphrase_is_refused_and_rotation_changes_it(
    own_nats_server: NatsServer,
) -> None:
    async with running_ingest(own_nats_server.url, **srt_settings()) as ingest:
        token = await add_station(ingest, "srt-jm", "江门台")
        await ingest.srt.refresh()
        info = await caller(ingest, "srt-jm", token)
        # The caller URL is for the token holder only.
        assert (await asyncio.to_thread(get_caller, ingest, "srt-jm", token + "x"))[0] == 401
        assert (await asyncio.to_thread(get_caller, ingest, "nope", token))[0] == 401

        wrong = info["url"].replace(info["passphrase"], "Z" * 32)
        push = await ffmpeg_push(wrong, "mpegts", seconds=2)
        code, encoder_log = await push.finish()
        assert code != 0 and "failed" in encoder_log
        assert "srt-jm" not in ingest.sources.live

        # A rotated token gives a new passphrase; the old one no longer gets in.
        reply = await station_command(
            ingest, ingest_pb2.StationCommand(rotate=ingest_pb2.StationRef(id="srt-jm"))
        )
        await ingest.srt.refresh()
        rotated = await caller(ingest, "srt-jm", reply.token)
        assert rotated["passphrase"] != info["passphrase"] and rotated["port"] == info["port"]
        listener = ingest.srt.listeners["srt-jm"]
        assert listener.passphrase == rotated["passphrase"]
        generation = listener.generation
        for _ in range(50):  # the listener listens anew with the new passphrase
            if listener.generation > generation and listener.waiting is not None:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the listener did not restart with the new passphrase")
        push = await ffmpeg_push(info["url"], "mpegts", seconds=2)
        code, encoder_log = await push.finish()
        assert code != 0 and "srt-jm" not in ingest.sources.live

        # The listener is still there for the right passphrase.
        push = await ffmpeg_push(rotated["url"], "mpegts", seconds=3)
        try:
            await wait_online(ingest, "srt-jm")
            assert ingest.sources.live["srt-jm"].state.protocol == "srt"
        finally:
            code, encoder_log = await push.finish()
        assert code == 0, encoder_log
