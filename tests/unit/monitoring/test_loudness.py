"""BS.1770-4 / EBU R128 loudness against EBU Tech 3341 / 3342 style signals made here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.common.bs1770 import k_weighting_sos
from services.monitoring.loudness import LoudnessMeter

FS = 48_000


def sine(dbfs: float, seconds: float, freq: float = 1000.0, channels: int = 2) -> np.ndarray:
    t = np.arange(round(FS * seconds)) / FS
    x = 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t)
    return np.repeat(x[:, None], channels, axis=1)


def fed(*parts: np.ndarray, chunk: int = 1920) -> LoudnessMeter:
    meter = LoudnessMeter(FS, parts[0].shape[1])
    signal = np.concatenate(parts)
    for start in range(0, len(signal), chunk):
        meter.feed(signal[start : start + chunk])
    return meter


def test_stereo_1khz_sine_at_minus_23_dbfs_reads_minus_23_lufs() -> None:
    meter = fed(sine(-23, 20))
    assert meter.momentary == pytest.approx(-23.0, abs=0.1)
    assert meter.short_term == pytest.approx(-23.0, abs=0.1)
    assert meter.integrated == pytest.approx(-23.0, abs=0.1)
    assert meter.loudness_range == pytest.approx(0.0, abs=0.1)


def test_int16_input_reads_the_same() -> None:
    pcm = (sine(-23, 5) * 32768).astype(np.int16)
    meter = LoudnessMeter(FS, 2)
    meter.feed_int16(pcm)
    assert meter.integrated == pytest.approx(-23.0, abs=0.1)


def test_chunk_size_does_not_change_the_result() -> None:
    signal = np.concatenate([sine(-30, 2), sine(-20, 3, freq=440)])
    whole, chunked = fed(signal, chunk=len(signal)), fed(signal, chunk=777)
    assert chunked.integrated == pytest.approx(whole.integrated, abs=1e-9)
    assert chunked.short_term == pytest.approx(whole.short_term, abs=1e-9)
    assert chunked.true_peak == pytest.approx(whole.true_peak, abs=1e-6)


def test_relative_gate_tech_3341_case_3() -> None:
    # -36 dBFS for 10 s, -23 dBFS for 60 s, -36 dBFS for 10 s: the quiet parts fall under the
    # relative gate, the result is -23.0 LUFS.
    meter = fed(sine(-36, 10), sine(-23, 60), sine(-36, 10), chunk=48_000)
    assert meter.integrated == pytest.approx(-23.0, abs=0.1)
    ungated = 10 * math.log10((10 * 10 ** (-3.6) * 2 + 60 * 10 ** (-2.3)) / 80)
    assert ungated < -23.5  # without the gate the answer would be off


def test_absolute_gate_tech_3341_case_4() -> None:
    # Adds -72 dBFS (under the -70 LUFS absolute gate) at both ends.
    meter = fed(
        sine(-72, 10), sine(-36, 10), sine(-23, 60), sine(-36, 10), sine(-72, 10), chunk=48_000
    )
    assert meter.integrated == pytest.approx(-23.0, abs=0.1)


def test_silence_is_minus_infinity() -> None:
    meter = fed(np.zeros((FS * 4, 2)))
    assert meter.momentary == -math.inf
    assert meter.short_term == -math.inf
    assert meter.integrated == -math.inf
    assert meter.true_peak_dbtp == -math.inf


def test_windows_need_their_length_of_audio() -> None:
    meter = fed(sine(-23, 0.3))
    assert meter.momentary == -math.inf
    meter.feed(sine(-23, 0.1))
    assert meter.momentary == pytest.approx(-23.0, abs=0.1)
    assert meter.short_term == -math.inf


def test_momentary_follows_a_step_within_400_ms() -> None:
    meter = fed(sine(-23, 3), sine(-33, 0.4))
    assert meter.momentary == pytest.approx(-33.0, abs=0.1)
    assert -33 < meter.short_term < -23


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [(-20, -30, 10.0), (-20, -15, 5.0), (-40, -20, 20.0)],
)
def test_loudness_range_tech_3342_cases_1_to_3(
    first: float, second: float, expected: float
) -> None:
    meter = fed(sine(first, 20), sine(second, 20), chunk=48_000)
    assert meter.loudness_range == pytest.approx(expected, abs=1.0)


def test_true_peak_finds_inter_sample_peaks() -> None:
    # A sine at fs/4 sampled 45 degrees off its peaks: every sample is at 0.707 of the peak.
    t = np.arange(FS) / FS
    x = 0.5 * np.sin(2 * np.pi * (FS / 4) * t + np.pi / 4)
    x = np.repeat(x[:, None], 2, axis=1)
    meter = fed(x)
    sample_peak = 20 * math.log10(np.abs(x).max())
    assert meter.true_peak_dbtp > sample_peak + 2.5
    assert meter.true_peak_dbtp == pytest.approx(20 * math.log10(0.5), abs=0.5)


def test_k_weighting_at_48k_matches_the_bs1770_coefficients() -> None:
    sos = k_weighting_sos(48_000)
    # ITU-R BS.1770-4, tables 1 and 2.
    assert sos[0, :3] == pytest.approx([1.53512485958697, -2.69169618940638, 1.19839281085285])
    assert sos[0, 4:] == pytest.approx([-1.69065929318241, 0.73248077421585])
    assert sos[1, 4:] == pytest.approx([-1.99004745483398, 0.99007225036621])


def test_surround_channels_weigh_more_and_lfe_nothing() -> None:
    x = sine(-30, 5, channels=1)[:, 0]
    five_one = np.zeros((len(x), 6))
    five_one[:, 4] = x  # Ls
    ls = LoudnessMeter(FS, 6)
    ls.feed(five_one)
    left = LoudnessMeter(FS, 6)
    five_one[:, 4], five_one[:, 0] = 0, x
    left.feed(five_one)
    assert ls.integrated - left.integrated == pytest.approx(10 * math.log10(1.41), abs=0.01)
    lfe = LoudnessMeter(FS, 6)
    five_one[:, 0], five_one[:, 3] = 0, x
    lfe.feed(five_one)
    assert lfe.integrated == -math.inf
