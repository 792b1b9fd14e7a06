"""What the foreign-publisher WHIP tests share: watch a publisher go live, take frames, stop it.

A scene (tests/support/gst_whip_scene.py, tests/support/obs_whip_scene.py) runs in a network
namespace that has only loopback (tests/support/loopback_scene.py): a nats-server, an ingest
service (ICE on 127.0.0.1 only), the publisher as a process (gathering on 127.0.0.1 only) and a
gRPC subscriber. Each publisher sends the same picture, SMPTE 100 % bars over the top five sixths
and a moving ball in the strip below, and a sine tone; it prints one JSON line per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.common.bus import subject
from services.common.gen.baycast.v1 import control_pb2, media_pb2
from services.common.media import proto_to_i420, proto_to_pcm
from services.ingest.service import IngestService
from tests.support.nats import NatsServer
from tests.support.station import collect, running_ingest, wait_online

WIDTH, HEIGHT = 320, 180
STRIP = HEIGHT // 6  # the publisher's moving-ball strip under the bars
BARS = 7  # SMPTE 100 % bars, white to blue
SDP_FACTS = ("a=group:", "a=setup:", "a=rtpmap:", "a=fmtp:", "a=rtcp-mux", "a=mid:")
VIDEO_FRAMES = 50  # two seconds at 25 fps
AUDIO_FRAMES = 100  # two seconds of 20 ms frames
TOLERANCE = 14  # codec error on flat areas, in 8-bit code values
# The bars in BT.601 studio range, left to right: (Y, U, V) from the RGB primaries
# (Y = 16 + 65.481 R + 128.553 G + 24.966 B ...), as videotestsrc pattern=smpte100 paints them.
BAR_YUV = {
    "white": (235, 128, 128),
    "yellow": (210, 16, 146),
    "cyan": (170, 166, 16),
    "green": (145, 54, 34),
    "magenta": (106, 202, 222),
    "red": (81, 90, 240),
    "blue": (41, 240, 110),
}


def planes(frame: media_pb2.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = proto_to_i420(frame).reshape(-1)
    w, h = frame.width, frame.height
    cw, ch = w // 2, h // 2
    return (
        image[: w * h].reshape(h, w),
        image[w * h : w * h + cw * ch].reshape(ch, cw),
        image[w * h + cw * ch :].reshape(ch, cw),
    )


def bar_yuv(frame: media_pb2.VideoFrame) -> list[list[int]]:
    """(Y, U, V) at the middle of each bar, halfway down the bars."""
    y_plane, u_plane, v_plane = planes(frame)
    y = (frame.height - STRIP) // 2
    out = []
    for i in range(BARS):
        x = int((i + 0.5) * frame.width / BARS)
        out.append([int(y_plane[y, x]), int(u_plane[y // 2, x // 2]), int(v_plane[y // 2, x // 2])])
    return out


def ball_x(frame: media_pb2.VideoFrame) -> int:
    """The column where the strip under the bars is brightest: where the ball is."""
    strip = planes(frame)[0][frame.height - STRIP + 2 : frame.height - 2].astype(np.int64)
    return int(np.argmax(strip.sum(axis=0)))


def sdp_facts(sdp: str) -> list[str]:
    return [line for line in sdp.splitlines() if line.startswith(SDP_FACTS)]


def key_type(pem: str) -> str:
    """ "RSA-2048", "EC-secp256r1"... of a PEM certificate."""
    if not pem:
        return ""
    key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC-{key.curve.name}"
    return type(key).__name__


def dominant_hz(frames: list[media_pb2.AudioFrame]) -> float:
    pcm = np.concatenate([proto_to_pcm(f)[:, 0] for f in frames]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / frames[0].sample_rate)[int(np.argmax(spectrum))])


async def read_events(stream: asyncio.StreamReader, events: list[dict[str, Any]]) -> None:
    async for line in stream:
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))


async def read_text(stream: asyncio.StreamReader, lines: list[str]) -> None:
    async for line in stream:
        lines.append(line.decode(errors="replace"))


async def until_online(
    ingest: IngestService, station: str, client: asyncio.subprocess.Process
) -> None:
    """Until the source is online; fails at once if the publisher exits first."""
    online = asyncio.create_task(wait_online(ingest, station, timeout=25))
    exited = asyncio.create_task(client.wait())
    await asyncio.wait({online, exited}, return_when=asyncio.FIRST_COMPLETED)
    if not online.done():
        online.cancel()
        raise RuntimeError(f"the publisher exited ({client.returncode}) first")
    exited.cancel()
    online.result()


async def watch(
    ingest: IngestService, station: str, argv: list[str], token: str, seen: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Start the publisher `argv` (its token in BAYCAST_STATION_TOKEN) on `station`, wait until
    its source is online, gather frames and statistics into `seen`, stop it with SIGTERM (it
    DELETEs its session on the way out); the publisher's JSON events, by name."""
    states: list[control_pb2.SourceState] = []
    stats: list[control_pb2.SourceStats] = []

    async def on_state(state: control_pb2.SourceState, _subject: str) -> None:
        states.append(state)

    async def on_stats(item: control_pb2.SourceStats, _subject: str) -> None:
        stats.append(item)

    await ingest.bus.subscribe(
        subject("source", station, "state"), control_pb2.SourceState, on_state
    )
    await ingest.bus.subscribe(
        subject("source", station, "stats"), control_pb2.SourceStats, on_stats
    )
    client = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, "BAYCAST_STATION_TOKEN": token},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert client.stdout is not None and client.stderr is not None
    events: list[dict[str, Any]] = []
    errors: list[str] = []
    readers = [
        asyncio.create_task(read_events(client.stdout, events)),
        asyncio.create_task(read_text(client.stderr, errors)),
    ]
    seen["events"] = events
    try:
        started = time.monotonic()
        await until_online(ingest, station, client)
        seen["online_after_s"] = round(time.monotonic() - started, 3)
        live = ingest.sources.live[station]
        seen["protocol"] = live.state.protocol
        seen["video_codec"] = live.state.video.codec
        seen["audio_codec"] = live.state.audio.codec
        # Payloads that failed to decode before the frames were taken (a start whose first
        # packets were lost) are the session's, not the frames'.
        errors_before = (await live.source.transport_stats()).decode_errors
        frames = await collect(
            ingest,
            f"source/{station}",
            media_pb2.Rendition(width=WIDTH, height=HEIGHT, audio_channels=1),
            video=VIDEO_FRAMES,
            audio=AUDIO_FRAMES,
            timeout=20,
        )
        seen["decode_errors_while_taken"] = (
            await live.source.transport_stats()
        ).decode_errors - errors_before
        frames.video, frames.audio = frames.video[:VIDEO_FRAMES], frames.audio[:AUDIO_FRAMES]
        seen["video_sizes"] = sorted({(f.width, f.height) for f in frames.video})
        seen["video_frames"] = len(frames.video)
        seen["bars"] = [bar_yuv(f) for f in frames.video]
        seen["ball_x"] = [ball_x(f) for f in frames.video]
        pts = [f.pts_us for f in frames.video]
        seen["pts_step_us"] = float(np.median(np.diff(pts)))
        seen["pts_span_us"] = pts[-1] - pts[0]
        seen["audio_formats"] = sorted({(f.sample_rate, f.channels) for f in frames.audio})
        seen["audio_frames"] = len(frames.audio)
        seen["tone_hz"] = dominant_hz(frames.audio[10:])
        seen["state_fps"] = ingest.sources.live[station].state.video.fps
        seen["state_size"] = [live.state.video.width, live.state.video.height]
        for _ in range(40):
            if stats:
                break
            await asyncio.sleep(0.1)
        if stats:
            last = stats[-1]
            seen["stats"] = {
                "fps": last.fps,
                "bitrate_kbps": last.bitrate_kbps,
                "audio_level_dbfs": last.audio_level_dbfs,
                "black": last.black,
                "silent": last.silent,
                "frozen": last.frozen,
            }
        # Stop the publisher: it DELETEs its session on the way out.
        client.send_signal(signal.SIGTERM)
        seen["client_rc"] = await asyncio.wait_for(client.wait(), 20)
        for _ in range(100):
            if station not in ingest.sources.live:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        seen["live_after_delete"] = sorted(ingest.sources.live)
        seen["states"] = [(s.online, s.reason) for s in states]
        by_event = {e["event"]: e for e in events}
        seen["offer"] = sdp_facts(by_event["offered"]["offer"])
        seen["answer"] = sdp_facts(by_event["answered"]["answer"])
        seen["delete_status"] = by_event["deleted"]["status"]
        return by_event
    finally:
        if client.returncode is None:
            client.kill()
            await client.wait()
        await asyncio.wait_for(asyncio.gather(*readers), 5)
        seen["client_stderr"] = "".join(errors)[-3000:]


