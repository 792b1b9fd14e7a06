"""SRT returns (docs/adr/0012) against real components: a station's decoder gets its return.

One show for the module: a real nats-server, a real ingest with two stations publishing their
test cards and tones over WHIP, a real mixer running a production of them (cut to station B, so
the program is B's card; A's mix-minus is the program without A), and the distribution service
with the platform's SRT secret. Debian's ffmpeg stands in for A's hardware decoder: it calls the
return (listener mode) or takes its call (caller mode) with A's passphrase and writes what it gets
to a file, which the test decodes: B's colours where B's card has them, B's tone present and A's
own tone at least 40 dB below it, by FFT.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import pytest_asyncio
import structlog
import structlog.testing

from services.common import errors
from services.common.bus import Bus, subject
from services.common.credentials import srt_passphrase
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.gen.baycast.v1 import mixer_pb2
from services.distribution.live_encoding import VideoKey
from services.distribution.service import DistributionService
from services.distribution.settings import DistributionSettings
from services.ingest.service import IngestService
from services.mixer.service import MixerService
from services.mixer.settings import MixerSettings
from services.station.testcard import TestCard, tone_hz
from tests.support.mixer import admin, command, yuv_at
from tests.support.nats import NatsServer, free_udp_port
from tests.support.services import running_service
from tests.support.station import add_station, publishing, running_ingest, wait_online

pytestmark = [pytest.mark.timeout(150), pytest.mark.asyncio(loop_scope="module")]

SECRET = "the platform's srt secret"
WIDTH, HEIGHT = 640, 360  # the return's rendition (return_height, 360 by default)
CARD_SIZE = (640, 360)
RATE = 48_000
TOLERANCE = 16  # the mixer's scale and two H.264 encodes, on flat areas, in 8-bit code values
RECORD_S = 4


def distinct_station_ids(count: int) -> list[str]:
    """Ids new to this NATS server whose tones (and so card colours) differ by >= 200 Hz."""
    chosen: list[str] = []
    for i in itertools.count():
        sid = f"r{os.getpid() % 100_000}s{i}"
        if all(abs(tone_hz(sid) - tone_hz(other)) >= 200 for other in chosen):
            chosen.append(sid)
        if len(chosen) == count:
            return chosen
    raise AssertionError("unreachable")


@dataclass
class Show:
    bus: Bus
    ingest: IngestService
    dist: DistributionService
    prod: str
    a: str
    b: str
    cards: dict[str, TestCard]
    logs: list[dict[str, Any]]

    async def command(self, **kwargs: Any) -> dist.DistReply:
        return await self.bus.request(
            subject("prod", self.prod, "dist", "cmd"),
            dist.DistCommand(production=self.prod, **kwargs),
            dist.DistReply,
            timeout=10,
        )

    async def add(self, **spec: Any) -> dist.OutputState:
        reply = await self.command(add=dist.AddOutput(output=dist.OutputSpec(enabled=True, **spec)))
        return reply.outputs[0]

    async def wait_status(self, output_id: str, status: int, timeout: float = 20.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            reply = await self.command(list=dist.ListOutputs())
            state = next(s for s in reply.outputs if s.id == output_id)
            if state.status == status:
                return state
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{output_id} is {state} after {timeout} s")
            await asyncio.sleep(0.1)

    def passphrase(self, station: str) -> str:
        record = self.dist.credentials.stations.get(station)
        assert record is not None
        return srt_passphrase(SECRET, record)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def show(
    nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Show]:
    # Info-level events are captured for the no-passphrase check; a logger takes its level when
    # first used, so this comes before any service starts.
    wrapper_class = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    prod = f"ret{os.getpid() % 100_000}"
    a, b = distinct_station_ids(2)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(structlog.configure, wrapper_class=wrapper_class)
        logs = stack.enter_context(structlog.testing.capture_logs())
        bus = Bus(nats_server.url, "srt-return-test")
        await bus.connect()
        stack.push_async_callback(bus.drain)
        ingest = await stack.enter_async_context(running_ingest(nats_server.url, unready_seconds=0))
        tokens = {sid: await add_station(ingest, sid, f"{sid}台") for sid in (a, b)}
        cards: dict[str, TestCard] = {}
        for sid in (a, b):
            pub = await stack.enter_async_context(
                publishing(ingest, sid, tokens[sid], name=f"{sid}台", size=CARD_SIZE)
            )
            cards[sid] = pub.card
        await stack.enter_async_context(
            running_service(
                MixerService,
                MixerSettings,
                nats_server.url,
                lease_renew_seconds=0.3,
                unready_seconds=0.0,
            )
        )
        await asyncio.gather(wait_online(ingest, a), wait_online(ingest, b))
        production = mixer_pb2.Production(
            id=prod,
            name="启航·大湾区",
            width=1280,
            height=720,
            fps=25,
            sources=[mixer_pb2.ProductionSource(id=s, name=f"{s}台") for s in (a, b)],
            # The plain mix: the return's tones are checked at their level, which the
            # loudness control (tests/integration/mixer/test_loudness.py) would level.
            loudness=mixer_pb2.Loudness(enabled=False),
        )
        await admin(bus, mixer_pb2.ProductionCommand(create=production))
        stack.push_async_callback(
            admin,
            bus,
            mixer_pb2.ProductionCommand(delete=mixer_pb2.ProductionCommand.Delete(id=prod)),
        )
        cut = mixer_pb2.MixerCommand(cut=mixer_pb2.MixerCommand.Cut(source=b))
        await command(bus, prod, cut)
        service = await stack.enter_async_context(
            running_service(
                DistributionService,
                DistributionSettings,
                nats_server.url,
                data_dir=str(tmp_path_factory.mktemp("dist")),
                srt_secret=SECRET,
                exchange_height=HEIGHT,
                unready_seconds=0.0,
            )
        )
        show = Show(bus, ingest, service, prod, a, b, cards, logs)
        yield show
        # Whatever a failed test left: a later distribution service would restore and run it.
        with contextlib.suppress(Exception):
            for output in (await show.command(list=dist.ListOutputs())).outputs:
                await show.command(remove=dist.OutputRef(id=output.id))


class Decoder:
    """Debian's ffmpeg as the station's SRT decoder: records what it receives as MPEG-TS."""

    def __init__(self, folder: Path, name: str, url: str) -> None:
        self.path = folder / f"{name}.ts"
        self.log = folder / f"{name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    "ffmpeg",
                    "-hide_banner",
                    "-nostdin",
                    "-loglevel",
                    "error",
                    "-y",
                    "-f",
                    "mpegts",
                    "-i",
                    url,
                    "-map",
                    "0",
                    "-c",
                    "copy",
                    "-t",
                    str(RECORD_S),
                    "-f",
                    "mpegts",
                    str(self.path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    async def finish(self, timeout: float) -> int:
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return await asyncio.to_thread(self.proc.wait)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def received(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0


def srt_url(port: int, mode: str, passphrase: str) -> str:
    return f"srt://127.0.0.1:{port}?mode={mode}&passphrase={passphrase}&pbkeylen=16&latency=120000"


def decoded(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The pictures (packed I420) and the sound (float, samples x channels) of a TS file."""
    pictures: list[np.ndarray] = []
    sound: list[np.ndarray] = []
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        for frame in container.decode(*streams):
            if isinstance(frame, av.VideoFrame):
                assert (frame.width, frame.height) == (WIDTH, HEIGHT)
                pictures.append(frame.to_ndarray(format="yuv420p"))
            elif isinstance(frame, av.AudioFrame):
                assert frame.sample_rate == RATE
                sound.append(frame.to_ndarray().T if frame.format.is_planar else frame.to_ndarray())
    return pictures, np.concatenate(sound) if sound else np.zeros((0, 2))


