"""The audio mixer on the real program and mix-minus handles, checked with FFTs."""

from __future__ import annotations

import asyncio
import itertools
import math

import numpy as np
from scipy import signal

from services.common.bs1770 import k_weighting_sos
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import media_pb2, mixer_pb2
from services.mixer.loudness import SILENCE_LUFS
from services.mixer.service import MixerService
from tests.integration.mixer.conftest import CreateProduction
from tests.support.media_source import FakeMediaServer
from tests.support.mixer import audio_of, cards, collect, command, production, unique

Cmd = mixer_pb2.MixerCommand
AUDIO = media_pb2.Rendition(no_video=True)
RATE = 48_000
# These tests check the mix's arithmetic: the loudness control (test_loudness.py) would level it.
PLAIN_MIX = mixer_pb2.Loudness(enabled=False)


def tone_amplitude(samples: np.ndarray, hz: float) -> float:
    """Amplitude of one tone in the left channel (Hann window, peak bin around `hz`)."""
    left = samples[:, 0].astype(np.float64)
    window = np.hanning(len(left))
    spectrum = np.abs(np.fft.rfft(left * window)) / (window.sum() / 2)
    bin_hz = RATE / len(left)
    k = round(hz / bin_hz)
    return float(spectrum[max(0, k - 2) : k + 3].max())


def steady(messages: list[media_pb2.MediaFrame], skip: int = 5) -> np.ndarray:
    """Audio after the first frames (buffers filling), trimmed to a whole number of frames."""
    frames = [m for m in messages if m.WhichOneof("body") == "audio"][skip:]
    return audio_of(frames)


async def test_gain_halves_amplitude_and_mixminus_removes_the_source(
    bus: Bus,
    media: FakeMediaServer,
    announce,
    mixer: MixerService,
    create_production: CreateProduction,
) -> None:
    prod_id = unique("audio")
    a, b = (media.add(c) for c in cards(prod_id, 2))
    await announce()
    await create_production(production(prod_id, [a, b], loudness=PLAIN_MIX))
    sa = a.name.removeprefix("source/")
    endpoint = mixer.grpc_endpoint
    program = f"prod/{prod_id}/program"

    before = await collect(endpoint, program, 1.5, AUDIO)
    audio_frames = [m.audio for m in before if m.WhichOneof("body") == "audio"]
    assert {f.samples for f in audio_frames} == {1920}  # one 25 fps frame of 48 kHz each
    assert {f.channels for f in audio_frames} == {2} and {f.sample_rate for f in audio_frames} == {
        RATE
    }
    steps = {q.pts_us - p.pts_us for p, q in itertools.pairwise(audio_frames)}
    assert steps == {40_000}
    level_a = tone_amplitude(steady(before), a.tone_hz)
    level_b = tone_amplitude(steady(before), b.tone_hz)
    assert abs(20 * np.log10(level_a / (a.amplitude * 32767))) < 0.5
    assert abs(20 * np.log10(level_b / (b.amplitude * 32767))) < 0.5

    state = await command(bus, prod_id, Cmd(audio=Cmd.Audio(source=sa, gain_db=-6.0)))
    assert state.switcher.audio[0].gain_db == -6.0
    await asyncio.sleep(0.2)
    after = steady(await collect(endpoint, program, 1.5, AUDIO))
    change_db = 20 * np.log10(tone_amplitude(after, a.tone_hz) / level_a)
    assert abs(change_db + 6.0) <= 0.5, change_db
    assert abs(20 * np.log10(tone_amplitude(after, b.tone_hz) / level_b)) <= 0.5

    minus = steady(await collect(endpoint, f"prod/{prod_id}/mixminus/{sa}", 1.5, AUDIO))
    full_b = tone_amplitude(minus, b.tone_hz)
    assert abs(20 * np.log10(full_b / level_b)) <= 0.5  # B at full level
    assert tone_amplitude(minus, a.tone_hz) < level_a * 1e-3  # no energy at A's tone (< -60 dB)

    # Meters arrive about ten times a second with the program's level.
    seen: list[mixer_pb2.AudioLevels] = []

    async def on_levels(levels: mixer_pb2.AudioLevels, _subject: str) -> None:
        seen.append(levels)

    sub = await bus.subscribe(
        subject("prod", prod_id, "mixer", "levels"), mixer_pb2.AudioLevels, on_levels
    )
    await asyncio.sleep(1.0)
    await sub.unsubscribe()
    assert 6 <= len(seen) <= 16
    program_level = {lv.source: lv for lv in seen[-1].levels}[""]
    assert -12 < program_level.peak_dbfs < 0 and program_level.rms_dbfs < program_level.peak_dbfs

    # Mute and audio-follow-video: A (on program) stays, B (off program, AFV) goes silent.
    sb = b.name.removeprefix("source/")
    await command(bus, prod_id, Cmd(audio=Cmd.Audio(source=sb, afv=True)))
    await asyncio.sleep(0.2)
    afv = steady(await collect(endpoint, program, 1.0, AUDIO))
    assert tone_amplitude(afv, b.tone_hz) < level_b * 1e-3
    assert tone_amplitude(afv, a.tone_hz) > level_a * 0.4
    await command(bus, prod_id, Cmd(audio=Cmd.Audio(source=sa, mute=True)))
    await asyncio.sleep(0.2)
    muted = steady(await collect(endpoint, program, 1.0, AUDIO))
    assert np.abs(muted).max() == 0


