"""Benchmark 3: latency, station capture → program, command → switched frame, capture → RTMP.

One station publishes over real WebRTC on loopback (aiortc, from this process) to the ingest
service; the mixer puts it on a 720p25 program; distribution pushes the program to nginx-rtmp.

* capture → program: every program frame carries `capture_time_us` (ingest derives it from the
  arrival of the station's RTP frames, `docs/adr/0003-ingest-webrtc.md`); this process
  subscribes to the program and takes `now - capture_time_us` per frame. Beside it, the true
  figure: the station's picture turns from dark to light at a known wall time (the frame
  handed to the encoder) and the first light program frame is timed as it arrives.
* command → switched frame: two card sources over the media plane; a `cut` is sent and the
  first program frame showing the other card's colour is timed as it arrives.
* capture → RTMP: the same dark/light flip, timed when the first light frame is decoded (PyAV)
  from the nginx-rtmp live stream the distribution service pushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import threading
import time
from dataclasses import dataclass, field

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from bench.harness import Result, Stat
from bench.platform import (
    Platform,
    add_output,
    card_peer,
    platform,
    rtmp_spec,
    video_frames,
    wait_live,
)
from services.common import ice
from services.common.gen.baycast.v1 import mixer_pb2
from services.common.media import proto_to_i420
from services.station.publisher import WhipPublisher
from services.up import demo
from tests.support.mixer import STATIONS, admin, cards, command
from tests.support.rtmp import RtmpServer

PROD = "bench-latency"
WIDTH, HEIGHT, FPS = 1280, 720, 25
STATION = demo.Station("lat", "延迟台", "延迟", "Latency")
STATION_SIZE = (640, 360)
DARK, LIGHT = 50, 200  # luma of the station's two pictures
COLLECT_S = 10.0
FLIP_TIMEOUT_S = 5.0
Cmd = mixer_pb2.MixerCommand


class FlipTrack(MediaStreamTrack):
    """A grey station picture, dark or light; `flip()` notes when the new one is captured."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        w, h = STATION_SIZE
        self.frames = []
        for luma in (DARK, LIGHT):
            image = np.full((h * 3 // 2, w), 128, dtype=np.uint8)
            image[:h] = luma
            self.frames.append(image)
        self.light = False
        self.flip_wall: float | None = None
        self._pending = False
        self._start: float | None = None
        self._count = 0

    def flip(self) -> None:
        self.light = not self.light
        self._pending = True

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._count / FPS
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = av.VideoFrame.from_ndarray(self.frames[self.light], format="yuv420p")
        frame.pts = self._count * 90_000 // FPS
        frame.time_base = fractions.Fraction(1, 90_000)
        self._count += 1
        if self._pending:
            self._pending = False
            self.flip_wall = time.time()
        return frame


@dataclass
class Seen:
    """Program frames as they arrived: (wall time, capture_time_us, luma at the centre)."""

    frames: list[tuple[float, int, int]] = field(default_factory=list)

    async def consume(self, p: Platform) -> None:
        async for message in video_frames(p, f"prod/{PROD}/program"):
            image = proto_to_i420(message.video)
            luma = int(image[HEIGHT // 2, WIDTH // 2])
            self.frames.append((time.time(), message.video.capture_time_us, luma))

    async def first(self, since: float, accept: object, timeout: float) -> float:
        """Arrival time of the first frame after `since` whose centre luma `accept`s."""
        assert callable(accept)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [w for w, _c, y in self.frames if w >= since and accept(y)]
            if hits:
                return hits[0]
            await asyncio.sleep(0.005)
        raise TimeoutError("no such program frame")


class RtmpWatcher:
    """Decodes the live RTMP stream in a thread: (wall time, centre luma) per frame."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: Exception | None = None

    def _run(self) -> None:
        try:
            with av.open(self.url, options={"fflags": "nobuffer", "rtmp_live": "live"}) as c:
                for frame in c.decode(video=0):
                    luma = frame.to_ndarray(format="gray")[frame.height // 2, frame.width // 2]
                    self.frames.append((time.time(), int(luma)))
                    if self.stop.is_set():
                        return
        except Exception as exc:  # reported in the result, not fatal
            self.error = exc

    def first(self, since: float, accept: object, timeout: float) -> float:
        assert callable(accept)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [w for w, y in self.frames if w >= since and accept(y)]
            if hits:
                return hits[0]
            time.sleep(0.01)
        raise TimeoutError("no such RTMP frame")


def _production(card_ids: list[str]) -> mixer_pb2.Production:
    p = mixer_pb2.Production(
        id=PROD, name="延迟", width=WIDTH, height=HEIGHT, fps=FPS, sample_rate=48_000, channels=2
    )
    p.sources.add(id=STATION.id, name=STATION.name)
    for cid, (_sid, name, _yuv) in zip(card_ids, STATIONS, strict=False):
        p.sources.add(id=cid, name=name)
    return p


@dataclass
class Figures:
    ingest_clock_ms: list[float]
    flip_program_ms: list[float]
    cut_ms: list[float]
    flip_rtmp_ms: list[float]
    rtmp_error: str


async def _run(runs: int) -> Figures:
    ice.configure(("127.0.0.1",))
    two = cards("lt", 2)
    card_ids = [c.name.removeprefix("source/") for c in two]
    card_luma = [c.yuv[0] for c in two]
    flips = max(3, 2 * runs)
    with RtmpServer() as rtmp:
        async with platform("latency") as p:
            with card_peer(p.launcher.nats_url_for("ingest"), "lt", 2):
                creds = await demo.register_stations(p.bus, [STATION], p.http("ingest"))
                track = FlipTrack()
                stop = asyncio.Event()
                publisher = WhipPublisher(creds[0]["whip"], creds[0]["token"], lambda: [track])
                publishing = asyncio.create_task(publisher.run(stop))
                seen = Seen()
                consumer: asyncio.Task[None] | None = None
                watcher = RtmpWatcher(rtmp.url("lat"))
                try:
                    await admin(p.bus, mixer_pb2.ProductionCommand(create=_production(card_ids)))
                    await command(p.bus, PROD, Cmd(cut=Cmd.Cut(source=STATION.id)), retry_for=20)
                    consumer = asyncio.create_task(seen.consume(p))
                    await seen.first(0, lambda y: abs(y - DARK) < 20, 30)  # the station is on
                    await add_output(p, PROD, rtmp_spec("lat", rtmp))
                    await wait_live(p, PROD, ["lat"])
                    watcher.thread.start()
                    # Steady state, then the ingest-clock latency of every program frame.
                    await asyncio.sleep(3)
                    begin = time.time()
                    await asyncio.sleep(COLLECT_S)
                    ingest_clock = [
                        (wall * 1e6 - cap) / 1000
                        for wall, cap, _y in seen.frames
                        if wall >= begin and cap > 0
                    ]
                    flip_program, flip_rtmp = [], []
                    for _ in range(flips):
                        t0 = time.time()
                        track.flip()
                        want = LIGHT if track.light else DARK
                        got = await seen.first(
                            t0, lambda y, w=want: abs(y - w) < 20, FLIP_TIMEOUT_S
                        )
                        assert track.flip_wall is not None
                        flip_program.append((got - track.flip_wall) * 1000)
                        with contextlib.suppress(TimeoutError):
                            hit = await asyncio.to_thread(
                                watcher.first, t0, lambda y, w=want: abs(y - w) < 20, FLIP_TIMEOUT_S
                            )
                            flip_rtmp.append((hit - track.flip_wall) * 1000)
                        await asyncio.sleep(1.0)
                    cut = []
                    for i in range(max(3, 2 * runs)):
                        target = i % 2
                        luma = card_luma[target]
                        t0 = time.time()
                        await command(p.bus, PROD, Cmd(cut=Cmd.Cut(source=card_ids[target])))
                        got = await seen.first(t0, lambda y, w=luma: abs(y - w) < 6, FLIP_TIMEOUT_S)
                        cut.append((got - t0) * 1000)
                        await asyncio.sleep(0.5)
                finally:
                    watcher.stop.set()
                    if consumer is not None:
                        consumer.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await consumer
                    stop.set()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(publishing, 10)
    error = f"{type(watcher.error).__name__}: {watcher.error}" if watcher.error else ""
    return Figures(ingest_clock, flip_program, cut, flip_rtmp, error)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def run(runs: int) -> list[Result]:
    f = asyncio.run(_run(runs))
    p50, p95, p99 = (_pct(f.ingest_clock_ms, q) for q in (50, 95, 99))
    flip = Stat.of(f.flip_program_ms)
    cut = Stat.of(f.cut_ms)
    frame_ms = 1000 / FPS
    results = [
        Result(
            name="Latency: station capture → program frame (WebRTC on loopback)",
            target="p95 ≤ 150 ms",
            measured=f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms "
            f"({len(f.ingest_clock_ms)} frames, ingest's capture clock)",
            reference=f"true capture → program, picture flips: {flip.fmt(' ms', 0)}",
            ratio=f"p95 = {p95 / 150:.2f} of the target",
            met=p95 <= 150,
            notes=[
                "`capture_time_us` is ingest's estimate (arrival-anchored, ADR 0003), so the "
                "percentiles cover ingest decode → mixer frame clock → program subscriber; the "
                "flips add the station's encoding, RTP and jitter buffer (the station is aiortc "
                "encoding live in the benchmark process). The mixer's frame clock holds a "
                "picture until its next tick (0-40 ms at 25 fps)."
            ],
        ),
        Result(
            name="Latency: cut command → first switched program frame",
            target=f"≤ one frame + 20 ms ({frame_ms + 20:.0f} ms)",
            measured=cut.fmt(" ms", 0),
            reference=f"one frame = {frame_ms:.0f} ms",
            ratio=f"{cut.median / (frame_ms + 20):.2f} of the target",
            met=cut.median <= frame_ms + 20,
            notes=[
                f"{len(f.cut_ms)} cuts between two card sources already subscribed; timed from "
                "sending the NATS request to the arrival of the first program frame with the "
                "new source's colour at this subscriber (includes the program frame's gRPC trip)."
            ],
        ),
    ]
    if f.flip_rtmp_ms:
        rtmp = Stat.of(f.flip_rtmp_ms)
        results.append(
            Result(
                name="Latency: station capture → frame decoded from the RTMP output",
                target="≤ 1 s",
                measured=rtmp.fmt(" ms", 0),
                reference=f"capture → program {flip.median:.0f} ms",
                ratio=f"{rtmp.median / 1000:.2f} of the target",
                met=rtmp.high <= 1000,
                notes=[
                    f"{len(f.flip_rtmp_ms)} picture flips, decoded with PyAV from nginx-rtmp's "
                    "live stream (the distribution encoder, its ffmpeg relay, nginx and the "
                    "player's demuxer are in the path)."
                ],
            )
        )
    else:
        results.append(
            Result(
                name="Latency: station capture → frame decoded from the RTMP output",
                target="≤ 1 s",
                measured="not measured",
                reference="—",
                ratio="—",
                met=None,
                notes=[f"the RTMP reader saw no flip: {f.rtmp_error or 'timed out'}"],
            )
        )
    return results
