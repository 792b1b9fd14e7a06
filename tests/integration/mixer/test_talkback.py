"""Talkback end to end: a director's microphone over WHIP into one station's return, by FFT.

A real ingest with two stations publishing test cards (each with its own tone) and a talk source
published over WHIP with a director's token; a real mixer mixing them; the mix-minus handles read
over gRPC. The operators are written straight into the `operators` bucket (as the control service
would).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import nats.js.api
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from services.common import ice
from services.common.asrun import ASRUN_STREAM
from services.common.bus import PREFIX, Bus, decode, subject
from services.common.credentials import OPERATORS_BUCKET, with_new_token
from services.common.ctl import Ctl
from services.common.gen.baycast.v1 import media_pb2, mixer_pb2, operators_pb2, rundown_pb2
from services.ingest.service import IngestService
from services.mixer import talk_ctl
from services.mixer.audio_mixer import TALKBACK_DUCK_DB
from services.mixer.service import MixerService
from services.mixer.talk_ctl import TONE_AMPLITUDE, TalkTrack, ToneTrack, WhipTalk
from services.station.testcard import tone_hz
from tests.integration.mixer.conftest import CreateProduction
from tests.support.mixer import audio_of, collect, unique
from tests.support.nats import NatsServer
from tests.support.station import add_station, publishing, running_ingest, wait_online

pytestmark = pytest.mark.timeout(120)

Cmd = mixer_pb2.MixerCommand
AUDIO = media_pb2.Rendition(no_video=True)
RATE = 48_000
STATION_A, STATION_B = "tk-a", "tk-c"  # test-card tones 1850 Hz and 2450 Hz
TALK_HZ = 1000.0
CLI_TALK_HZ = 1300.0
WINDOW_S = 2.0


def tone_amplitude(samples: np.ndarray, hz: float) -> float:
    """Amplitude of one tone in the left channel (Hann window, peak bin around `hz`)."""
    left = samples[:, 0].astype(np.float64)
    window = np.hanning(len(left))
    spectrum = np.abs(np.fft.rfft(left * window)) / (window.sum() / 2)
    k = round(hz * len(left) / RATE)
    return float(spectrum[max(0, k - 2) : k + 3].max())


def db(ratio: float) -> float:
    return float(20 * np.log10(max(ratio, 1e-12)))


def steady(messages: list[media_pb2.MediaFrame], skip: int = 5) -> np.ndarray:
    frames = [m for m in messages if m.WhichOneof("body") == "audio"][skip:]
    return audio_of(frames)


async def listen(mixer: MixerService, prod: str, *names: str) -> dict[str, np.ndarray]:
    """`WINDOW_S` of sound from each of the production's handles `names`, at the same time."""
    windows = await asyncio.gather(
        *(collect(mixer.grpc_endpoint, f"prod/{prod}/{n}", WINDOW_S, AUDIO) for n in names)
    )
    return {name: steady(window) for name, window in zip(names, windows, strict=True)}


async def until_heard(mixer: MixerService, handle: str, hz: float, floor: float) -> None:
    """Until `hz` is heard above `floor` in `handle` (bounded: half-second looks for 10 s)."""
    for _ in range(20):
        window = steady(await collect(mixer.grpc_endpoint, handle, 0.5, AUDIO), skip=2)
        if len(window) and tone_amplitude(window, hz) > floor:
            return
    raise AssertionError(f"{hz} Hz never reached {handle}")


