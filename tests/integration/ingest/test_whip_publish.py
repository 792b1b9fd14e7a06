"""An aiortc station publishes the test card over WHIP; gRPC subscribers check what comes out."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import numpy as np
import pytest

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import control_pb2, media_pb2
from services.common.media import proto_to_i420, proto_to_pcm
from services.ingest.sources import SOURCES_BUCKET
from services.station.testcard import TestCard, tone_hz
from tests.integration.ingest.test_stations import ctl
from tests.support.nats import NatsServer, free_port
from tests.support.station import (
    add_station,
    collect,
    publishing,
    running_ingest,
    wait_online,
)

pytestmark = pytest.mark.timeout(90)
TOLERANCE = 14  # codec and scaling error on flat areas, in 8-bit code values


def yuv_at(frame: media_pb2.VideoFrame, fx: float, fy: float) -> tuple[int, int, int]:
    image = proto_to_i420(frame)
    w, h = frame.width, frame.height
    x, y = int(fx * w), int(fy * h)
    flat = image.reshape(-1)
    cw, ch = w // 2, h // 2
    u = flat[w * h : w * h + cw * ch].reshape(ch, cw)
    v = flat[w * h + cw * ch :].reshape(ch, cw)
    return int(image[y, x]), int(u[y // 2, x // 2]), int(v[y // 2, x // 2])


def assert_card(frame: media_pb2.VideoFrame, card: TestCard) -> None:
    for point in card.probe_points():
        got = yuv_at(frame, point.x, point.y)
        diff = max(abs(a - b) for a, b in zip(got, point.yuv, strict=True))
        assert diff <= TOLERANCE, f"{point.what}: got {got}, card has {point.yuv}"


def dominant_hz(frames: list[media_pb2.AudioFrame]) -> float:
    pcm = np.concatenate([proto_to_pcm(f)[:, 0] for f in frames]).astype(np.float64)
    rate = frames[0].sample_rate
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])


async def test_card_arrives_at_two_sizes_with_its_tone(nats_server: NatsServer) -> None:
    async with running_ingest(nats_server.url) as ingest:
        token = await add_station(ingest, "gz", "广州台")
        states: list[control_pb2.SourceState] = []
        stats: list[control_pb2.SourceStats] = []

        async def on_state(state: control_pb2.SourceState, _subject: str) -> None:
            states.append(state)

        async def on_stats(s: control_pb2.SourceStats, _subject: str) -> None:
            stats.append(s)

        await ingest.bus.subscribe(
            subject("source", "gz", "state"), control_pb2.SourceState, on_state
        )
        await ingest.bus.subscribe(
            subject("source", "gz", "stats"), control_pb2.SourceStats, on_stats
        )

        async with publishing(ingest, "gz", token, name="广州台", mode="packets") as pub:
            await wait_online(ingest, "gz")
            small, large, sound = await asyncio.gather(
                collect(
                    ingest,
                    "source/gz",
                    media_pb2.Rendition(width=320, height=180, no_audio=True),
                    video=8,
                ),
                collect(
                    ingest,
                    "source/gz",
                    media_pb2.Rendition(width=1280, height=720, no_audio=True),
                    video=8,
                ),
                collect(
                    ingest,
                    "source/gz",
                    media_pb2.Rendition(no_video=True, audio_sample_rate=48000, audio_channels=1),
                    audio=60,
                ),
            )
            assert {(f.width, f.height) for f in small.video} == {(320, 180)}
            assert {(f.width, f.height) for f in large.video} == {(1280, 720)}
            for frame in (small.video[-1], large.video[-1]):
                assert_card(frame, pub.card)
            assert all(f.capture_time_us > 0 for f in large.video)
            assert {(f.sample_rate, f.channels) for f in sound.audio} == {(48000, 1)}
            assert abs(dominant_hz(sound.audio[10:]) - tone_hz("gz")) < 15

            # Two distinct video renditions and one audio rendition existed, shared per request.
            for _ in range(40):
                if stats:
                    break
                await asyncio.sleep(0.1)
            assert stats, "no source.gz.stats event"
            last = stats[-1]
            assert last.fps > 5 and last.width == 1280 and last.height == 720
            assert last.bitrate_kbps > 50
            assert -14 < last.audio_level_dbfs < -6  # the tone is at -10 dBFS
            assert not last.black and not last.silent
            for _ in range(50):  # the RTT probe runs once a second
                if stats[-1].rtt_ms > 0:
                    break
                await asyncio.sleep(0.1)
            assert 0 < stats[-1].rtt_ms < 500
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{ingest.http.port}/metrics") as resp,
            ):
                text = await resp.text()
            assert 'baycast_ingest_source_online{source="gz"} 1.0' in text
            fps_line = next(
                line
                for line in text.splitlines()
                if line.startswith('baycast_ingest_source_fps{source="gz"}')
            )
            assert float(fps_line.split()[-1]) > 5

            bucket = await ingest.bus.kv(SOURCES_BUCKET, control_pb2.SourceState)
            entry = await bucket.get("gz")
            assert entry is not None and entry.value.online
            assert entry.value.handle.name == "source/gz"
            assert entry.value.video.width == 1280 and entry.value.video.codec == "H264"
            assert entry.value.video.fps == 25.0  # from the timestamps, once known
            assert entry.value.name == "广州台"

        for _ in range(100):
            if "gz" not in ingest.sources.live:
                break
            await asyncio.sleep(0.1)
        assert "gz" not in ingest.sources.live
        await asyncio.sleep(0.2)
        entry = await bucket.get("gz")
        assert entry is not None and not entry.value.online
        assert [s.online for s in states][:1] == [True] and states[-1].online is False
        assert states[-1].reason == "station ended the session"


async def test_ctl_source_list_and_show(nats_server: NatsServer) -> None:
    async with running_ingest(nats_server.url) as ingest:
        token = await add_station(ingest, "jm", "江门台")
        async with publishing(ingest, "jm", token, name="江门台", mode="packets", size=(320, 180)):
            await wait_online(ingest, "jm")
            listed = await asyncio.to_thread(
                ctl, nats_server.url, "source", "list", "--wait", "1.5"
            )
            shown = await asyncio.to_thread(ctl, nats_server.url, "source", "show", "jm")
        assert listed.returncode == 0, listed.stderr
        row = next(line for line in listed.stdout.splitlines() if line.startswith("jm "))
        assert "江门台" in row and "whip" in row and "320x180 H264/opus" in row
        assert shown.returncode == 0, shown.stderr
        # (the CLI also prints its bus log lines on stdout: read the JSON document alone)
        detail, _ = json.JSONDecoder().raw_decode(shown.stdout[shown.stdout.index("{") :])
        assert detail["state"]["online"] is True
        assert detail["state"]["handle"]["name"] == "source/jm"
        assert detail["stats"]["width"] == 320
        missing = await asyncio.to_thread(ctl, nats_server.url, "source", "show", "nope")
        assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr


async def test_restart_marks_sources_left_online_offline(nats_server: NatsServer) -> None:
    grpc_port = free_port()
    endpoint = f"127.0.0.1:{grpc_port}"
    bus = Bus(nats_server.url, "test-reconcile")
    await bus.connect()
    try:
        bucket = await bus.kv(SOURCES_BUCKET, control_pb2.SourceState)
        ghost = control_pb2.SourceState(
            source="ghost",
            online=True,
            handle=control_pb2.StreamHandle(name="source/ghost", endpoint=endpoint),
        )
        await bucket.put("ghost", ghost)
        async with running_ingest(nats_server.url, grpc_addr=endpoint):
            entry = await bucket.get("ghost")
            assert entry is not None and not entry.value.online
            assert entry.value.reason == "ingest restarted"
    finally:
        await bus.drain()
