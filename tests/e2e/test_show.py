"""`baycast up` end to end: the demo show runs, its HLS and recording decode, and Ctrl-C is clean.

One run of about 30 s serves every check (starting the platform is the expensive part). Four
city stations and the two reporters keep it light enough for a busy 2-core machine; the show,
its graphics and its rundown are the ones `make run` plays.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nats.js.api
import numpy as np
import pytest

from services.common.bus import PREFIX, Bus, decode
from services.common.gen.baycast.v1 import rundown_pb2
from services.mixer.rundown import ASRUN_STREAM
from services.up import demo
from tests.support.media_files import open_media
from tests.support.nats import free_port, permission_violations
from tests.support.processes import alive, children_of, stop_all

RUN_SECONDS = 32
READY_TIMEOUT_S = 120
WIDTH, HEIGHT = demo.FORMATS["720p"]
SCALE = WIDTH / demo.REFERENCE[0]
# Regions of the standing graphics, from their templates (1080p reference, scaled to 720p).
LOGO = tuple(round(v * SCALE) for v in (96, 54, 426, 140))  # x0, y0, x1, y1
CLOCK = tuple(round(v * SCALE) for v in (1564, 124, 1824, 176))


@dataclass
class Segment:
    path: Path
    start: datetime.datetime  # EXT-X-PROGRAM-DATE-TIME


@dataclass
class Frame:
    time: datetime.datetime
    rgb: np.ndarray


def parse_playlist(text: str) -> list[tuple[str, datetime.datetime]]:
    out = []
    pdt = None
    for line in text.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = datetime.datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00"))
        elif line and not line.startswith("#") and pdt is not None:
            out.append((line, pdt))
            pdt = None
    return out


async def read_asrun(nats_url: str) -> list[rundown_pb2.AsRunEntry]:
    bus = Bus(nats_url, "e2e-asrun")
    await bus.connect()
    try:
        sub = await bus.nc.jetstream().subscribe(
            PREFIX + f"prod.{demo.PRODUCTION}.asrun",
            stream=ASRUN_STREAM,
            ordered_consumer=True,
            deliver_policy=nats.js.api.DeliverPolicy.ALL,
        )
        entries = []
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except TimeoutError:
                break
            entries.append(decode(msg.data, rundown_pb2.AsRunEntry))
        await sub.unsubscribe()
        return entries
    finally:
        await bus.drain()


def decode_video(segments: list[Segment], every: int) -> list[Frame]:
    frames = []
    for seg in segments:
        with open_media(seg.path) as container:
            stream = container.streams.video[0]
            first_pts = None
            for i, frame in enumerate(container.decode(stream)):
                first_pts = frame.time if first_pts is None else first_pts
                if i % every == 0:
                    t = seg.start + datetime.timedelta(seconds=frame.time - first_pts)
                    frames.append(Frame(t, frame.to_ndarray(format="rgb24")))
    return frames


@pytest.mark.timeout(360)
def test_the_demo_show_end_to_end(tmp_path: Path) -> None:
    state = tmp_path / "state"
    log_path = tmp_path / "up.log"
    web_port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.cli",
                "up",
                "--stations",
                "4",
                "--state-dir",
                str(state),
                "--web-port",
                str(web_port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
        )
    try:
        endpoints_file = state / "endpoints.json"
        deadline = time.monotonic() + READY_TIMEOUT_S
        endpoints: dict[str, object] = {}
        while "web" not in endpoints:
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the demo did not come up:\n" + log_path.read_text()
            time.sleep(0.5)
            if endpoints_file.exists():
                endpoints = json.loads(endpoints_file.read_text())
        started = time.monotonic()

        with urllib.request.urlopen(str(endpoints["web"]), timeout=5) as resp:
            page = resp.read().decode()
        assert resp.status == 200 and demo.TITLE in page
        # The director's login, as `baycast up` printed it, opens the control room.
        services = endpoints["services"]
        assert isinstance(services, dict)
        me = urllib.request.Request(
            services["control"]["http"] + "/api/me",
            headers={"Authorization": f"Bearer {endpoints['operator_token']}"},
        )
        with urllib.request.urlopen(me, timeout=5) as resp:
            assert json.loads(resp.read())["operator"]["name"] == demo.DIRECTOR_NAME
        assert oct(endpoints_file.stat().st_mode & 0o777) == "0o600"

        # Keep every HLS segment as it appears (the live playlist slides and deletes old ones).
        hls = state / "data" / "hls" / demo.PRODUCTION
        kept = tmp_path / "hls"
        kept.mkdir()
        segments: dict[str, Segment] = {}
        while time.monotonic() - started < RUN_SECONDS:
            playlist = hls / "index.m3u8"
            if playlist.exists():
                for name, pdt in parse_playlist(playlist.read_text()):
                    if name not in segments and (hls / name).exists():
                        shutil.copy(hls / name, kept / name)
                        segments[name] = Segment(kept / name, pdt)
            time.sleep(0.5)
        asrun = asyncio.run(read_asrun(str(endpoints["nats"])))
        children = children_of(proc.pid)
        assert len(children) >= 8  # nats, six services, the stations

        proc.send_signal(signal.SIGINT)
        stop_started = time.monotonic()
        assert proc.wait(timeout=30) == 0, log_path.read_text()[-3000:]
        print(f"stopped in {time.monotonic() - stop_started:.1f} s")
        assert time.monotonic() - stop_started < 15
        assert [pid for pid in children if alive(pid)] == []
        # Each service ran as its own NATS user: nothing it did was beyond its grants.
        assert permission_violations(log_path.read_text()) == []
    finally:
        stop_all(proc)

    # -- the HLS output ------------------------------------------------------------------------
    ordered = [segments[k] for k in sorted(segments)]
    assert len(ordered) >= 8, f"only {len(ordered)} HLS segments in {RUN_SECONDS} s"
    with open_media(ordered[2].path) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.width, video.codec_context.height) == (WIDTH, HEIGHT)
        assert video.average_rate == 25
        assert (audio.codec_context.name, audio.rate, audio.channels) == ("aac", 48_000, 2)
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio)])
    rms_db = 20 * np.log10(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) + 1e-12)
    assert rms_db > -45, f"program audio at {rms_db:.1f} dBFS"

    frames = decode_video(ordered[1:], every=5)  # 5 frames a second
    luma = [float(f.rgb.mean()) for f in frames]
    assert min(luma) > 20, "a black frame went out"
    x0, y0, x1, y1 = LOGO
    logo = np.array([f.rgb[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0) for f in frames])
    assert (logo[:, 2] > logo[:, 0] + 30).all(), "the blue logo bug is not on every frame"
    cx0, cy0, cx1, cy1 = CLOCK
    clock = [f.rgb[cy0:cy1, cx0:cx1].astype(np.int16) for f in frames]
    # Frames 1 s of media apart (5 samples at 5 a second) straddle exactly one tick of the clock.
    changes = [np.abs(a - b).mean() > 2 for a, b in zip(clock[::5], clock[5::5], strict=False)]
    # A stalled machine can repeat a second now and then; most seconds must tick.
    assert len(changes) >= 10 and sum(changes) >= 0.8 * len(changes), changes

    # -- the rundown: cues in order, layout changes on screen at their cue times ---------------
    titles = [e.title for e in asrun if e.cue == "segment"]
    expected = [s.title for s in demo.rundown(demo.stations(4)).segments]
    assert titles[:4] == expected[: len(titles[:4])] and len(titles) >= 3, titles
    assert [e.time_us for e in asrun] == sorted(e.time_us for e in asrun)
    # The title film opened the show: rolled by its segment, and its end (5 s later, before the
    # segment's 8 s backstop) took the city wall.
    played = next(e for e in asrun if e.cue == "play")
    ended = next(e for e in asrun if e.cue == "clip-end")
    wall = next(e for e in asrun if e.cue == "segment" and e.segment == 1)
    assert played.ok and played.detail == ended.detail.split()[0] == demo.OPENER_SOURCE
    assert 4.5 < (ended.time_us - played.time_us) / 1e6 < 6.5, (played, ended)
    assert 0 <= wall.time_us - ended.time_us < 1_000_000
    layout_cues = [e for e in asrun if e.cue == "layout" and e.ok]
    centre = (slice(HEIGHT // 8, HEIGHT * 7 // 8), slice(WIDTH // 16, WIDTH * 15 // 16))

    def at(t: datetime.datetime) -> np.ndarray | None:
        near = min(frames, key=lambda f: abs((f.time - t).total_seconds()))
        if abs((near.time - t).total_seconds()) > 0.3:
            return None
        return near.rgb[centre].astype(np.int16)

    def change(t: datetime.datetime) -> float | None:
        """How much the picture changed from 1 s before `t` to 1 s after it."""
        a, b = at(t - datetime.timedelta(seconds=1)), at(t + datetime.timedelta(seconds=1))
        return None if a is None or b is None else float(np.abs(a - b).mean())

    cue_times = [
        datetime.datetime.fromtimestamp(e.time_us / 1e6, tz=datetime.UTC) for e in layout_cues
    ]
    quiet = [
        c
        for f in frames[::10]
        if all(abs((f.time - t).total_seconds()) > 3 for t in cue_times)
        and (c := change(f.time)) is not None
    ]
    baseline = float(np.median(quiet)) if quiet else 2.0
    checked = []
    for cue, t in zip(layout_cues, cue_times, strict=True):
        c = change(t)
        if c is not None:
            checked.append((cue.detail, round(c, 1)))
            assert c > baseline + 2, f"layout {cue.detail!r} at {t:%H:%M:%S.%f}: changed {c:.1f}"
    print(f"layout changes at their cues: {checked} (baseline {baseline:.1f})")
    assert checked, "no layout cue fell inside the decoded output"

    # -- the recording, after Ctrl-C -----------------------------------------------------------
    recordings = sorted((state / "data" / "recordings" / demo.PRODUCTION).rglob("*.ts"))
    assert recordings
    decoded = 0
    for path in recordings:
        with open_media(path) as container:
            decoded += sum(1 for _ in container.decode(container.streams.video[0]))
    duration = decoded / 25
    print(f"recording: {len(recordings)} file(s), {duration:.1f} s decoded")
    assert duration > RUN_SECONDS - 2