async def audio_offer() -> str:
    ice.configure(("127.0.0.1",))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(ToneTrack(TALK_HZ), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def add_operator(
    bus: Bus, ingest: IngestService, operator_id: str, role: operators_pb2.Role.ValueType
) -> str:
    """An operator with a fresh token, once ingest's credential mirror holds it."""
    bucket = await bus.kv(OPERATORS_BUCKET, operators_pb2.Operator)
    record, token = with_new_token(operators_pb2.Operator(id=operator_id, name="张导", role=role))
    await bucket.put(operator_id, record)
    for _ in range(100):
        if ingest.credentials.operators.get(operator_id) == record:
            return token
        await asyncio.sleep(0.05)
    raise AssertionError(f"ingest never saw operator {operator_id}")


@contextlib.asynccontextmanager
async def talking(url: str, token: str, hz: float) -> AsyncIterator[WhipTalk]:
    """A director's microphone (a tone) published over WHIP until the block ends."""
    async with aiohttp.ClientSession() as http:
        whip = WhipTalk(http, url, token)
        track = TalkTrack()
        track.play(ToneTrack(hz))
        try:
            await whip.publish(track)
            yield whip
        finally:
            await whip.close()
            track.stop()


async def asrun_talks(bus: Bus, prod: str, count: int) -> list[rundown_pb2.AsRunEntry]:
    """The production's first `count` talk entries of the as-run log."""
    sub = await bus.nc.jetstream().subscribe(
        PREFIX + f"prod.{prod}.asrun",
        stream=ASRUN_STREAM,
        ordered_consumer=True,
        deliver_policy=nats.js.api.DeliverPolicy.ALL,
    )
    entries: list[rundown_pb2.AsRunEntry] = []
    try:
        while len(entries) < count:
            entry = decode((await sub.next_msg(timeout=5.0)).data, rundown_pb2.AsRunEntry)
            if entry.cue == "talk":
                entries.append(entry)
    finally:
        await sub.unsubscribe()
    return entries


async def test_talkback_reaches_only_the_addressed_stations_return(
    nats_server: NatsServer, bus: Bus, mixer: MixerService, create_production: CreateProduction
) -> None:
    a_hz, b_hz = tone_hz(STATION_A), tone_hz(STATION_B)
    assert min(abs(a_hz - b_hz), abs(a_hz - TALK_HZ), abs(b_hz - CLI_TALK_HZ)) >= 300
    prod = unique("talk")
    async with running_ingest(nats_server.url) as ingest:
        token_a = await add_station(ingest, STATION_A, "甲台")
        token_b = await add_station(ingest, STATION_B, "乙台")
        zhang = await add_operator(bus, ingest, "zhang", operators_pb2.ROLE_DIRECTOR)
        wang = await add_operator(bus, ingest, "wang", operators_pb2.ROLE_GRAPHICS)
        talk_url = f"http://127.0.0.1:{ingest.http.port}/whip/talk/zhang"

        # Refusals first: they allocate nothing.
        offer = (await audio_offer()).encode()
        async with aiohttp.ClientSession() as http:
            for token, status in ((token_a, 403), (wang, 403), ("wrong", 401), (None, 401)):
                headers = {"Content-Type": "application/sdp"}
                if token is not None:
                    headers["Authorization"] = f"Bearer {token}"
                async with http.post(talk_url, data=offer, headers=headers) as resp:
                    assert resp.status == status, (token, await resp.text())
        assert "talk_zhang" not in ingest.sources.live and ingest.whip.sessions == {}

        size = (320, 180)
        async with (
            publishing(ingest, STATION_A, token_a, size=size) as _a,
            publishing(ingest, STATION_B, token_b, size=size) as _b,
        ):
            await wait_online(ingest, STATION_A)
            await wait_online(ingest, STATION_B)
            await create_production(
                mixer_pb2.Production(
                    id=prod,
                    width=1280,
                    height=720,
                    fps=25,
                    sources=[
                        mixer_pb2.ProductionSource(id=STATION_A, name="甲台"),
                        mixer_pb2.ProductionSource(id=STATION_B, name="乙台"),
                    ],
                    # The plain mix: the ducking is checked by the tones' levels, which the
                    # loudness control (test_loudness.py) would level.
                    loudness=mixer_pb2.Loudness(enabled=False),
                )
            )
            minus_a, minus_b = f"mixminus/{STATION_A}", f"mixminus/{STATION_B}"
            await until_heard(mixer, f"prod/{prod}/{minus_a}", b_hz, 300)
            await until_heard(mixer, f"prod/{prod}/{minus_b}", a_hz, 300)
            before = await listen(mixer, prod, minus_a, minus_b)

            async with talking(talk_url, zhang, TALK_HZ):
                for _ in range(200):  # audio alone: online after ingest's 3 s of sound
                    live = ingest.sources.live.get("talk_zhang")
                    if live is not None and live.state.online:
                        break
                    await asyncio.sleep(0.05)
                assert live is not None and live.state.online
                assert (live.state.name, live.state.protocol) == ("张导", "whip")
                assert not live.state.station and not live.state.video.width  # voice only
                async with aiohttp.ClientSession() as http:  # one talk per director
                    headers = {
                        "Content-Type": "application/sdp",
                        "Authorization": f"Bearer {zhang}",
                    }
                    async with http.post(talk_url, data=offer, headers=headers) as resp:
                        assert resp.status == 409

                states: list[mixer_pb2.MixerState] = []

                async def on_state(state: mixer_pb2.MixerState, _subject: str) -> None:
                    states.append(state)

                sub = await bus.subscribe(
                    subject("prod", prod, "mixer", "state"), mixer_pb2.MixerState, on_state
                )
                talk = Cmd.Talk(source="talk_zhang", stations=[STATION_A], on=True)
                reply = await bus.request(
                    subject("prod", prod, "mixer", "cmd"),
                    Cmd(talk=talk),
                    mixer_pb2.MixerState,
                    operator="zhang",
                )
                (state,) = reply.talk
                assert (state.source, list(state.stations), state.operator) == (
                    "talk_zhang",
                    [STATION_A],
                    "zhang",
                )
                assert state.since_us > 0
                await until_heard(mixer, f"prod/{prod}/{minus_a}", TALK_HZ, 300)
                during = await listen(mixer, prod, minus_a, minus_b, "program")
                published = [s for s in states if s.talk]
                assert published and published[0].talk[0].operator == "zhang"
                await sub.unsubscribe()

                a, b = during[minus_a], during[minus_b]
                heard = tone_amplitude(a, TALK_HZ)
                assert abs(db(heard / (TONE_AMPLITUDE * 32767))) <= 3.0  # near its own level
                assert tone_amplitude(b, TALK_HZ) < heard * 1e-3  # b hears no talk (< -60 dB)
                assert tone_amplitude(during["program"], TALK_HZ) < heard * 1e-3
                ducked = db(tone_amplitude(a, b_hz) / tone_amplitude(before[minus_a], b_hz))
                assert abs(ducked + TALKBACK_DUCK_DB) <= 1.0, ducked
                untouched = db(tone_amplitude(b, a_hz) / tone_amplitude(before[minus_b], a_hz))
                assert abs(untouched) <= 1.0, untouched

                off = Cmd.Talk(source="talk_zhang", stations=[STATION_A], on=False)
                reply = await bus.request(
                    subject("prod", prod, "mixer", "cmd"),
                    Cmd(talk=off),
                    mixer_pb2.MixerState,
                    operator="zhang",
                )
                assert not reply.talk
                after = await listen(mixer, prod, minus_a)
                assert tone_amplitude(after[minus_a], TALK_HZ) < heard * 1e-3
                restored = db(
                    tone_amplitude(after[minus_a], b_hz) / tone_amplitude(before[minus_a], b_hz)
                )
                assert abs(restored) <= 1.0, restored

            entries = await asrun_talks(bus, prod, 2)
            assert [(e.operator, e.detail) for e in entries] == [
                ("zhang", f"talk_zhang on: {STATION_A}"),
                ("zhang", f"talk_zhang off: {STATION_A}"),
            ]

            # `baycast ctl talk`: publish, wait online, talk to b, play, talk off, DELETE.
            for _ in range(100):
                if "talk_zhang" not in ingest.sources.live:
                    break
                await asyncio.sleep(0.05)
            args = argparse.Namespace(
                prod=prod,
                to=STATION_B,
                all=False,
                file=None,
                mic=None,
                tone=CLI_TALK_HZ,
                seconds=6.0,
                token=zhang,
                operator="zhang",
                ingest=f"http://127.0.0.1:{ingest.http.port}",
                ice_host=["127.0.0.1"],
            )
            async with Ctl(nats_server.url) as ctl:
                cli = asyncio.create_task(talk_ctl.talk(ctl, args))
                await until_heard(mixer, f"prod/{prod}/{minus_b}", CLI_TALK_HZ, 300)
                assert await asyncio.wait_for(cli, 15) == 0
            entries = await asrun_talks(bus, prod, 4)
            assert [e.detail for e in entries[2:]] == [
                f"talk_zhang on: {STATION_B}",
                f"talk_zhang off: {STATION_B}",
            ]
            for _ in range(100):  # the CLI DELETEd its session
                if "talk_zhang" not in ingest.sources.live:
                    break
                await asyncio.sleep(0.05)
            assert "talk_zhang" not in ingest.sources.live
