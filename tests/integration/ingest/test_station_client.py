"""The station client: live-encoded card, reconnection after a drop, and `baycast station`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from services.cli import build_parser
from services.common.gen.baycast.v1 import control_pb2, media_pb2
from services.ingest.service import IngestService
from services.ingest.webrtc_source import WhipSource
from services.station.cli import track_factory
from services.station.publisher import WhipPublisher
from services.station.testcard import TestCard, tone_hz
from tests.integration.ingest.test_whip_publish import assert_card, dominant_hz
from tests.support.nats import NatsServer
from tests.support.station import (
    add_station,
    collect,
    publishing,
    running_ingest,
    wait_online,
    whip_url,
)

pytestmark = pytest.mark.timeout(90)


def start_logged(log_path: Path, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )


async def test_live_card_reconnects_after_the_session_drops(nats_server: NatsServer) -> None:
    async with running_ingest(nats_server.url) as ingest:
        token = await add_station(ingest, "zh", "珠海台")
        async with publishing(ingest, "zh", token, mode="live", size=(480, 270), fps=15) as pub:
            await wait_online(ingest, "zh")
            got = await collect(ingest, "source/zh", media_pb2.Rendition(no_audio=True), video=3)
            assert (got.video[-1].width, got.video[-1].height) == (480, 270)
            assert_card(got.video[-1], pub.card)
            assert ingest.sources.live["zh"].source.video_codec == "VP8"

            # Ingest drops the session; the station notices and publishes again.
            await ingest.sources.stop("zh", "dropped by test")
            for _ in range(200):
                if pub.publisher.sessions >= 2 and "zh" in ingest.sources.live:
                    break
                await asyncio.sleep(0.1)
            assert pub.publisher.sessions == 2
            await wait_online(ingest, "zh")
            got = await collect(
                ingest,
                "source/zh",
                media_pb2.Rendition(width=240, height=136, no_audio=True),
                video=3,
            )
            assert_card(got.video[-1], pub.card)


async def test_baycast_station_command_publishes_until_signalled(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with running_ingest(nats_server.url) as ingest:
        token = await add_station(ingest, "fs", "佛山台")
        proc = start_logged(
            tmp_path / "station.log",
            [
                sys.executable,
                "-m",
                "services.cli",
                "station",
                "--whip",
                whip_url(ingest, "fs"),
                "--name",
                "佛山台",
                "--size",
                "320x180",
                "--mode",
                "packets",
            ],
            {"BAYCAST_STATION_TOKEN": token, "BAYCAST_LOG_FORMAT": "json"},
        )
        try:
            await wait_online(ingest, "fs", timeout=30)
            got = await collect(ingest, "source/fs", media_pb2.Rendition(no_audio=True), video=3)
            assert_card(got.video[-1], TestCard("fs", "佛山台", 320, 180))
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 15) == 0
            for _ in range(100):
                if "fs" not in ingest.sources.live:
                    break
                await asyncio.sleep(0.1)
            assert "fs" not in ingest.sources.live  # the client DELETEd its session
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert token not in (tmp_path / "station.log").read_text()


async def assert_ffmpeg_card(ingest: IngestService, station: str) -> None:
    """The source `station` is online with the muxer's card (H.264) and tone (Opus), decoded."""
    await wait_online(ingest, station, timeout=30)
    got = await collect(
        ingest, f"source/{station}", media_pb2.Rendition(audio_channels=1), video=3, audio=50
    )
    assert ingest.sources.live[station].source.video_codec == "H264"
    assert_card(got.video[-1], TestCard(station, station, 320, 180))
    assert abs(dominant_hz(got.audio[-40:]) - tone_hz(station)) < 15


def publisher_curve(ingest: IngestService, station: str) -> str:
    """The curve of the publisher's DTLS certificate, as ingest's DTLS transport received it."""
    source = ingest.sources.live[station].source
    assert isinstance(source, WhipSource)
    dtls = source.pc.getTransceivers()[0].receiver.transport
    key = dtls._ssl.get_peer_certificate(as_cryptography=True).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key.curve.name


async def test_ffmpeg_whip_muxer_publishes(nats_server: NatsServer, tmp_path: Path) -> None:
    """A non-aiortc peer: FFmpeg's WHIP muxer (H.264 + Opus), in its own process, given a P-256
    certificate with `-cert_file/-key_file`."""
    async with running_ingest(nats_server.url) as ingest:
        token = await add_station(ingest, "ffm", "FFmpeg台")
        proc = start_logged(
            tmp_path / "push.log",
            [sys.executable, "-m", "tests.support.whip_push", whip_url(ingest, "ffm"), "8"],
            {"BAYCAST_STATION_TOKEN": token},
        )
        try:
            await assert_ffmpeg_card(ingest, "ffm")
            assert publisher_curve(ingest, "ffm") == "secp256r1"
        finally:
            proc.kill()
            proc.wait()