def expected_short_term(tones: list[tuple[float, float]]) -> float:
    """BS.1770 short-term loudness of steady sines (hz, peak amplitude) on both channels: each
    channel's mean square A²/2 raised by the K-filter's gain at its frequency, summed."""
    sos = k_weighting_sos(RATE)
    energy = 0.0
    for hz, amplitude in tones:
        _, response = signal.sosfreqz(sos, worN=[hz], fs=RATE)
        energy += 2 * (amplitude * 32767 / 32768) ** 2 / 2 * abs(response[0]) ** 2
    return -0.691 + 10 * math.log10(energy)


async def test_levels_carry_short_term_loudness_of_each_source_and_the_program(
    bus: Bus,
    media: FakeMediaServer,
    announce,
    mixer: MixerService,
    create_production: CreateProduction,
) -> None:
    prod_id = unique("lufs")
    a, b = (media.add(c) for c in cards(prod_id, 2))
    b.amplitude = 0.1
    await announce()
    sa, sb = (c.name.removeprefix("source/") for c in (a, b))
    seen: list[dict[str, mixer_pb2.Level]] = []
    measured = asyncio.Event()

    async def on_levels(levels: mixer_pb2.AudioLevels, _subject: str) -> None:
        by_source = {lv.source: lv for lv in levels.levels}
        seen.append(by_source)
        # A second of readings after the first full 3 s, so the start's buffering has passed.
        valid = [s for s in seen if s[sa].short_term_lufs > SILENCE_LUFS]
        if len(valid) >= 10:
            measured.set()

    sub = await bus.subscribe(
        subject("prod", prod_id, "mixer", "levels"), mixer_pb2.AudioLevels, on_levels
    )
    try:
        await create_production(production(prod_id, [a, b], loudness=PLAIN_MIX))
        await asyncio.wait_for(measured.wait(), 20)
    finally:
        await sub.unsubscribe()
    first = next(s for s in seen if s[sa].short_term_lufs > SILENCE_LUFS)
    assert all(s[sa].short_term_lufs == SILENCE_LUFS for s in seen[: seen.index(first)])
    last = seen[-1]
    assert set(last) == {"", sa, sb}
    want_a = expected_short_term([(a.tone_hz, a.amplitude)])
    want_b = expected_short_term([(b.tone_hz, b.amplitude)])
    want_program = expected_short_term([(a.tone_hz, a.amplitude), (b.tone_hz, b.amplitude)])
    assert abs(last[sa].short_term_lufs - want_a) <= 0.5, (last[sa], want_a)
    assert abs(last[sb].short_term_lufs - want_b) <= 0.5, (last[sb], want_b)
    assert abs(last[""].short_term_lufs - want_program) <= 0.5, (last[""], want_program)