def tone_db(samples: np.ndarray, hz: float) -> float:
    """Level of one tone in the left channel, dB relative to full scale (Hann window)."""
    left = samples[:, 0].astype(np.float64)
    window = np.hanning(len(left))
    spectrum = np.abs(np.fft.rfft(left * window)) / (window.sum() / 2)
    k = round(hz / (RATE / len(left)))
    return float(20 * np.log10(max(spectrum[max(0, k - 3) : k + 4].max(), 1e-12)))


def assert_is_the_return(show: Show, path: Path) -> None:
    """B's card in the picture, B's tone in the sound, A's own tone >= 40 dB below it."""
    pictures, sound = decoded(path)
    assert len(pictures) >= 25 * (RECORD_S - 1), len(pictures)
    card = show.cards[show.b]

    def shows_b(picture: np.ndarray) -> bool:
        for point in card.probe_points():
            x, y = int(point.x * WIDTH) & ~1, int(point.y * HEIGHT) & ~1
            got = yuv_at(picture, x, y)
            if not all(abs(g - w) <= TOLERANCE for g, w in zip(got, point.yuv, strict=True)):
                return False
        return True

    # The second half of the recording: B's card in 80 % of the pictures at least (on a busy
    # machine B's in-process feed can stall past the mixer's hold and slate for a moment).
    late = pictures[len(pictures) // 2 :]
    shown = sum(map(shows_b, late))
    assert shown >= 0.8 * len(late), (shown, len(late))
    steady = sound[len(sound) // 4 :]
    assert len(steady) >= RATE
    other = tone_db(steady, show.cards[show.b].tone_hz)
    own = tone_db(steady, show.cards[show.a].tone_hz)
    assert other > -20, other  # the card's tone is at -10 dBFS
    assert own < other - 40, (own, other)


def relay_processes(port: int) -> list[tuple[int, str, bytes]]:
    """(pid, `ps` line, environment) of every relay (an ffmpeg reading the return from its
    stdin) that has `port` in its arguments."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        if "ffmpeg" in line and "pipe:0" in line and f":{port}" in line:
            pid = int(line.split()[0])
            with contextlib.suppress(OSError):
                found.append((pid, line, Path(f"/proc/{pid}/environ").read_bytes()))
    return found


def no_secret_logged(show: Show, secret: str) -> None:
    assert show.logs, "the services' logs were captured"
    assert not [event for event in show.logs if secret in repr(event)]


async def test_a_listener_return_is_the_program_with_the_stations_mix_minus(
    show: Show, tmp_path: Path
) -> None:
    port = free_udp_port()
    passphrase = show.passphrase(show.a)
    state = await show.add(
        id="a-listen",
        kind=dist.OUTPUT_KIND_SRT,
        url=f"srt://127.0.0.1:{port}",
        station=show.a,
        srt_mode=dist.SRT_MODE_LISTENER,
    )
    assert state.station == show.a and passphrase not in str(state)
    # Waiting for the station's decoder to call: as long as it takes, not a failure.
    await show.wait_status("a-listen", dist.OUTPUT_STATUS_CONNECTING)
    for _ in range(100):
        relays = await asyncio.to_thread(relay_processes, port)
        if relays:
            break
        await asyncio.sleep(0.1)
    assert relays, "the relay listens"
    await asyncio.sleep(0.5)  # it probes its input, then binds the port
    for _pid, line, environ in relays:
        assert passphrase not in line and passphrase.encode() not in environ
        assert "-fpre /dev/fd/" in line

    # A wrong passphrase gets nothing; the return keeps listening.
    wrong = Decoder(tmp_path, "wrong", srt_url(port, "caller", "Z" * 32))
    assert await wrong.finish(15) != 0 and wrong.received == 0
    assert (await show.wait_status("a-listen", dist.OUTPUT_STATUS_CONNECTING)).attempts == 1

    decoder = Decoder(tmp_path, "listener", srt_url(port, "caller", passphrase))
    try:
        live = await show.wait_status("a-listen", dist.OUTPUT_STATUS_LIVE)
        assert live.station == show.a
        # The picture is the WHEP return's own encode: one per rendition, not one per return.
        assert list(show.dist.encodings.videos) == [
            VideoKey(f"prod/{show.prod}/program", WIDTH, HEIGHT, 25)
        ]
        assert await decoder.finish(30) == 0, decoder.log.read_text()
    finally:
        decoder.stop()
    assert_is_the_return(show, decoder.path)
    await show.command(remove=dist.OutputRef(id="a-listen"))
    no_secret_logged(show, passphrase)


async def test_a_caller_return_dials_the_decoder_with_the_stations_passphrase(
    show: Show, tmp_path: Path
) -> None:
    passphrase = show.passphrase(show.a)
    port = free_udp_port()
    decoder = Decoder(tmp_path, "caller", srt_url(port, "listener", passphrase))
    try:
        await asyncio.sleep(0.5)  # the decoder binds its port
        await show.add(
            id="a-call", kind=dist.OUTPUT_KIND_SRT, url=f"srt://127.0.0.1:{port}", station=show.a
        )
        await show.wait_status("a-call", dist.OUTPUT_STATUS_LIVE)
        assert len(show.dist.encodings.videos) == 1
        relays = await asyncio.to_thread(relay_processes, port)
        assert relays
        for _pid, line, environ in relays:
            assert passphrase not in line and passphrase.encode() not in environ
        assert await decoder.finish(30) == 0, decoder.log.read_text()
    finally:
        decoder.stop()
    assert_is_the_return(show, decoder.path)
    await show.command(remove=dist.OutputRef(id="a-call"))

    # A decoder that expects another passphrase: the return is refused, the decoder gets nothing.
    port = free_udp_port()
    wrong = Decoder(tmp_path, "caller-wrong", srt_url(port, "listener", "Z" * 32))
    try:
        await asyncio.sleep(0.5)
        await show.add(
            id="a-wrong", kind=dist.OUTPUT_KIND_SRT, url=f"srt://127.0.0.1:{port}", station=show.a
        )
        failed = await show.wait_status("a-wrong", dist.OUTPUT_STATUS_FAILED)
        assert failed.attempts == 1 and failed.reason and passphrase not in failed.reason
    finally:
        wrong.stop()
    assert wrong.received == 0
    await show.command(remove=dist.OutputRef(id="a-wrong"))
    no_secret_logged(show, passphrase)


async def test_a_return_needs_a_station_that_exists_and_srt(show: Show) -> None:
    cases: list[tuple[dict[str, Any], type[errors.BaycastError], str]] = [
        ({"station": "no-such-station"}, errors.NotFound, "add.output.station"),
        ({"station": show.a, "picture": "multiview"}, errors.InvalidArgument, "add.output.picture"),
        (
            {"station": show.a, "kind": dist.OUTPUT_KIND_RTMP, "url": "rtmp://h/live"},
            errors.InvalidArgument,
            "add.output.station",
        ),
        (
            {"station": show.a, "url": "srt://127.0.0.1", "srt_mode": dist.SRT_MODE_LISTENER},
            errors.InvalidArgument,
            "add.output.url",
        ),
    ]
    for overrides, error, field in cases:
        spec: dict[str, Any] = {"id": "bad", "kind": dist.OUTPUT_KIND_SRT, "url": "srt://h:9"}
        with pytest.raises(error) as caught:
            await show.add(**(spec | overrides))
        assert caught.value.field == field, overrides
    reply = await show.command(list=dist.ListOutputs())
    assert "bad" not in [s.id for s in reply.outputs]
