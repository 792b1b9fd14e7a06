"""The program's loudness control on the real mixer: a source at -35 LUFS and another at -15
LUFS, each on air in turn for 30 s (audio follows video), recorded from the program and from a
station's return and measured by Debian ffmpeg's `ebur128` filter (integrated loudness, true
peak), which shares nothing with the mixer."""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY
from scipy import signal

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import media_pb2, mixer_pb2
from services.mixer.service import MixerService
from tests.integration.mixer.conftest import CreateProduction
from tests.support.media_source import FakeMediaServer
from tests.support.mixer import audio_of, cards, collect, command, production, unique
from tests.unit.mixer.r128 import K_SOS

Cmd = mixer_pb2.MixerCommand
RATE = 48_000
ON_AIR_S = 30.0
TARGET = -23.0


def amplitude_for(lufs: float, hz: float) -> float:
    """The peak amplitude (full scale 1) of a tone on both channels that reads `lufs`."""
    _, response = signal.sosfreqz(K_SOS, worN=[hz], fs=RATE)
    return 10 ** ((lufs + 0.691) / 20) / abs(response[0]) * 32768 / 32767


def ebur128(samples: np.ndarray, path: Path) -> tuple[float, float]:
    """(integrated LUFS, true peak dBTP) of int16 samples, by ffmpeg's ebur128 filter."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(samples.shape[1])
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())
    run = subprocess.run(
        [
            "ffmpeg",
            "-nostats",
            "-hide_banner",
            "-i",
            str(path),
            "-af",
            "ebur128=peak=true",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = run.stderr[run.stderr.rindex("Summary:") :]
    integrated = re.search(r"I:\s+(-?[\d.]+) LUFS", summary)
    peak = re.search(r"Peak:\s+(-?[\d.]+|-inf) dBFS", summary)
    assert integrated and peak, summary
    return float(integrated.group(1)), float(peak.group(1))


@pytest.mark.timeout(180)
async def test_sources_at_minus_35_and_minus_15_lufs_air_at_the_target(
    bus: Bus,
    media: FakeMediaServer,
    announce,
    mixer: MixerService,
    create_production: CreateProduction,
    tmp_path: Path,
) -> None:
    prod_id = unique("loud")
    quiet, loud = (media.add(c) for c in cards(prod_id, 2))
    quiet.amplitude = amplitude_for(-35.0, quiet.tone_hz)
    loud.amplitude = amplitude_for(-15.0, loud.tone_hz)
    await announce()
    sq, sl = (c.name.removeprefix("source/") for c in (quiet, loud))
    follow = [mixer_pb2.SourceAudio(source=s, afv=True) for s in (sq, sl)]
    await create_production(production(prod_id, [quiet, loud], audio=follow))
    levels: list[mixer_pb2.AudioLevels] = []

    async def on_levels(message: mixer_pb2.AudioLevels, _subject: str) -> None:
        levels.append(message)

    sub = await bus.subscribe(
        subject("prod", prod_id, "mixer", "levels"), mixer_pb2.AudioLevels, on_levels
    )
    endpoint = mixer.grpc_endpoint
    audio = media_pb2.Rendition(no_video=True)
    seconds = 2 * ON_AIR_S + 1
    program_task = asyncio.create_task(collect(endpoint, f"prod/{prod_id}/program", seconds, audio))
    # The loud station's return: the program while the quiet one is on air, then nothing.
    return_task = asyncio.create_task(
        collect(endpoint, f"prod/{prod_id}/mixminus/{sl}", seconds, audio)
    )
    state = await command(bus, prod_id, Cmd(cut=Cmd.Cut(source=sq)))
    assert state.switcher.program == sq
    await asyncio.sleep(ON_AIR_S)
    quiet_levels = list(levels)
    await command(bus, prod_id, Cmd(cut=Cmd.Cut(source=sl)))
    program, minus = await program_task, await return_task
    await sub.unsubscribe()

    recording = audio_of(program)
    assert len(recording) >= 2 * ON_AIR_S * RATE
    integrated, true_peak = ebur128(recording, tmp_path / "program.wav")
    assert abs(integrated - TARGET) <= 1.0, integrated
    assert true_peak <= -1.0, true_peak
    half = len(recording) // 2  # each source's turn alone
    for part, name in ((recording[:half], "quiet"), (recording[half:], "loud")):
        alone, _ = ebur128(part, tmp_path / f"{name}.wav")
        assert abs(alone - TARGET) <= 1.0, (name, alone)
    minus_loudness, minus_peak = ebur128(audio_of(minus), tmp_path / "return.wav")
    assert abs(minus_loudness - TARGET) <= 1.0 and minus_peak <= -1.0

    # The leveler's gain on the meters and as a metric: about +12 dB for the quiet source,
    # -8 dB for the loud one.
    program_gain = [{lv.source: lv for lv in m.levels}[""].leveler_gain_db for m in levels]
    lifted = [{lv.source: lv for lv in m.levels}[""].leveler_gain_db for m in quiet_levels]
    assert abs(lifted[-1] - 12.0) <= 1.0 and abs(program_gain[-1] + 8.0) <= 1.0
    returns = {r.source: r for r in quiet_levels[-1].returns}
    assert returns[sl].leveler_gain_db == lifted[-1]
    metric = REGISTRY.get_sample_value(
        "baycast_mixer_audio_leveler_gain_db", {"production": prod_id, "bus": "program"}
    )
    assert metric is not None and math.isclose(metric, program_gain[-1], abs_tol=1.0)
