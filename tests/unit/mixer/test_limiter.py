"""The true-peak limiter: 0 dBFS bursts and inter-sample peaks come out under -1 dBTP, measured
with scipy's 4x resampler (tests/unit/mixer/r128.py), not with the limiter's own filter."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer.audio_mixer import AudioMixer
from services.mixer.limiter import TruePeakLimiter
from tests.unit.mixer.r128 import true_peak_dbtp

RATE = 48_000
FRAME = 1920
FULL = 32768.0


def tone(seconds: float, dbfs: float, hz: float = 997.0, phase: float = 0.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    wave = np.sin(2 * np.pi * hz * t + phase) * FULL * 10 ** (dbfs / 20)
    return np.stack([wave, wave], axis=1)


def limit(samples: np.ndarray, ceiling: float = -1.0) -> np.ndarray:
    limiter = TruePeakLimiter(RATE, 2, ceiling)
    return np.concatenate(
        [limiter.process(samples[i : i + FRAME]) for i in range(0, len(samples), FRAME)]
    )


def test_a_0_dbfs_burst_never_exceeds_minus_1_dbtp() -> None:
    burst = np.clip(tone(0.5, 0.0), -32768, 32767)
    signal = np.concatenate((tone(2.0, -30.0), burst, tone(2.0, -30.0)))
    assert true_peak_dbtp(signal) > -0.1
    out = limit(signal)
    assert true_peak_dbtp(out) <= -1.0
    # It limits the burst, not what is around it: the quiet tone a second after is untouched.
    delay = TruePeakLimiter(RATE, 2).delay
    after = slice(3 * RATE + delay, 4 * RATE)
    np.testing.assert_allclose(out[after], signal[after.start - delay : after.stop - delay])


def test_inter_sample_peaks_are_caught() -> None:
    # A quarter-rate sine sampled 45 degrees off its crests: every sample is at 0 dBFS, the
    # waveform between them peaks 3 dB higher. Then a burst of noise up to 16 kHz peaking at
    # 0 dBFS. Quiet before and after: a measurement's own abrupt start or end would ring.
    t = np.arange(RATE)
    wave = np.sin(np.pi / 2 * t + np.pi / 4) / np.sin(np.pi / 4) * 32767
    quarter = np.clip(np.stack([wave, wave], axis=1), -32767, 32767)
    band = signal.butter(8, 16000, fs=RATE, output="sos")
    noise = signal.sosfilt(band, np.random.default_rng(5).standard_normal((RATE, 2)), axis=0)
    noise *= 32767 / np.abs(noise).max()
    quiet = tone(0.5, -40.0)
    burst = np.concatenate((quiet, quarter, quiet, noise, quiet))
    assert true_peak_dbtp(burst) > 2.0
    assert true_peak_dbtp(limit(burst)) <= -1.0


@pytest.mark.parametrize("ceiling", [-1.0, -2.0])
def test_the_ceiling_is_a_production_setting(ceiling: float) -> None:
    quiet = tone(0.5, -40.0)
    loud = np.concatenate((quiet, tone(1.0, -2.0), tone(1.0, 0.0, hz=5000.0), quiet))
    assert true_peak_dbtp(limit(loud, ceiling)) <= ceiling


def test_under_the_ceiling_the_signal_passes_unchanged_only_delayed() -> None:
    signal = tone(1.0, -8.0)
    out = limit(signal)
    delay = TruePeakLimiter(RATE, 2).delay
    np.testing.assert_array_equal(out[delay:], signal[:-delay])


def test_a_0_dbfs_burst_on_a_source_stays_under_minus_1_dbtp_in_the_program() -> None:
    mixer = AudioMixer(["a"], RATE, 2, 25, loudness=mixer_pb2.Loudness())
    signal = np.concatenate((tone(4.0, -26.0), tone(0.3, 0.0), tone(2.0, -26.0)))
    samples = np.clip(np.rint(signal), -32768, 32767).astype(np.int16)
    out = []
    for i in range(0, len(samples), FRAME):
        mixer.push("a", samples[i : i + FRAME])
        out.append(mixer.mix({"a"}, set()).program)
    program = np.concatenate(out)
    assert true_peak_dbtp(program) <= -1.0
    levels = {level.source: level for level in mixer.levels()}
    assert levels[""].limiter_reduction_db > 3.0


def test_each_return_that_differs_from_the_program_is_limited_too() -> None:
    mixer = AudioMixer(["a", "b"], RATE, 2, 25, loudness=mixer_pb2.Loudness())
    a = np.concatenate((tone(3.0, -24.0), tone(0.3, 0.0), tone(1.0, -24.0)))
    b = tone(len(a) / RATE, -30.0, hz=300.0)
    pcm = [np.clip(np.rint(x), -32768, 32767).astype(np.int16) for x in (a, b)]
    program, minus_b, minus_a = [], [], []
    for i in range(0, len(a), FRAME):
        mixer.push("a", pcm[0][i : i + FRAME])
        mixer.push("b", pcm[1][i : i + FRAME])
        result = mixer.mix({"a", "b"}, {"a", "b"})
        program.append(result.program)
        minus_b.append(result.mixminus["b"])
        minus_a.append(result.mixminus["a"])
    assert set(mixer.bus.returns) == {"a", "b"}  # both differ from the program
    for out in (program, minus_b):
        assert true_peak_dbtp(np.concatenate(out)) <= -1.0
    # b's tone in a's return: at the program's leveler gain, not lifted to the target alone.
    levels = mixer.levels()
    returns = {level.source: level for level in mixer.return_levels()}
    program_level = next(level for level in levels if level.source == "")
    assert returns["a"].leveler_gain_db == program_level.leveler_gain_db
    assert returns["b"].limiter_reduction_db > 0.5  # the burst is in b's return
    assert returns["a"].limiter_reduction_db == 0.0
    quiet_b = np.concatenate(minus_a)[-RATE // 2 :]
    gain = 10 ** (program_level.leveler_gain_db / 20)
    want = 32768 * 10 ** (-30 / 20) * gain
    assert np.abs(quiet_b).max() == pytest.approx(want, rel=0.05)


def test_a_station_whose_sound_runs_dry_never_hears_itself_in_its_return() -> None:
    # b is silent: a's return holds nothing but silence, also on the frames where a's sound
    # runs dry (a late packet) and it leaves the mix, while the program's limiter still holds
    # the last samples of a's tone from the frame before, and where it joins the mix again and
    # a's return gets a limiter of its own, started from the program's.
    mixer = AudioMixer(["a", "b"], RATE, 2, 25, loudness=mixer_pb2.Loudness())
    a = np.clip(np.rint(tone(2.0, -20.0)), -32768, 32767).astype(np.int16)
    silence = np.zeros((FRAME, 2), dtype=np.int16)
    dry = {20, 21, 35}  # frames without a packet of a's
    program, returned = [], []
    for i in range(len(a) // FRAME):
        if i not in dry:
            mixer.push("a", a[i * FRAME : (i + 1) * FRAME])
        mixer.push("b", silence)
        result = mixer.mix({"a", "b"}, {"a"})
        program.append(result.program)
        returned.append(result.mixminus["a"])
    delay = mixer.bus.limiter.delay
    # a's tone in the program's first samples after it ran dry: what must not reach its return.
    assert np.abs(program[20][:delay]).max() > 1000
    assert not np.concatenate(returned).any()
