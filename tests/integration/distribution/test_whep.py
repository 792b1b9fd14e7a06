"""WHEP egress (docs/adr/0012) against real components: stations watch their returns.

One show for the module: a real nats-server, a real ingest with three stations publishing their
test cards and tones over WHIP (and a fourth that only watches), a real mixer running the
production (its sources are the stations, so each has a mix-minus), and the distribution service
serving WHEP. aiortc WHEP clients on 127.0.0.1 decode what they get: the program's colours, the
mix-minus by FFT (the other stations' tones present, the station's own absent), keyframes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
import pytest_asyncio
import structlog
import structlog.testing
from aiortc import RTCPeerConnection

from services.common import ice
from services.common.bus import Bus
from services.common.credentials import OPERATORS_BUCKET, with_new_token
from services.common.gen.baycast.v1 import ingest_pb2, mixer_pb2, operators_pb2
from services.distribution import viewers as viewers_module
from services.distribution.live_encoding import VideoKey, open_audio_encoder
from services.distribution.service import DistributionService
from services.distribution.settings import DEFAULT_EXCHANGE_AUDIO_KBPS, DistributionSettings
from services.ingest.service import IngestService
from services.mixer.productions import ProductionStore
from services.mixer.service import MixerService
from services.mixer.settings import MixerSettings
from services.station.testcard import TestCard, tone_hz
from tests.support.mixer import admin, command, yuv_at
from tests.support.nats import NatsServer
from tests.support.services import running_service
from tests.support.station import (
    add_station,
    publishing,
    running_ingest,
    station_command,
    wait_online,
)
from tests.support.whep_client import WhepViewer

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="module")]

Cmd = mixer_pb2.MixerCommand
WIDTH, HEIGHT, FPS = 640, 360, 25
RATE = 48_000
TOLERANCE = 16  # two H.264 encodes and a scale on flat areas, in 8-bit code values
# The return's encoder leaves the first station's tone this clear of the others' (its own
# absence is measured 40 dB below them, -50 dBFS, through the live encoder and decoder).
CODEC_CLEAR_DB = -70.0
MAX_VIEWERS = 3


def distinct_station_ids(count: int) -> list[str]:
    """Ids new to this NATS server whose tones (and so card colours) differ by >= 200 Hz, the
    first one's tone clear of what the return's encoder makes of the second's and third's
    (`codec_made_db`): its absence from its return is what the tests measure."""
    for first in itertools.count():
        chosen: list[str] = []
        for i in itertools.count(first):
            sid = f"w{os.getpid() % 100_000}s{i}"
            if all(abs(tone_hz(sid) - tone_hz(other)) >= 200 for other in chosen):
                chosen.append(sid)
            if len(chosen) == count:
                break
        own, *others = (tone_hz(sid) for sid in chosen[:3])
        if codec_made_db(others, own) <= CODEC_CLEAR_DB:
            return chosen
    raise AssertionError("unreachable")


@dataclass
class Show:
    bus: Bus
    ingest: IngestService
    dist: DistributionService
    prod: str
    stations: list[str]  # a, b, c publish; d only watches
    tokens: dict[str, str]
    cards: dict[str, TestCard]
    operator_id: str
    operator_token: str
    http: aiohttp.ClientSession
    logs: list[dict[str, Any]]
    clients: list[WhepViewer] = field(default_factory=list)  # closed after each test

    def url(self, handle: str, **query: str) -> str:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        base = f"http://127.0.0.1:{self.dist.http.port}/whep/{self.prod}/{handle}"
        return f"{base}?{q}" if q else base

    def viewer(self, handle: str, station: str, **query: str) -> WhepViewer:
        return self.client(self.url(handle, height=str(HEIGHT), **query), self.tokens[station])

    def client(self, url: str, token: str, **kwargs: Any) -> WhepViewer:
        viewer = WhepViewer(url, token, **kwargs)
        self.clients.append(viewer)
        return viewer

    async def watch(self, handle: str, station: str, **query: str) -> WhepViewer:
        viewer = self.viewer(handle, station, **query)
        response = await viewer.post(self.http)
        assert response.status == 201, response.body
        return viewer

    async def metric(self, name: str, **labels: str) -> float | None:
        async with self.http.get(f"http://127.0.0.1:{self.dist.http.port}/metrics") as resp:
            text = await resp.text()
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
            if match and ",".join(sorted(match.group(1).split(","))) == wanted:
                return float(match.group(2))
        return None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def show(
    nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Show]:
    ice.configure(("127.0.0.1",))
    # Info-level events of the services are captured for the no-token check; a logger takes its
    # level when first used, so this comes before any service starts.
    wrapper_class = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    prod = f"whep{os.getpid() % 100_000}"
    stations = distinct_station_ids(4)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(structlog.configure, wrapper_class=wrapper_class)
        logs = stack.enter_context(structlog.testing.capture_logs())
        bus = Bus(nats_server.url, "whep-test")
        await bus.connect()
        stack.push_async_callback(bus.drain)
        ingest = await stack.enter_async_context(running_ingest(nats_server.url, unready_seconds=0))
        tokens = {sid: await add_station(ingest, sid, f"{sid}台") for sid in stations}
        cards: dict[str, TestCard] = {}
        for sid in stations[:3]:
            pub = await stack.enter_async_context(
                publishing(ingest, sid, tokens[sid], size=(WIDTH, HEIGHT), fps=FPS)
            )
            cards[sid] = pub.card
        for sid in stations[:3]:
            await wait_online(ingest, sid)
        await stack.enter_async_context(
            running_service(
                MixerService,
                MixerSettings,
                nats_server.url,
                lease_renew_seconds=0.3,
                unready_seconds=0.0,
            )
        )
        production = mixer_pb2.Production(
            id=prod,
            name="启航·大湾区",
            width=1280,  # the mixer makes 720p or 1080p; the returns are taken at 360p
            height=720,
            fps=FPS,
            sources=[mixer_pb2.ProductionSource(id=sid, name=f"{sid}台") for sid in stations],
            # The plain mix: the returns' tones are checked at their level, which the
            # loudness control (tests/integration/mixer/test_loudness.py) would level.
            loudness=mixer_pb2.Loudness(enabled=False),
        )
        await admin(bus, mixer_pb2.ProductionCommand(create=production))
        # The second station on program: the first one's return shows its card.
        await command(bus, prod, Cmd(cut=Cmd.Cut(source=stations[1])))
        operator, operator_token = with_new_token(
            operators_pb2.Operator(id=f"op{os.getpid() % 100_000}", role=operators_pb2.ROLE_VIEWER)
        )
        await (await bus.kv(OPERATORS_BUCKET, operators_pb2.Operator)).put(operator.id, operator)
        dist = await stack.enter_async_context(
            running_service(
                DistributionService,
                DistributionSettings,
                nats_server.url,
                data_dir=str(tmp_path_factory.mktemp("whep")),
                ice_hosts=("127.0.0.1",),
                max_viewers=MAX_VIEWERS,
                whep_rate_per_s=10.0,
                whep_rate_burst=40,
                exchange_height=HEIGHT,
                # Few keyframes of its own, so the requested ones can be counted.
                keyframe_interval_s=20.0,
                unready_seconds=0.0,
            )
        )
        dist.encodings.linger_s = 0.5
        for _ in range(100):  # the mirrors follow the buckets
            if dist.productions.get(prod) and dist.credentials.operators.get(operator.id):
                break
            await asyncio.sleep(0.05)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        yield Show(
            bus,
            ingest,
            dist,
            prod,
            stations,
            tokens,
            cards,
            operator.id,
            operator_token,
            http,
            logs,
        )
        with contextlib.suppress(Exception):
            await (await ProductionStore.open(bus)).delete(prod)


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def no_viewer_left(show: Show) -> AsyncIterator[None]:
    """Each test starts with no viewer: one that failed half-way leaves none for the next (the
    viewer limit is small)."""
    yield
    clients, show.clients[:] = list(show.clients), []
    for client in clients:
        await client.close()
    for viewer in show.dist.whep_viewers.all():
        await show.dist.whep_viewers.stop(viewer.id, "the test ended")


async def until(condition: Any, timeout: float, what: str) -> None:
    """Poll `condition()` (sync) every 50 ms until it is true, at most `timeout` seconds."""
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def assert_card(picture: np.ndarray, card: TestCard) -> None:
    for point in card.probe_points():
        x, y = int(point.x * WIDTH), int(point.y * HEIGHT)
        got = yuv_at(picture, x, y)
        diff = max(abs(a - b) for a, b in zip(got, point.yuv, strict=True))
        assert diff <= TOLERANCE, (
            f"{point.what}: got {got}, {card.station_id}'s card has {point.yuv}"
        )


def shows(viewer: WhepViewer, card: TestCard) -> bool:
    try:
        assert_card(viewer.picture(), card)
    except (AssertionError, IndexError):
        return False
    return True


def tone_levels(samples: np.ndarray, hz: float) -> list[float]:
    """Levels of one tone in the left channel over 200 ms windows, dB full scale (Hann window,
    peak bin near `hz`)."""
    left = samples[:, 0].astype(np.float64)
    size = RATE // 5
    window = np.hanning(size)
    levels = []
    for start in range(0, len(left) - size + 1, size):
        spectrum = np.abs(np.fft.rfft(left[start : start + size] * window)) / (window.sum() / 2)
        k = round(hz * size / RATE)
        levels.append(20 * np.log10(spectrum[max(0, k - 2) : k + 3].max() / 32767 + 1e-12))
    return levels


def tone_db(samples: np.ndarray, hz: float) -> float:
    """A present tone's level: the median of its windows, so that a lost packet's seam in the
    decoded sound, which spreads one window's tones over their neighbours' bins, does not pull it
    down."""
    return float(np.median(tone_levels(samples, hz)))


def absent_tone_db(samples: np.ndarray, hz: float) -> float:
    """An absent tone's level: its quietest window. A seam (a busy host's lost packet, concealed)
    spreads the tones that are there into its bin; a tone that is there is in every window."""
    return min(tone_levels(samples, hz))


def codec_made_db(others_hz: list[float], hz: float) -> float:
    """The level at `hz` of the other stations' tones alone (-10 dBFS each) after the return's
    encoder (distribution's own, mono at its default bitrate): CELT's band folding
    puts some of their sound at other frequencies, up to about -50 dBFS for some sets of tones,
    which the station's own tone must not be mistaken for."""
    t = np.arange(3 * RATE) / RATE
    tones = sum(np.sin(2 * np.pi * f * t) for f in others_hz) * 32767 * 10 ** (-10 / 20)
    pcm = np.rint(tones).astype(np.int16)[None, :]
    encoder, samples = open_audio_encoder("opus", "mono", DEFAULT_EXCHANGE_AUDIO_KBPS)
    decoder = av.CodecContext.create("libopus", "r")
    assert isinstance(decoder, av.AudioCodecContext)
    decoder.sample_rate, decoder.layout = RATE, "mono"
    decoded = []
    for start in range(0, pcm.shape[1] - samples + 1, samples):
        frame = av.AudioFrame.from_ndarray(
            pcm[:, start : start + samples].copy(), format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts = RATE, start
        for packet in encoder.encode(frame):
            decoded += [f.to_ndarray().reshape(-1, 1) for f in decoder.decode(packet)]
    sound = np.concatenate(decoded)
    if sound.dtype != np.int16:  # a float decoder: full scale 1
        sound = sound * 32767
    return absent_tone_db(sound[RATE:], hz)


async def stop_all(show: Show, *viewers: WhepViewer) -> None:
    for viewer in viewers:
        if viewer.location is not None:
            assert await viewer.delete(show.http) == 200
        await viewer.close()


@contextlib.contextmanager
def counting_allocations(show: Show, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Counts the peer connections and encodings the service makes inside the block."""
    made = {"pc": 0, "video": 0, "audio": 0}

    class CountedPeerConnection(RTCPeerConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made["pc"] += 1
            super().__init__(*args, **kwargs)

    encodings = show.dist.encodings
    video, audio = encodings.video, encodings.audio

    def counted_video(key: Any) -> Any:
        made["video"] += 1
        return video(key)

    def counted_audio(key: Any) -> Any:
        made["audio"] += 1
        return audio(key)

    monkeypatch.setattr(viewers_module, "RTCPeerConnection", CountedPeerConnection)
    monkeypatch.setattr(encodings, "video", counted_video)
    monkeypatch.setattr(encodings, "audio", counted_audio)
    try:
        yield made
    finally:
        monkeypatch.undo()


async def test_a_return_is_the_program_with_the_mix_minus_and_encodings_are_shared(
    show: Show, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c, _d = show.stations
    viewer = await show.watch(f"return/{a}", a)
    await viewer.wait_connected()
    await viewer.wait_frames(1, timeout=3.0)
    assert viewer.connected_at is not None and viewer.first_picture_at is not None
    assert viewer.first_picture_at - viewer.connected_at < 1.0
    # The program shows the second station (cut to it): its card's colours where they never change.
    await until(lambda: shows(viewer, show.cards[b]), 5.0, f"{a}'s return shows {b}'s card")
    frame = viewer.last_pictures[-1]
    assert (frame.width, frame.height) == (WIDTH, HEIGHT)

    # The mix-minus: the others' tones at their level, the station's own far below.
    pcm = await viewer.record_audio(2.5)
    assert len(pcm) >= 2 * RATE  # at least two seconds of it
    steady = pcm[len(pcm) - 2 * RATE :]
    own = absent_tone_db(steady, tone_hz(a))
    others = [tone_db(steady, tone_hz(s)) for s in (b, c)]
    assert all(-16 < level < -6 for level in others), others  # each tone is at -10 dBFS
    assert min(others) - own >= 40, (others, own)

    # A second viewer of the same return and another station's return: one picture encode.
    second = await show.watch(f"return/{a}", a)
    other = await show.watch(f"return/{b}", b)
    for v in (second, other):
        await v.wait_frames(1, timeout=3.0)
    assert len(show.dist.encodings.videos) == 1
    assert {k.handle for k in show.dist.encodings.audios} == {
        f"prod/{show.prod}/mixminus/{a}",
        f"prod/{show.prod}/mixminus/{b}",
    }
    assert (
        await show.metric(
            "baycast_distribution_whep_viewers", production=show.prod, handle="return"
        )
        == 3
    )

    # Over the viewer limit: 503, and nothing was made for it.
    with counting_allocations(show, monkeypatch) as made:
        extra = show.viewer("program", a)
        response = await extra.post(show.http)
        await extra.close()
    assert response.status == 503 and "at most 3 viewers" in response.body
    assert made == {"pc": 0, "video": 0, "audio": 0}

    # Viewer messages carry what RTCP receiver reports said.
    def measured() -> bool:
        listed = {v.id: v for v in show.dist.whep_viewers.viewers(show.prod)}
        mine = listed.get(viewer.session_id)
        return mine is not None and mine.rtt_ms > 0 and mine.bitrate_kbps > 50

    await until(measured, 8.0, "the viewer's RTT and bitrate measured")
    listed = {v.id: v for v in show.dist.whep_viewers.viewers(show.prod)}
    assert set(listed) == {viewer.session_id, second.session_id, other.session_id}
    first = listed[viewer.session_id]
    assert (first.handle, first.principal, first.state) == (
        f"return/{a}",
        f"station:{a}",
        "connected",
    )
    assert first.rendition == f"{WIDTH}x{HEIGHT}@{FPS} h264 + opus"
    assert 0 <= first.loss_fraction < 0.05 and first.rtt_ms < 500
    loss = await show.metric(
        "baycast_distribution_whep_loss_fraction", production=show.prod, handle="return"
    )
    assert loss is not None and loss < 0.05

    # DELETE ends them; the gauge goes back to 0.
    assert await second.delete(show.http, token=show.tokens[b]) == 404  # not b's session
    await stop_all(show, viewer, second, other)
    assert len(show.dist.whep_viewers) == 0
    assert (
        await show.metric(
            "baycast_distribution_whep_viewers", production=show.prod, handle="return"
        )
        == 0
    )
    async with show.http.delete(
        viewer.location, headers={"Authorization": f"Bearer {show.tokens[a]}"}
    ) as r:  # type: ignore[arg-type]
        assert r.status == 404  # already ended


async def test_a_station_takes_another_city_and_the_program_but_not_another_return(
    show: Show, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c, _d = show.stations
    city = await show.watch(f"source/{c}", a)
    program = await show.watch("program", a)
    for v in (city, program):
        await v.wait_frames(1, timeout=3.0)
    await until(lambda: shows(city, show.cards[c]), 5.0, f"{c}'s own feed shows its card")
    await until(lambda: shows(program, show.cards[b]), 5.0, "the program shows the station on it")
    sound = await city.record_audio(1.2)
    assert tone_db(sound[-RATE:], tone_hz(c)) > -16  # the city's own sound comes with it

    with counting_allocations(show, monkeypatch) as made:
        refused = show.viewer(f"return/{b}", a)
        response = await refused.post(show.http)
        await refused.close()
    assert response.status == 403 and "own return" in response.body
    assert made == {"pc": 0, "video": 0, "audio": 0}
    await stop_all(show, city, program)


async def test_every_refusal_has_its_code_and_the_service_keeps_serving(
    show: Show, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, _c, _d = show.stations
    base = f"http://127.0.0.1:{show.dist.http.port}/whep"
    probe = WhepViewer("", "")
    offer = await probe.offer()
    await probe.close()
    vp8 = WhepViewer("", "", video_codecs=("video/VP8", "video/rtx"))
    vp8_offer = await vp8.offer()
    await vp8.close()

    async def post(
        url: str, token: str | None, body: Any = None, **headers: str
    ) -> tuple[int, str]:
        sent = {"Content-Type": "application/sdp", **headers}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        async with show.http.post(url, data=offer if body is None else body, headers=sent) as resp:
            return resp.status, await resp.text()

    with counting_allocations(show, monkeypatch) as made:
        wrong = "wrong-" + show.tokens[a][::-1]
        unknown_station = await post(f"{base}/{show.prod}/return/nosuchstation", wrong)
        wrong_token = await post(f"{base}/{show.prod}/return/{a}", wrong)
        unknown_prod = await post(f"{base}/nosuchprod/return/{a}", None)
        assert unknown_station[0] == wrong_token[0] == unknown_prod[0] == 401
        assert unknown_station[1] == wrong_token[1] == unknown_prod[1]
        async with show.http.post(f"{base}/{show.prod}/program", data=offer) as resp:
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        # Tokens of a station, then what it may not read or what does not exist.
        token = show.tokens[a]
        assert (await post(f"{base}/nosuchprod/program", token))[0] == 404
        assert (await post(f"{base}/{show.prod}/preview", token))[0] == 404
        assert (await post(f"{base}/{show.prod}/return/nosuchstation", token))[0] == 404
        assert (await post(f"{base}/{show.prod}/source/nosuchsource", token))[0] == 404
        assert (await post(f"{base}/{show.prod}/return/{b}", token))[0] == 403
        assert (await post(f"{base}/{show.prod}/program?height=1000", token))[0] == 400
        malformed = await post(f"{base}/{show.prod}/program", token, "v=0\r\nm=video x\r\n")
        assert malformed[0] == 400 and "malformed SDP" in malformed[1]
        no_h264 = await post(f"{base}/{show.prod}/program", token, vp8_offer)
        assert no_h264[0] == 400 and "no H.264" in no_h264[1]
        not_sdp = await post(f"{base}/{show.prod}/program", token, "hello")
        assert not_sdp[0] == 400
        huge = "v=0\r\n" + "a=x\r\n" * 20_000
        assert (await post(f"{base}/{show.prod}/program", token, huge))[0] == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(200):
                yield b"a=x" * 200 + b"\r\n"

        assert (await post(f"{base}/{show.prod}/program", token, chunks()))[0] == 413
        # A flood from one address: 429 past the token bucket, before any token check.
        statuses = await asyncio.gather(
            *(post(f"{base}/{show.prod}/program", None) for _ in range(60))
        )
        assert {s for s, _ in statuses} == {401, 429}
        assert sum(s == 429 for s, _ in statuses) >= 10
    assert made == {"pc": 0, "video": 0, "audio": 0}
    assert len(show.dist.whep_viewers) == 0

    # PATCH is refused with what is allowed; OPTIONS answers browsers' preflights.
    async with show.http.options(f"{base}/{show.prod}/program") as resp:
        assert resp.status == 204 and resp.headers["Accept-Post"] == "application/sdp"
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
    async with show.http.options(f"{base}/session/x") as resp:
        assert resp.status == 204
    patch_headers = {"Authorization": f"Bearer {token}"}
    async with show.http.patch(f"{base}/session/x", headers=patch_headers) as resp:
        assert resp.status == 405 and "DELETE" in resp.headers["Allow"]

    # Still serving once the bucket has refilled.
    for _ in range(40):
        viewer = show.viewer("program", a)
        response = await viewer.post(show.http)
        if response.status != 429:
            break
        await viewer.close()
        await asyncio.sleep(0.1)
    assert response.status == 201, response.body
    await viewer.wait_frames(1, timeout=3.0)
    await stop_all(show, viewer)
    refused = await show.metric("baycast_distribution_whep_sessions_total", status="403")
    assert refused is not None and refused >= 2


async def test_a_pli_makes_the_shared_encoding_send_a_keyframe(show: Show) -> None:
    a = show.stations[0]
    viewer = await show.watch(f"return/{a}", a)
    await viewer.wait_frames(3, timeout=3.0)
    encoding = show.dist.encodings.videos[VideoKey(f"prod/{show.prod}/program", WIDTH, HEIGHT, FPS)]
    await asyncio.sleep(0.6)  # past the gap that the new viewer's keyframe opened
    forced, seen = encoding.keyframes_forced, viewer.keyframes
    await viewer.send_pli()
    await until(lambda: encoding.keyframes_forced > forced, 1.5, "a forced keyframe")
    await until(lambda: viewer.keyframes > seen, 1.5, "the keyframe decoded")
    await stop_all(show, viewer)


async def test_a_draining_distribution_ends_its_viewers_and_takes_no_more(
    show: Show, nats_server: NatsServer, tmp_path: Path
) -> None:
    a = show.stations[0]
    async with running_service(
        DistributionService,
        DistributionSettings,
        nats_server.url,
        data_dir=str(tmp_path),
        ice_hosts=("127.0.0.1",),
        exchange_height=HEIGHT,
        unready_seconds=0.0,
    ) as other:
        await until(lambda: other.productions.get(show.prod) is not None, 5.0, "mirrors")
        url = f"http://127.0.0.1:{other.http.port}/whep/{show.prod}/return/{a}"
        viewer = show.client(url, show.tokens[a])
        assert (await viewer.post(show.http)).status == 201
        await viewer.wait_frames(1, timeout=3.0)
        await other.before_drain()  # what SIGTERM does first
        assert len(other.whep_viewers) == 0
        await until(lambda: viewer.pc.connectionState == "closed", 5.0, "the viewer closed")
        late = show.client(url, show.tokens[a])
        response = await late.post(show.http)
        assert response.status == 503 and "shutting down" in response.body
        assert other.encodings.videos.keys() == {
            VideoKey(f"prod/{show.prod}/program", WIDTH, HEIGHT, FPS)
        }  # the drained viewer's, nothing for the late one
        for client in (viewer, late):
            await client.close()


async def test_viewers_end_when_revoked_rotated_or_when_the_production_goes(show: Show) -> None:
    a, _b, _c, d = show.stations
    # The fourth station publishes nothing but is one of the production's stations.
    watcher = await show.watch(f"source/{a}", d)
    director = show.client(show.url(f"return/{a}", height=str(HEIGHT)), show.operator_token)
    assert (await director.post(show.http)).status == 201
    program = await show.watch("program", a)
    for v in (watcher, director, program):
        await v.wait_frames(1, timeout=3.0)
    principals = {v.id: v.principal for v in show.dist.whep_viewers.viewers(show.prod)}
    assert principals == {
        watcher.session_id: f"station:{d}",
        director.session_id: f"operator:{show.operator_id}",
        program.session_id: f"station:{a}",
    }

    await station_command(
        show.ingest, ingest_pb2.StationCommand(revoke=ingest_pb2.StationRef(id=d))
    )
    await until(lambda: show.dist.whep_viewers.get(watcher.session_id) is None, 5.0, "revoked")
    await until(lambda: watcher.pc.connectionState == "closed", 5.0, "its connection closed")

    operators = await show.bus.kv(OPERATORS_BUCKET, operators_pb2.Operator)
    entry = await operators.get(show.operator_id)
    assert entry is not None
    rotated, _new_token = with_new_token(entry.value)
    await operators.put(show.operator_id, rotated)
    await until(lambda: show.dist.whep_viewers.get(director.session_id) is None, 5.0, "rotated")
    assert len(show.dist.whep_viewers) == 1

    await (await ProductionStore.open(show.bus)).delete(show.prod)
    await until(lambda: len(show.dist.whep_viewers) == 0, 5.0, "the production's viewers ended")
    for viewer in (watcher, director, program):
        assert await viewer.delete(show.http) in (401, 404)  # ended already
        await viewer.close()
    for kind in ("return", "source", "program"):  # the deleted production's series are gone
        series = await show.metric(
            "baycast_distribution_whep_viewers", production=show.prod, handle=kind
        )
        assert series is None, kind


async def test_no_token_is_ever_logged(show: Show) -> None:
    events = {entry.get("event") for entry in show.logs}
    assert {"whep_session_started", "whep_session_ended", "whep_refused"} <= events
    text = repr(show.logs)
    for token in [*show.tokens.values(), show.operator_token]:
        assert token not in text and token[:16] not in text
