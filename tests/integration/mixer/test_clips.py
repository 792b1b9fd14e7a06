"""Clips and stills played into the program by the real mixer (docs/adr/0022), checked from what
really came out: the HLS output of a real distribution service (what viewers get, its pictures
and sound decoded with PyAV), and the mixer's program itself, every frame of it, over gRPC.

The clip has its frame number burnt in as sixteen big blocks (eight bits, then the same bits
inverted, so a frame of anything else reads as no number) on a mid-grey ground, and a 1 kHz tone.
Big flat blocks survive H.264 at a low bitrate; the inverted row tells a number from a guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import av
import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from services.common import errors
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.gen.baycast.v1 import media_pb2, mixer_pb2, rundown_pb2
from services.common.house_format import prepare
from services.common.media import proto_to_i420
from services.common.media_library import MediaLibrary
from services.distribution.service import DistributionService
from services.distribution.settings import DistributionSettings
from services.mixer.service import MixerService
from tests.integration.mixer.conftest import CreateProduction
from tests.support.media_source import Card, FakeMediaServer
from tests.support.mixer import (
    asrun_log,
    close_to,
    command,
    frames,
    next_video,
    rundown,
    unique,
    yuv_at,
)
from tests.support.nats import NatsServer
from tests.support.secrets_key import session_key_file
from tests.support.services import running_service

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")

Cmd = mixer_pb2.MixerCommand
CUED = mixer_pb2.CLIP_RUN_STATE_CUED
PLAYING = mixer_pb2.CLIP_RUN_STATE_PLAYING
PAUSED = mixer_pb2.CLIP_RUN_STATE_PAUSED
ENDED = mixer_pb2.CLIP_RUN_STATE_ENDED
FAILED = mixer_pb2.CLIP_RUN_STATE_FAILED

WIDTH, HEIGHT, FPS = 1280, 720, 25
RATE = 48_000
TONE_HZ = 1000.0
COUNT_FRAMES = 100  # 4 s
INTRO_FRAMES = 30  # 1.2 s
CARD_RGB = (40, 150, 210)
STATION_YUV = (81, 90, 240)

# The number's blocks: two rows of eight, 96 px square, 32 px apart, centred.
BITS = 8
BLOCK = 96
GAP = 32
LEFT = (WIDTH - BITS * BLOCK - (BITS - 1) * GAP) // 2
TOP = (HEIGHT - 2 * BLOCK - GAP) // 2
GROUND, ONE, ZERO = 128, 235, 16
THRESHOLD = (ONE + ZERO) / 2
MARGIN = 50  # a block nearer the threshold than this is no bit


def block_origin(row: int, bit: int) -> tuple[int, int]:
    return LEFT + bit * (BLOCK + GAP), TOP + row * (BLOCK + GAP)


def number_picture(number: int) -> np.ndarray:
    """A packed I420 picture of `number`: row 0 its bits (most significant first), row 1 the
    same bits inverted."""
    image = np.full((HEIGHT * 3 // 2, WIDTH), 128, dtype=np.uint8)
    image[:HEIGHT] = GROUND
    for bit in range(BITS):
        value = (number >> (BITS - 1 - bit)) & 1
        for row, on in ((0, value), (1, 1 - value)):
            x, y = block_origin(row, bit)
            image[y : y + BLOCK, x : x + BLOCK] = ONE if on else ZERO
    return image


def read_number(luma: np.ndarray) -> int | None:
    """The number in a picture's luma plane (of any size), or None when it carries none."""
    scale = luma.shape[1] / WIDTH
    number = 0
    for bit in range(BITS):
        read = []
        for row in (0, 1):
            x, y = block_origin(row, bit)
            # The block's middle half: its edges blur in scaling and in the codec.
            x0, y0 = round((x + BLOCK / 4) * scale), round((y + BLOCK / 4) * scale)
            x1, y1 = round((x + 3 * BLOCK / 4) * scale), round((y + 3 * BLOCK / 4) * scale)
            level = float(luma[y0:y1, x0:x1].mean())
            if abs(level - THRESHOLD) < MARGIN:
                return None
            read.append(level > THRESHOLD)
        if read[0] == read[1]:
            return None
        number = number << 1 | int(read[0])
    return number