async def test_ffmpeg_whip_muxer_publishes_with_its_own_p224_certificate(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """The station engineer's short command: no `-cert_file`. FFmpeg 8.1 with GnuTLS (PyAV's)
    makes its certificate on P-224, which the OpenSSL of the `cryptography` wheel has no group
    for; ingest grafts one (`dtls_p224`, ADR 0013) and the source goes online."""
    async with running_ingest(nats_server.url) as ingest:
        token = await add_station(ingest, "ffo", "FFmpeg台")
        argv = [sys.executable, "-m", "tests.support.whip_push", whip_url(ingest, "ffo"), "8"]
        proc = start_logged(
            tmp_path / "push.log", [*argv, "--own-certificate"], {"BAYCAST_STATION_TOKEN": token}
        )
        try:
            await assert_ffmpeg_card(ingest, "ffo")
            # If FFmpeg makes its own certificate on P-256 one day (RFC 8827's curve), this
            # fails: the graft is then needed no more for FFmpeg (see ADR 0013).
            assert publisher_curve(ingest, "ffo") == "secp224r1"
        finally:
            proc.kill()
            proc.wait()


async def test_ffmpeg_whip_muxer_as_dtls_client_with_p224_ends_with_the_dtls_reason(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """With `-whip_flags dtls_active` the muxer is the DTLS client and ingest the server, and
    OpenSSL as a server also wants the curve of the client's certificate among the client's own
    groups, which GnuTLS's are not: the handshake fails, the source ends with a reason that says
    so, and the session's slot is given back."""
    async with running_ingest(nats_server.url) as ingest:
        token = await add_station(ingest, "ffc", "FFmpeg台")
        states: list[control_pb2.SourceState] = []

        async def on_state(state: control_pb2.SourceState, _subject: str) -> None:
            states.append(state)

        await ingest.bus.subscribe("baycast.v1.source.ffc.state", control_pb2.SourceState, on_state)
        argv = [sys.executable, "-m", "tests.support.whip_push", whip_url(ingest, "ffc"), "8"]
        proc = start_logged(
            tmp_path / "push.log",
            [*argv, "--own-certificate", "--dtls-active"],
            {"BAYCAST_STATION_TOKEN": token},
        )
        try:
            assert await asyncio.to_thread(proc.wait, 60) != 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for _ in range(100):
            if states:
                break
            await asyncio.sleep(0.1)
        assert [(s.online, s.reason.split(" (")[0]) for s in states] == [
            (False, "DTLS handshake failed")
        ]
        assert "ffc" not in ingest.sources.live and ingest.whip.sessions == {}


def write_card_file(path: Path, card: TestCard, seconds: int = 2, fps: int = 25) -> None:
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = card.width, card.height, "yuv420p"
        audio = out.add_stream("aac", rate=48_000, layout="mono")
        for n in range(seconds * fps):
            frame = card.video_frame(n, 1000.0 + n / fps)
            frame.pts = n
            out.mux(video.encode(frame))
            samples = card.tone(n * 1920, 1920).reshape(1, -1)
            sound = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            sound.sample_rate, sound.pts = 48_000, n * 1920
            out.mux(audio.encode(sound))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))


async def test_station_publishes_a_media_file(nats_server: NatsServer, tmp_path: Path) -> None:
    card = TestCard("zq", "肇庆台", 320, 180)
    path = tmp_path / "card.mp4"
    await asyncio.to_thread(write_card_file, path, card)
    async with running_ingest(nats_server.url) as ingest:
        token = await add_station(ingest, "zq", "肇庆台")
        args = build_parser().parse_args(
            ["station", "--whip", whip_url(ingest, "zq"), "--source", str(path)]
        )
        make_tracks, h264_only = track_factory(args)
        publisher = WhipPublisher(args.whip, token, make_tracks, h264_only=h264_only)
        stop = asyncio.Event()
        task = asyncio.create_task(publisher.run(stop))
        try:
            await wait_online(ingest, "zq")
            got = await collect(
                ingest, "source/zq", media_pb2.Rendition(audio_channels=1), video=3, audio=25
            )  # 25 audio messages of 40 ms: one second
            assert_card(got.video[-1], card)
            assert abs(dominant_hz(got.audio[-20:]) - tone_hz("zq")) < 15
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