async def with_ingest(scene: Callable[[IngestService], Awaitable[None]]) -> None:
    """Run `scene` against an ingest service and its own nats-server, both in here."""
    nats = NatsServer().start()
    try:
        async with running_ingest(nats.url) as ingest:
            await scene(ingest)
    finally:
        nats.cleanup()


def shows_bars(bars: list[list[int]]) -> bool:
    return all(
        max(abs(a - b) for a, b in zip(got, want, strict=True)) <= TOLERANCE
        for want, got in zip(BAR_YUV.values(), bars, strict=True)
    )


def assert_published(seen: dict[str, Any], encoding: str, tone_hz: float) -> None:
    """What `watch` saw of a publisher that sent the bars, the ball and the tone, then stopped."""
    # Online with the codecs the publisher encoded.
    assert seen["protocol"] == "whip" and seen["online_after_s"] < 10
    assert seen["video_codec"] == encoding and seen["audio_codec"] == "opus"
    assert seen["state_size"] == [WIDTH, HEIGHT] and seen["state_fps"] == 25.0
    # Frames at the asked size showing the bars, in their colours, from the first good frame to
    # the last. On a loaded machine the first packets of a stream can be lost: the decoder then
    # conceals a few frames (all zeros) until the keyframe the loss made it ask for arrives.
    assert seen["video_sizes"] == [[WIDTH, HEIGHT]] and seen["video_frames"] == VIDEO_FRAMES
    good = [shows_bars(bars) for bars in seen["bars"]]
    leading = good.index(True) if True in good else len(good)
    assert leading <= 10, f"{encoding}: no frame showed the bars before frame {leading}"
    assert all(good[leading:]), (
        f"{encoding}: frames {[i for i, g in enumerate(good) if not g]} lost the bars"
    )
    # Fresh frames 40 ms apart, and the ball under the bars moves.
    # (A frame a loaded machine drops on the way widens the span by one interval, no more.)
    assert seen["pts_step_us"] == 40_000 and 49 * 40_000 <= seen["pts_span_us"] <= 55 * 40_000
    assert len(set(seen["ball_x"])) >= 10 and max(seen["ball_x"]) - min(seen["ball_x"]) > 40
    # The tone, mono 48 kHz as asked, at the publisher's frequency and level (0.3 ≈ -10.5 dBFS).
    assert seen["audio_formats"] == [[48000, 1]] and seen["audio_frames"] == AUDIO_FRAMES
    assert abs(seen["tone_hz"] - tone_hz) < 3
    stats = seen["stats"]
    assert 20 < stats["fps"] < 30 and stats["bitrate_kbps"] > 50
    assert -13 < stats["audio_level_dbfs"] < -8
    assert not (stats["black"] or stats["silent"] or stats["frozen"])
    # While the frames were taken, decode errors only with a concealed start.
    assert seen["decode_errors_while_taken"] == 0 or leading > 0
    # DELETE ended the session: 200, offline with the station's reason.
    assert seen["client_rc"] == 0 and seen["delete_status"] == 200
    assert seen["live_after_delete"] == []
    # Online (updates while online, e.g. a format measured later, may repeat it), then offline.
    states = [s for i, s in enumerate(seen["states"]) if i == 0 or s != seen["states"][i - 1]]
    assert states == [[True, ""], [False, "station ended the session"]]