def write_clip(path: Path, count: int) -> Path:
    """`count` frames of 1280x720 25 fps H.264 with their numbers, and a 1 kHz tone (AAC)."""
    per_frame = RATE // FPS
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "16"}
        audio = out.add_stream("aac", rate=RATE, layout="stereo")
        for i in range(count):
            picture = av.VideoFrame.from_ndarray(number_picture(i), format="yuv420p")
            picture.pts, picture.time_base = i, Fraction(1, FPS)
            out.mux(video.encode(picture))
            t = (np.arange(per_frame) + i * per_frame) / RATE
            tone = (0.5 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
            sound = av.AudioFrame.from_ndarray(
                np.stack([tone, tone]), format="fltp", layout="stereo"
            )
            sound.sample_rate, sound.pts, sound.time_base = RATE, i * per_frame, Fraction(1, RATE)
            out.mux(audio.encode(sound))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    return path


def write_still(path: Path) -> Path:
    Image.new("RGB", (WIDTH, HEIGHT), CARD_RGB).save(path)
    return path


def card_yuv() -> tuple[int, int, int]:
    """The still's colour in BT.709 limited range, which the mixer's pictures are in."""
    r, g, b = CARD_RGB
    y = 16 + (0.2126 * r + 0.7152 * g + 0.0722 * b) * 219 / 255
    u = 128 + (-0.1146 * r - 0.3854 * g + 0.5 * b) * 224 / 255
    v = 128 + (0.5 * r - 0.4542 * g - 0.0458 * b) * 224 / 255
    return round(y), round(u), round(v)


@dataclass(frozen=True)
class MediaFiles:
    count: Path
    intro: Path
    card: Path
    count_house: Path  # `count` as `baycast ctl media add` stores it (ADR 0027)


@pytest.fixture(scope="module")
def media_files(tmp_path_factory: pytest.TempPathFactory) -> MediaFiles:
    folder = tmp_path_factory.mktemp("media")
    count = write_clip(folder / "count.mp4", COUNT_FRAMES)
    return MediaFiles(
        count,
        write_clip(folder / "intro.mp4", INTRO_FRAMES),
        write_still(folder / "card.png"),
        prepare(count, folder / "count-house.mp4"),
    )


@pytest.fixture
async def library(bus: Bus) -> MediaLibrary:
    return await MediaLibrary.open(bus, create=True)


@pytest.fixture
async def distribution(
    nats_server: NatsServer, tmp_path: Path
) -> AsyncIterator[DistributionService]:
    async with running_service(
        DistributionService,
        DistributionSettings,
        nats_server.url,
        data_dir=str(tmp_path / "data"),
        video_bitrate_kbps=800,
        audio_bitrate_kbps=128,
        x264_preset="ultrafast",
        keyframe_interval_s=1.0,
        hls_segment_s=1.0,
        hls_list_size=100,  # the whole test stays in the playlist
        secrets_key_file=session_key_file(),
    ) as service:
        yield service


@pytest.fixture
async def hls_output(
    bus: Bus, distribution: DistributionService
) -> AsyncIterator[Callable[[str], Awaitable[HlsOutput]]]:
    """Starts an HLS output of a production; removes it afterwards (from the shared bucket too:
    a distribution service started later would run it again)."""
    started: list[HlsOutput] = []

    async def start(prod: str) -> HlsOutput:
        output = HlsOutput(bus, distribution, prod)
        started.append(output)
        await output.start()
        return output

    yield start
    for output in started:
        with contextlib.suppress(Exception):
            await output.stop()


# -- the mixer -------------------------------------------------------------------------------


def clip_source(
    media_id: str, name: str, end: int = mixer_pb2.CLIP_END_HOLD
) -> mixer_pb2.ProductionSource:
    return mixer_pb2.ProductionSource(id=f"clip/{media_id}", name=name, end=end)


def show(prod: str, sources: list[mixer_pb2.ProductionSource]) -> mixer_pb2.Production:
    return mixer_pb2.Production(
        id=prod, name="启航·大湾区", width=WIDTH, height=HEIGHT, fps=FPS, sources=sources
    )


async def transport(
    bus: Bus, prod: str, source: str, action: int, position_ms: int = 0
) -> mixer_pb2.MixerState:
    move = Cmd.Transport(source=source, action=action, position_ms=position_ms)
    return await command(bus, prod, Cmd(transport=move))


async def cut(bus: Bus, prod: str, source: str) -> mixer_pb2.MixerState:
    return await command(bus, prod, Cmd(cut=Cmd.Cut(source=source)))


async def get(bus: Bus, prod: str) -> mixer_pb2.MixerState:
    return await command(bus, prod, Cmd(get=Cmd.Get()))


def clip_of(state: mixer_pb2.MixerState, source: str) -> mixer_pb2.ClipState | None:
    return next((c for c in state.clips if c.source == source), None)


async def wait_state(
    bus: Bus,
    prod: str,
    accept: Callable[[mixer_pb2.MixerState], bool],
    timeout: float = 10.0,
    what: str = "",
) -> mixer_pb2.MixerState:
    deadline = time.monotonic() + timeout
    while True:
        state = await get(bus, prod)
        if accept(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout} s: {state}")
        await asyncio.sleep(0.05)


async def wait_clip(
    bus: Bus, prod: str, source: str, run: int, timeout: float = 10.0
) -> mixer_pb2.ClipState:
    def has(state: mixer_pb2.MixerState) -> bool:
        clip = clip_of(state, source)
        return clip is not None and clip.state == run

    state = await wait_state(bus, prod, has, timeout, f"{source} {run}")
    clip = clip_of(state, source)
    assert clip is not None
    return clip


@dataclass
class ClipEvents:
    """`prod.<prod>.mixer.clips` as it came, with when it came."""

    events: list[tuple[float, mixer_pb2.ClipStates]] = field(default_factory=list)

    @classmethod
    async def subscribe(cls, bus: Bus, prod: str) -> ClipEvents:
        seen = cls()

        async def on_event(message: mixer_pb2.ClipStates, _subject: str) -> None:
            seen.events.append((time.monotonic(), message))

        await bus.subscribe(subject("prod", prod, "mixer", "clips"), mixer_pb2.ClipStates, on_event)
        return seen

    def of(self, source: str) -> list[tuple[float, int, mixer_pb2.ClipState]]:
        """(arrival, time_us, state) of `source` in every event."""
        return [
            (at, message.time_us, clip)
            for at, message in self.events
            for clip in message.clips
            if clip.source == source
        ]

    async def wait(self, source: str, run: int, timeout: float) -> float:
        """When the first event with `source` in `run` came."""
        deadline = time.monotonic() + timeout
        while True:
            for at, _, clip in self.of(source):
                if clip.state == run:
                    return at
            if time.monotonic() > deadline:
                raise AssertionError(f"{source} not {run} after {timeout} s: {self.of(source)}")
            await asyncio.sleep(0.02)


# -- the HLS output --------------------------------------------------------------------------


@dataclass
class Recording:
    """What the HLS output carried: each picture's output frame and number, and the sound."""

    pictures: list[tuple[int, int | None]] = field(default_factory=list)  # (frame, number)
    sound: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (start s, mono)

    def numbers(self) -> list[int | None]:
        return [n for _, n in self.pictures]

    def samples(self) -> tuple[float, np.ndarray]:
        """The sound as one mono signal, each part at its time, and the time of its start."""
        start = min(t for t, _ in self.sound)
        end = max(t + len(part) / RATE for t, part in self.sound)
        signal = np.zeros(round((end - start) * RATE) + 1, dtype=np.float32)
        for t, part in self.sound:
            at = round((t - start) * RATE)
            signal[at : at + len(part)] = part[: len(signal) - at]
        return start, signal


def decode_segment(data: bytes) -> Recording:
    found = Recording()
    with av.open(io.BytesIO(data), format="mpegts") as container:
        for decoded in container.decode(container.streams.video[0], container.streams.audio[0]):
            assert decoded.time is not None
            if isinstance(decoded, av.VideoFrame):
                luma = decoded.to_ndarray(format="yuv420p")[: decoded.height]
                found.pictures.append((round(decoded.time * FPS), read_number(luma)))
            else:
                found.sound.append((decoded.time, decoded.to_ndarray().mean(axis=0)))
    return found


class HlsOutput:
    """An HLS output of distribution for a production, read as a player reads it (over HTTP)."""

    def __init__(self, bus: Bus, service: DistributionService, prod: str) -> None:
        self.bus, self.prod = bus, prod
        self.base = f"http://127.0.0.1:{service.http.port}/hls/{prod}"
        self.fetched: list[str] = []
        self.recording = Recording()

    async def command(self, **kwargs: Any) -> dist.DistReply:
        name = subject("prod", self.prod, "dist", "cmd")
        request = dist.DistCommand(production=self.prod, **kwargs)
        for _ in range(50):
            try:
                return await self.bus.request(name, request, dist.DistReply, timeout=10)
            except errors.Unavailable:
                await asyncio.sleep(0.2)
        return await self.bus.request(name, request, dist.DistReply, timeout=10)

    async def start(self, timeout: float = 15.0) -> None:
        spec = dist.OutputSpec(id="web", kind=dist.OUTPUT_KIND_HLS, enabled=True)
        await self.command(add=dist.AddOutput(output=spec))
        deadline = time.monotonic() + timeout
        while True:
            reply = await self.command(list=dist.ListOutputs())
            state = reply.outputs[0]
            if state.status == dist.OUTPUT_STATUS_LIVE and state.media_seconds > 0.5:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the HLS output is not live after {timeout} s: {state}")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        await self.command(remove=dist.OutputRef(id="web"))

    async def read_new(self, http: aiohttp.ClientSession) -> None:
        async with http.get(f"{self.base}/index.m3u8") as resp:
            if resp.status != 200:
                return
            playlist = await resp.text()
        names = [line for line in playlist.splitlines() if line and not line.startswith("#")]
        assert self.fetched == names[: len(self.fetched)], "the playlist lost segments"
        for name in names[len(self.fetched) :]:
            async with http.get(f"{self.base}/{name}") as resp:
                assert resp.status == 200, name
                data = await resp.read()
            part = await asyncio.to_thread(decode_segment, data)
            self.recording.pictures += part.pictures
            self.recording.sound += part.sound
            self.fetched.append(name)

    async def record_until(
        self, done: Callable[[Recording], bool], timeout: float = 15.0
    ) -> Recording:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                await self.read_new(http)
                if done(self.recording):
                    return self.recording
                if time.monotonic() > deadline:
                    raise AssertionError(f"HLS after {timeout} s: {self.recording.numbers()[-60:]}")
                await asyncio.sleep(0.3)


def runs(numbers: Sequence[T]) -> list[tuple[T, int]]:
    """(number, how many frames in a row) for each run of one number."""
    out: list[tuple[T, int]] = []
    for n in numbers:
        if out and out[-1][0] == n:
            out[-1] = (n, out[-1][1] + 1)
        else:
            out.append((n, 1))
    return out


def play_stretches(
    pictures: list[tuple[int, int | None]], min_hold: int
) -> list[list[tuple[int, int]]]:
    """The pictures between the holds (a number standing `min_hold` frames or more)."""
    held = {n for n, count in runs([n for _, n in pictures]) if count >= min_hold}
    stretches: list[list[tuple[int, int]]] = [[]]
    for frame, number in pictures:
        assert number is not None
        if number in held:
            if stretches[-1]:
                stretches.append([])
        else:
            stretches[-1].append((frame, number))
    return [s for s in stretches if s]


def tone_and_noise_db(signal: np.ndarray) -> tuple[float, float]:
    """The 1 kHz tone's level and the median level of the other bins, in dB of full scale."""
    window = np.hanning(len(signal))
    spectrum = np.abs(np.fft.rfft(signal * window)) * 2 / window.sum()
    hz = np.fft.rfftfreq(len(signal), 1 / RATE)
    near = np.abs(hz - TONE_HZ) <= 20
    elsewhere = (np.abs(hz - TONE_HZ) > 200) & (hz > 50)
    tone = float(spectrum[near].max())
    noise = float(np.median(spectrum[elsewhere]))
    return 20 * np.log10(tone + 1e-12), 20 * np.log10(noise + 1e-12)


# -- the mixer's own program, and the rundown ------------------------------------------------

SMALL = media_pb2.Rendition(
    width=320, height=180, pixel_format=media_pb2.PIXEL_FORMAT_I420, no_audio=True
)


def luma_of(image: np.ndarray) -> np.ndarray:
    return image[: image.shape[0] * 2 // 3]


class ProgramWatch:
    """Every picture of the mixer's program (small, as a monitor takes it) from `start` to
    `stop`: its pts, its number, and whether it is the still."""

    def __init__(self, endpoint: str, prod: str) -> None:
        self.endpoint, self.handle = endpoint, f"prod/{prod}/program"
        self.seen: list[tuple[int, int | None, bool]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 5.0) -> ProgramWatch:
        self._task = asyncio.create_task(self._watch())
        deadline = time.monotonic() + timeout
        while not self.seen:
            assert time.monotonic() < deadline and not self._task.done(), "no program frames"
            await asyncio.sleep(0.02)
        return self

    async def until(
        self, done: Callable[[list[tuple[int, int | None, bool]]], bool], timeout: float
    ) -> list[tuple[int, int | None, bool]]:
        """What was seen once `done` says so (then stops watching)."""
        deadline = time.monotonic() + timeout
        while not done(self.seen):
            assert time.monotonic() < deadline, runs([n for _, n, _ in self.seen])
            await asyncio.sleep(0.02)
        return await self.stop()

    async def stop(self) -> list[tuple[int, int | None, bool]]:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return self.seen

    async def _watch(self) -> None:
        expected = card_yuv()
        async for message in frames(self.endpoint, self.handle, SMALL):
            if message.WhichOneof("body") == "video":
                image = proto_to_i420(message.video)
                number = read_number(luma_of(image))
                is_card = close_to(yuv_at(image, 160, 90), expected, 4)
                self.seen.append((message.video.pts_us, number, is_card))


# -- the tests -------------------------------------------------------------------------------


async def test_clip_plays_every_frame_once_holds_while_paused_and_at_its_end(
    bus: Bus,
    library: MediaLibrary,
    media_files: MediaFiles,
    mixer: MixerService,
    hls_output: Callable[[str], Awaitable[HlsOutput]],
    create_production: CreateProduction,
) -> None:
    added = await library.add(media_files.count_house, "count", replace=True)
    assert added.house
    prod = unique("clips")
    source = "clip/count"
    await create_production(show(prod, [clip_source("count", "计数片")]))
    events = await ClipEvents.subscribe(bus, prod)
    hls = await hls_output(prod)
    cued = await wait_clip(bus, prod, source, CUED)
    assert (cued.position_ms, cued.duration_ms, cued.remaining_ms) == (0, 4000, 4000)
    state = await cut(bus, prod, source)
    assert state.switcher.program == source
    watch = await ProgramWatch(mixer.grpc_endpoint, prod).start()
    await asyncio.sleep(0.6)  # the cued first frame on air for a while

    await transport(bus, prod, source, mixer_pb2.TRANSPORT_ACTION_PLAY)
    await asyncio.sleep(1.5)
    paused = clip_of(await transport(bus, prod, source, mixer_pb2.TRANSPORT_ACTION_PAUSE), source)
    assert paused is not None and paused.state == PAUSED
    assert 1000 <= paused.position_ms <= 2600, paused
    await asyncio.sleep(2.0)
    await transport(bus, prod, source, mixer_pb2.TRANSPORT_ACTION_PLAY)
    await events.wait(source, ENDED, timeout=6.0)
    await asyncio.sleep(0.6)  # the last frame held for a while
    program = [(pts, number) for pts, number, _ in await watch.stop()]

    def held_to_the_end(recording: Recording) -> bool:
        tail = runs([n for n in recording.numbers() if n is not None])
        return bool(tail) and tail[-1][0] == COUNT_FRAMES - 1 and tail[-1][1] >= 30

    recording = await hls.record_until(held_to_the_end)

    # The mixer's program, every frame of it: each of the clip's frames once while it plays; it
    # stands still only cued at its start, paused, and at its end.
    assert all(b - a == 40_000 for (a, _), (b, _) in itertools.pairwise(program)), "frames lost"
    numbers = [n for _, n in program]
    assert None not in numbers, numbers
    assert [n for n, _ in runs(numbers)] == list(range(COUNT_FRAMES)), runs(numbers)
    held = [(n, count) for n, count in runs(numbers) if count > 1]
    assert len(held) == 3, held
    (start, _), (pause_at, pause_frames), (last, last_frames) = held
    assert start == 0 and last == COUNT_FRAMES - 1, held
    # A paused clip's position is the frame it holds: a cue there shows that frame.
    assert paused.position_ms == pause_at * 40, (paused, pause_at)
    assert pause_frames >= 40 and last_frames >= 10, held

    # The HLS output, from its first picture of the clip (before it, the slate while the clip
    # loaded): distribution encodes on a clock of its own, taking the newest program picture at
    # each of its ticks, so each output frame is one of the program's, in order.
    first = next(i for i, (_, n) in enumerate(recording.pictures) if n is not None)
    shown = recording.pictures[first:]
    assert None not in [n for _, n in shown], runs(recording.numbers())
    skipped = [(a, b) for (a, _), (b, _) in itertools.pairwise(shown) if b - a != 1]
    assert len(skipped) <= 5, f"the encoder itself left out pictures: {skipped}"
    hls_runs = runs([n for _, n in shown])
    assert [n for n, count in hls_runs if count >= 10] == [0, pause_at, COUNT_FRAMES - 1], hls_runs
    assert dict(hls_runs)[pause_at] >= 40 and hls_runs[-1][1] >= 30, hls_runs
    # Between the holds, each picture is the same number of frames behind the output's clock: a
    # frame of the clip repeated or skipped would shift all that follow. Where the two clocks
    # tick nearly together, an output frame now and then takes its picture a tick early or late
    # (a picture twice, then one left out): a moment off the beat, not a shift.
    off_beat = 0
    for stretch in play_stretches(shown, min_hold=10):
        lags = [frame - number for frame, number in stretch]
        usual = max(set(lags), key=lags.count)
        assert all(abs(lag - usual) <= 1 for lag in lags), (lags, stretch)
        moments = [count for lag, count in runs(lags) if lag != usual]
        assert all(count <= 3 for count in moments), f"a lasting shift: {stretch}"
        off_beat += sum(moments)
    assert off_beat <= 8, off_beat

    # Remaining time counts down, a second an event while playing, to the end.
    seen = events.of(source)
    assert seen[-1][2].state == ENDED
    assert (seen[-1][2].remaining_ms, seen[-1][2].position_ms) == (0, 4000)
    assert all(c.position_ms + c.remaining_ms == c.duration_ms == 4000 for _, _, c in seen)
    stretches: list[list[tuple[int, mixer_pb2.ClipState]]] = [[]]
    for _, time_us, clip in seen:
        if clip.state == PLAYING:
            stretches[-1].append((time_us, clip))
        elif stretches[-1]:
            stretches.append([])
    stretches = [s for s in stretches if s]
    assert len(stretches) == 2, [[c.remaining_ms for _, c in s] for s in stretches]
    each_second = []
    for stretch in stretches:
        remaining = [c.remaining_ms for _, c in stretch]
        assert all(b < a for a, b in itertools.pairwise(remaining)), remaining
        for (t0, a), (t1, b) in itertools.pairwise(stretch):
            # The clip runs at the clock's pace: as much clip as wall time between events.
            elapsed_ms = (t1 - t0) / 1000
            assert abs((a.remaining_ms - b.remaining_ms) - elapsed_ms) <= 100, (a, b, elapsed_ms)
            if elapsed_ms > 500:
                each_second.append(a.remaining_ms - b.remaining_ms)
    assert len(each_second) >= 3, each_second
    assert all(abs(step - 1000) <= 80 for step in each_second), each_second
    paused_events = [c for _, _, c in seen if c.state == PAUSED]
    assert paused_events and all(c.remaining_ms == 4000 - paused.position_ms for c in paused_events)

    # The sound in the HLS output: the tone while the clip plays, silence while it is paused.
    pause_frames_out = [frame for frame, n in shown if n == pause_at]
    end_frame = next(frame for frame, n in shown if n == COUNT_FRAMES - 1)
    start_s, sound = recording.samples()

    def part(from_frame: int, to_frame: int) -> np.ndarray:
        # 0.5 s inside each end: the sound runs a few frames behind the pictures.
        a = round((from_frame / FPS + 0.5 - start_s) * RATE)
        b = round((to_frame / FPS - 0.5 - start_s) * RATE)
        assert b - a >= RATE // 2, (from_frame, to_frame)
        return sound[a:b]

    playing = part(pause_frames_out[-1], end_frame)
    tone_db, noise_db = tone_and_noise_db(playing)
    assert tone_db > -40 and tone_db - noise_db >= 40, (tone_db, noise_db)
    quiet = part(pause_frames_out[0], pause_frames_out[-1])
    paused_tone_db, _ = tone_and_noise_db(quiet)
    rms_db = 20 * np.log10(float(np.sqrt(np.mean(quiet**2))) + 1e-12)
    assert paused_tone_db < tone_db - 50 and rms_db < -60, (paused_tone_db, rms_db)


async def test_clip_that_ends_on_the_slate_shows_the_slate(
    bus: Bus,
    library: MediaLibrary,
    media_files: MediaFiles,
    mixer: MixerService,
    create_production: CreateProduction,
) -> None:
    await library.add(media_files.count, "count", replace=True)
    prod = unique("slate")
    source = "clip/count"
    await create_production(show(prod, [clip_source("count", "计数片", mixer_pb2.CLIP_END_SLATE)]))
    await wait_clip(bus, prod, source, CUED)
    await cut(bus, prod, source)
    # The last second of the clip only.
    state = await transport(bus, prod, source, mixer_pb2.TRANSPORT_ACTION_CUE, position_ms=3000)
    cued = clip_of(state, source)
    assert cued is not None and (cued.position_ms, cued.remaining_ms) == (3000, 1000), cued
    await next_video(
        mixer.grpc_endpoint,
        f"prod/{prod}/program",
        SMALL,
        accept=lambda image: read_number(luma_of(image)) == 75,
        timeout=3.0,
    )
    await transport(bus, prod, source, mixer_pb2.TRANSPORT_ACTION_PLAY)
    state = await wait_state(
        bus, prod, lambda s: s.showing.get(source) == "slate", timeout=3.0, what="slated"
    )
    clip = clip_of(state, source)
    assert clip is not None and clip.state == ENDED and clip.remaining_ms == 0, clip
    assert state.switcher.program == source
    _, slate = await next_video(mixer.grpc_endpoint, f"prod/{prod}/program", SMALL)
    assert read_number(luma_of(slate)) is None


async def test_rundown_plays_the_opener_and_takes_the_next_segment_at_its_end(
    bus: Bus,
    library: MediaLibrary,
    media_files: MediaFiles,
    mixer: MixerService,
    create_production: CreateProduction,
) -> None:
    await library.add(media_files.intro, "intro", replace=True)
    await library.add(media_files.card, "card", replace=True)
    prod = unique("opener")
    intro, card = "clip/intro", "clip/card"
    await create_production(
        show(
            prod,
            [
                clip_source("card", "台标"),  # the first source: on program to begin with
                clip_source("intro", "开场片头", mixer_pb2.CLIP_END_NEXT),
            ],
        )
    )
    events = await ClipEvents.subscribe(bus, prod)
    segments: list[tuple[float, rundown_pb2.RundownStatus]] = []
    second_segment = asyncio.Event()

    async def on_rundown(status: rundown_pb2.RundownStatus, _subject: str) -> None:
        segments.append((time.monotonic(), status))
        if status.segment == 1:
            second_segment.set()

    await bus.subscribe(
        subject("prod", prod, "rundown", "state"), rundown_pb2.RundownStatus, on_rundown
    )
    # A rundown cue is refused while its clip is still being fetched: start once both are in.
    await wait_clip(bus, prod, intro, CUED)
    still = await wait_clip(bus, prod, card, CUED)
    assert still.duration_ms == 0
    plan = rundown_pb2.Rundown(
        name="启航",
        segments=[
            rundown_pb2.RundownSegment(title="开场片头", program=intro, play=intro),
            rundown_pb2.RundownSegment(title="演播室", program=card),
        ],
    )
    await rundown(bus, prod, rundown_pb2.RundownCommand(load=plan))
    watch = await ProgramWatch(mixer.grpc_endpoint, prod).start()
    status = await rundown(
        bus, prod, rundown_pb2.RundownCommand(start=rundown_pb2.RundownCommand.Start(segment=0))
    )
    assert status.running and status.segment == 0
    ended_at = await events.wait(intro, ENDED, timeout=5.0)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(second_segment.wait(), 2.0)
    next_at = next((at for at, s in segments if s.segment == 1), None)
    assert next_at is not None, segments
    assert next_at - ended_at < 1.0, next_at - ended_at
    # The segment's state goes out before its cues: the cut follows within the second, and the
    # card is on air from the tick after it (the state may come between the two).
    deadline = time.monotonic() + 1.0
    while (state := await get(bus, prod)).switcher.program != card or (
        state.showing[card] != "live"
    ):
        assert time.monotonic() < deadline, (state.switcher, state.showing)
        await asyncio.sleep(0.02)

    # On air, frame by frame (the mixer's program): the card, the opener from its first frame
    # to its last, each once, then the card again (a second of it seen).
    def card_again(seen: list[tuple[int, int | None, bool]]) -> bool:
        return any(n is not None for _, n, _ in seen) and all(c for _, _, c in seen[-FPS - 5 :])

    seen = await watch.until(card_again, timeout=3.0)
    assert all(b - a == 40_000 for (a, _, _), (b, _, _) in itertools.pairwise(seen)), "gaps"
    shown = [(n, is_card) for _, n, is_card in seen]
    first = next(i for i, (n, _) in enumerate(shown) if n is not None)
    last = max(i for i, (n, _) in enumerate(shown) if n is not None)
    assert first > 0 and all(is_card for _, is_card in shown[:first]), shown[: first + 1]
    assert all(is_card for _, is_card in shown[last + 1 :]), shown[last:]
    numbers = [n for n, _ in shown[first : last + 1]]
    assert [n for n, _ in runs(numbers)] == list(range(INTRO_FRAMES)), runs(numbers)
    # Repeats: the first frame between the program cue and the play cue, the last one until the
    # next segment's cut (within a second).
    repeats = [(n, count) for n, count in runs(numbers) if count > 1]
    assert all((n == 0 and count <= 5) or n == INTRO_FRAMES - 1 for n, count in repeats), repeats
    assert numbers.count(INTRO_FRAMES - 1) <= FPS, repeats
    # The opener's end moved the rundown on once, and the rundown stays on its second segment.
    await asyncio.sleep(0.5)
    final = await rundown(
        bus, prod, rundown_pb2.RundownCommand(status=rundown_pb2.RundownCommand.Status())
    )
    assert final.running and final.segment == 1
    log = await asrun_log(bus, prod)
    assert [e.cue for e in log if e.cue == "clip-end"] == ["clip-end"], log
    assert [e.cue for e in log if e.segment == 1 and e.cue == "program"] == ["program"], log


async def test_transport_refusals_and_a_missing_clip_leave_the_show_going(
    bus: Bus,
    library: MediaLibrary,
    media_files: MediaFiles,
    media: FakeMediaServer,
    announce: Callable[[], Awaitable[None]],
    mixer: MixerService,
    create_production: CreateProduction,
) -> None:
    await library.add(media_files.count, "count", replace=True)
    prod = unique("refuse")
    station = media.add(Card(f"source/{prod}-gz", STATION_YUV))
    await announce()
    gz = station.name.removeprefix("source/")
    count, missing = "clip/count", "clip/missing"
    await create_production(
        show(
            prod,
            [
                mixer_pb2.ProductionSource(id=gz, name="广州台"),
                clip_source("count", "计数片"),
                clip_source("missing", "丢失的片"),
            ],
        )
    )
    failed = await wait_clip(bus, prod, missing, FAILED)
    assert "missing" in failed.error, failed
    await wait_clip(bus, prod, count, CUED)
    failures = REGISTRY.get_sample_value("baycast_mixer_clip_failures_total", {"production": prod})
    assert failures == 1

    play = mixer_pb2.TRANSPORT_ACTION_PLAY
    with pytest.raises(errors.NotFound) as not_clip:
        await transport(bus, prod, gz, play)
    assert not_clip.value.field == "transport.source"
    with pytest.raises(errors.NotFound):
        await transport(bus, prod, "clip/elsewhere", play)
    with pytest.raises(errors.InvalidArgument) as beyond:
        await transport(bus, prod, count, mixer_pb2.TRANSPORT_ACTION_SEEK, position_ms=10_000)
    assert beyond.value.field == "transport"
    with pytest.raises(errors.Conflict) as conflict:
        await transport(bus, prod, missing, play)
    assert "missing" in conflict.value.message

    # The show goes on: the station on air, the missing clip slated, the other clip plays.
    await cut(bus, prod, gz)
    await next_video(
        mixer.grpc_endpoint,
        f"prod/{prod}/program",
        SMALL,
        accept=lambda image: close_to(yuv_at(image, 160, 90), STATION_YUV),
        timeout=5.0,
    )
    state = await cut(bus, prod, missing)
    assert state.switcher.program == missing
    await wait_state(bus, prod, lambda s: s.showing.get(missing) == "slate", 3.0, "slated")
    await cut(bus, prod, count)
    await transport(bus, prod, count, play)
    await next_video(
        mixer.grpc_endpoint,
        f"prod/{prod}/program",
        SMALL,
        accept=lambda image: (read_number(luma_of(image)) or 0) >= 10,
        timeout=3.0,
    )
    playing = clip_of(await get(bus, prod), count)
    assert playing is not None and playing.state == PLAYING and playing.position_ms >= 400
