"""Debian's ffmpeg pushes RTMP to ingest's own listener with a station's token as stream key."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import control_pb2, ingest_pb2, media_pb2
from services.ingest.service import STATION_COMMANDS
from tests.support.ffmpeg_push import SIZE, TONE_HZ, dominant_hz, ffmpeg_push, rtmp_url
from tests.support.nats import NatsServer, free_port
from tests.support.services import service_process
from tests.support.station import add_station, collect, running_ingest, wait_online

pytestmark = pytest.mark.timeout(90)


async def watch_states(ingest: object, station: str) -> list[control_pb2.SourceState]:
    states: list[control_pb2.SourceState] = []

    async def on_state(state: control_pb2.SourceState, _subject: str) -> None:
        states.append(state)

    await ingest.bus.subscribe(  # type: ignore[attr-defined]
        subject("source", station, "state"), control_pb2.SourceState, on_state
    )
    return states


async def watch_stats(ingest: object, station: str) -> list[control_pb2.SourceStats]:
    stats: list[control_pb2.SourceStats] = []

    async def on_stats(event: control_pb2.SourceStats, _subject: str) -> None:
        stats.append(event)

    await ingest.bus.subscribe(  # type: ignore[attr-defined]
        subject("source", station, "stats"), control_pb2.SourceStats, on_stats
    )
    return stats


async def test_rtmp_push_goes_online_and_frames_arrive(nats_server: NatsServer) -> None:
    async with running_ingest(nats_server.url, rtmp_addr="127.0.0.1:0") as ingest:
        token = await add_station(ingest, "rtmp-fs", "佛山台")
        states = await watch_states(ingest, "rtmp-fs")
        stats = await watch_stats(ingest, "rtmp-fs")
        push = await ffmpeg_push(rtmp_url(ingest.rtmp.port, "live", token), "flv", seconds=5)
        try:
            await wait_online(ingest, "rtmp-fs")
            small, native = await asyncio.gather(
                collect(
                    ingest,
                    "source/rtmp-fs",
                    media_pb2.Rendition(width=320, height=180, no_audio=True),
                    video=10,
                ),
                collect(
                    ingest,
                    "source/rtmp-fs",
                    media_pb2.Rendition(audio_sample_rate=48000, audio_channels=1),
                    video=5,
                    audio=40,
                ),
            )
            for _ in range(50):
                if len(stats) >= 3:
                    break
                await asyncio.sleep(0.1)
        finally:
            code, encoder_log = await push.finish()
        assert code == 0, encoder_log
        assert {(f.width, f.height) for f in small.video} == {(320, 180)}
        assert {(f.width, f.height) for f in native.video} == {SIZE}
        assert abs(dominant_hz(native.audio[5:]) - TONE_HZ) < 15
        # TCP on loopback: the kernel's RTT, no loss by definition, a finite jitter.
        assert len(stats) >= 3
        for event in stats:
            assert 0 < event.rtt_ms < 50, event
            assert event.packets_lost == 0 and event.loss_fraction == 0, event
            assert math.isfinite(event.jitter_ms) and event.jitter_ms >= 0, event
        assert stats[-1].bitrate_kbps > 0 and stats[-1].jitter_ms > 0
        for _ in range(50):
            if "rtmp-fs" not in ingest.sources.live:
                break
            await asyncio.sleep(0.1)
        assert "rtmp-fs" not in ingest.sources.live
        await asyncio.sleep(0.3)

    online = [s for s in states if s.online]
    assert online, "no online state event"
    assert online[0].protocol == "rtmp" and online[0].handle.name == "source/rtmp-fs"
    assert (online[0].video.width, online[0].video.height) == SIZE
    assert online[0].video.codec == "H264" and online[0].audio.codec == "AAC"
    assert online[0].name == "佛山台"
    assert not states[-1].online and states[-1].reason == "publisher ended the stream"


async def test_rtmp_wrong_key_is_refused_and_nothing_starts(nats_server: NatsServer) -> None:
    async with running_ingest(nats_server.url, rtmp_addr="127.0.0.1:0") as ingest:
        token = await add_station(ingest, "rtmp-zh", "珠海台")
        states = await watch_states(ingest, "rtmp-zh")
        port = ingest.rtmp.port
        wrong = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        for url in (
            rtmp_url(port, "live", wrong),  # a wrong key
            rtmp_url(port, "rtmp-zh", wrong),  # the right station, a wrong key
            rtmp_url(port, "nope", token),  # the right key under another station
        ):
            push = await ffmpeg_push(url, "flv", seconds=2)
            code, encoder_log = await push.finish()
            assert code != 0
            assert "unknown, wrong or revoked stream key" in encoder_log
            assert not ingest.sources.live
        await asyncio.sleep(0.3)
        assert states == []

        # Protocol garbage after the handshake, or an encrypted-RTMP handshake: closed at once.
        for hello, after in ((b"\x03", b"\x46" + bytes(20)), (b"\x06", b"")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(hello + bytes(1536))
            if after:
                await reader.readexactly(1 + 2 * 1536)
                writer.write(bytes(1536) + after)  # C2, then a chunk without a full header
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()

        # The service still takes the right key afterwards, in the /<station>/<token> form.
        push = await ffmpeg_push(rtmp_url(port, "rtmp-zh", token), "flv", seconds=3)
        try:
            await wait_online(ingest, "rtmp-zh")
            # A second publisher for a live station is refused; the first keeps going.
            second = await ffmpeg_push(rtmp_url(port, "live", token), "flv", seconds=2)
            code, encoder_log = await second.finish()
            assert code != 0 and "station rtmp-zh is already live" in encoder_log
            assert ingest.sources.live["rtmp-zh"].state.online
        finally:
            code, encoder_log = await push.finish()
        assert code == 0, encoder_log


async def test_rtmp_in_the_service_process_never_logs_the_key(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """`baycast ingest` as its own process, debug JSON logs: refusals and a session are logged,
    the stream key never is."""
    rtmp_port = free_port()
    proc = service_process(
        "ingest",
        nats_server.url,
        tmp_path,
        "ingest",
        env={"BAYCAST_INGEST_RTMP_ADDR": f"127.0.0.1:{rtmp_port}", "BAYCAST_LOG_LEVEL": "debug"},
    )
    await asyncio.to_thread(proc.start)
    bus = Bus(nats_server.url, "test-rtmp-logs")
    await bus.connect()
    try:
        reply = await bus.request(
            STATION_COMMANDS,
            ingest_pb2.StationCommand(add=ingest_pb2.AddStation(id="rtmp-hz", name="惠州台")),
            ingest_pb2.StationReply,
        )
        token = reply.token
        online = asyncio.Event()

        async def on_state(state: control_pb2.SourceState, _subject: str) -> None:
            if state.online:
                online.set()

        await bus.subscribe(
            subject("source", "rtmp-hz", "state"), control_pb2.SourceState, on_state
        )
        refused = await ffmpeg_push(rtmp_url(rtmp_port, "live", token + "x"), "flv", seconds=1)
        code, _ = await refused.finish()
        assert code != 0
        push = await ffmpeg_push(rtmp_url(rtmp_port, "live", token), "flv", seconds=3)
        try:
            await asyncio.wait_for(online.wait(), 20)
        finally:
            code, encoder_log = await push.finish()
        assert code == 0, encoder_log
    finally:
        await bus.drain()
        proc.stop()
    logs = proc.logs()
    assert '"event": "rtmp_publish_refused"' in logs
    assert '"event": "rtmp_publish_started"' in logs
    assert token not in logs
