"""The GStreamer WHIP test's inside: run it in a network namespace that has only loopback.

    unshare -n sh -c 'ip link set lo up && exec python -m tests.support.gst_whip_scene OUT.json'

Everything a packet could go to lives in that namespace: a nats-server, an ingest service (ICE
on 127.0.0.1 only), the GStreamer publisher (`tests/support/gst_whip.py`, webrtcbin, run by the
system Python for its GObject bindings) and a gRPC subscriber. For each codec the publisher goes
live on a station of its own, the subscriber gathers frames, then the publisher DELETEs its
session. What was seen is written to OUT.json for the test outside to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.common.bus import subject
from services.common.gen.baycast.v1 import control_pb2, media_pb2
from services.common.media import proto_to_i420, proto_to_pcm
from services.ingest.service import IngestService
from tests.support.loopback_scene import scene_main
from tests.support.nats import NatsServer
from tests.support.station import add_station, collect, running_ingest, wait_online, whip_url

SYSTEM_PYTHON = "/usr/bin/python3"
CLIENT = Path(__file__).with_name("gst_whip.py")
CODECS = ("vp8", "h264")
TONE_HZ = {"vp8": 660.0, "h264": 880.0}
WIDTH, HEIGHT = 320, 180
STRIP = HEIGHT // 6  # the publisher's moving-ball strip under the bars (gst_whip.pipeline_text)
BARS = 7  # videotestsrc pattern=smpte100: seven bars, white to blue
SDP_FACTS = ("a=group:", "a=setup:", "a=rtpmap:", "a=fmtp:", "a=rtcp-mux", "a=mid:")
VIDEO_FRAMES = 50  # two seconds at 25 fps
AUDIO_FRAMES = 100  # two seconds of 20 ms frames


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
        raise RuntimeError(f"the GStreamer publisher exited ({client.returncode}) first")
    exited.cancel()
    online.result()


async def one_codec(ingest: IngestService, codec: str, out: dict[str, Any]) -> None:
    station = f"gst-{codec}"
    token = await add_station(ingest, station, f"GStreamer {codec}")
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
        SYSTEM_PYTHON,
        str(CLIENT),
        whip_url(ingest, station),
        "--codec",
        codec,
        "--seconds",
        "40",
        "--size",
        f"{WIDTH}x{HEIGHT}",
        "--tone-hz",
        str(TONE_HZ[codec]),
        "--ice-host",
        "127.0.0.1",
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
    seen: dict[str, Any] = {"events": events}
    out[codec] = seen
    try:
        started = time.monotonic()
        await until_online(ingest, station, client)
        seen["online_after_s"] = round(time.monotonic() - started, 3)
        live = ingest.sources.live[station]
        seen["protocol"] = live.state.protocol
        seen["video_codec"] = live.state.video.codec
        seen["audio_codec"] = live.state.audio.codec
        frames = await collect(
            ingest,
            f"source/{station}",
            media_pb2.Rendition(width=WIDTH, height=HEIGHT, audio_channels=1),
            video=VIDEO_FRAMES,
            audio=AUDIO_FRAMES,
            timeout=20,
        )
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
                "decode_errors": last.decode_errors,
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
        seen["certificate"] = key_type(by_event["connected"]["certificate"])
        seen["sent"] = by_event["sent"]["streams"]
        seen["delete_status"] = by_event["deleted"]["status"]
    finally:
        if client.returncode is None:
            client.kill()
            await client.wait()
        await asyncio.wait_for(asyncio.gather(*readers), 5)
        seen["client_stderr"] = "".join(errors)[-3000:]


async def drive(out: dict[str, Any]) -> None:
    nats = NatsServer().start()
    try:
        async with running_ingest(nats.url) as ingest:
            for codec in CODECS:
                await one_codec(ingest, codec, out)
    finally:
        nats.cleanup()


if __name__ == "__main__":
    scene_main(lambda out, _path: drive(out), 150)
