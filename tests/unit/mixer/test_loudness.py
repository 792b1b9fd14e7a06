"""Short-term loudness against ITU-R BS.1770 and EBU Tech 3341, fed a video frame at a time."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal

from services.mixer.audio_mixer import AudioMixer
from services.mixer.loudness import SILENCE_LUFS, LoudnessBank, ShortTermLoudness

RATE = 48_000
FULL = 32768.0
# BS.1770-4's own K-weighting coefficients at 48 kHz (tables 1 and 2), for the expected values.
BS1770_SHELF = [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0]
BS1770_SHELF += [-1.69065929318241, 0.73248077421585]
BS1770_HIGHPASS = [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621]
BS1770_SOS = np.array([BS1770_SHELF, BS1770_HIGHPASS])


def k_gain_db(hz: float) -> float:
    _, response = signal.sosfreqz(BS1770_SOS, worN=[hz], fs=RATE)
    return float(20 * np.log10(abs(response[0])))


def expected_lufs(amplitudes: list[float], hz: float) -> float:
    """BS.1770 for a steady sine of peak `amplitudes` (full scale 1) per channel: -0.691 +
    10 log10 of the summed mean squares (A²/2 each) raised by the K-filter's gain at `hz`."""
    energy = sum(a * a / 2 for a in amplitudes)
    return -0.691 + 10 * math.log10(energy) + k_gain_db(hz)


def sine(hz: float, seconds: float, amplitudes: list[float]) -> np.ndarray:
    """int16-scale float32 samples (n, channels), as the mixer meters them."""
    t = np.arange(round(seconds * RATE)) / RATE
    wave = np.sin(2 * np.pi * hz * t)
    return np.stack([wave * a * FULL for a in amplitudes], axis=1).astype(np.float32)


def measure(samples: np.ndarray, frame: int = 1920) -> ShortTermLoudness:
    meter = ShortTermLoudness(RATE, samples.shape[1])
    for start in range(0, len(samples), frame):
        meter.add(samples[start : start + frame])
    return meter


def test_a_1khz_sine_at_minus_20_dbfs_in_both_channels() -> None:
    amplitude = 10 ** (-20 / 20)
    want = expected_lufs([amplitude, amplitude], 1000)
    # Two channels of A²/2 add to A² (-20 dB); the K-filter lifts 1 kHz by 0.698 dB, which
    # BS.1770's -0.691 all but cancels: EBU Tech 3341 case 1 reads -23.0 at -23 dBFS likewise.
    assert want == pytest.approx(-20.0, abs=0.01)
    meter = measure(sine(1000, 4, [amplitude, amplitude]))
    assert meter.lufs == pytest.approx(want, abs=0.2)


def test_a_997hz_sine_in_one_channel_follows_bs1770s_calibration() -> None:
    # BS.1770: a 0 dBFS 997 Hz sine in one front channel reads -3.01 LKFS; at half scale,
    # 6.02 dB less.
    meter = measure(sine(997, 3.5, [0.5, 0.0]), frame=1600)  # 30 fps frames
    assert expected_lufs([0.5, 0.0], 997) == pytest.approx(-3.01 - 6.02, abs=0.01)
    assert meter.lufs == pytest.approx(-9.03, abs=0.2)


def test_frames_of_any_size_give_the_whole_signals_reading() -> None:
    rng = np.random.default_rng(7)
    noise = (rng.standard_normal((5 * RATE, 2)) * 3000).astype(np.float32)
    filtered = signal.sosfilt(BS1770_SOS, noise.astype(np.float64) / FULL, axis=0)
    last = filtered[-3 * RATE :]
    want = -0.691 + 10 * math.log10(float(np.mean(np.square(last), axis=0).sum()))
    for frame in (1920, 1600, 4800, 777):
        assert measure(noise, frame).lufs == pytest.approx(want, abs=0.01), frame


def test_silence_and_the_first_three_seconds_read_minus_120() -> None:
    assert measure(np.zeros((4 * RATE, 2), dtype=np.float32)).lufs == SILENCE_LUFS
    tone = sine(1000, 4, [0.1, 0.1])
    meter = ShortTermLoudness(RATE, 2)
    silence = np.zeros((1920, 2), dtype=np.float32)
    for _ in range(50):
        meter.add(silence, live=False)  # before the first sound: not measured at all
    for start in range(0, 73 * 1920, 1920):  # 2.92 s of tone
        meter.add(tone[start : start + 1920])
    assert meter.lufs == SILENCE_LUFS
    for start in range(73 * 1920, 76 * 1920, 1920):
        meter.add(tone[start : start + 1920])
    assert meter.lufs == pytest.approx(-20.0, abs=0.2)
    # Half the window silent: half the energy, 3.01 LU less; then all of it silent.
    for _ in range(round(1.5 * RATE / 1920)):
        meter.add(silence, live=False)
    assert meter.lufs == pytest.approx(-20.0 - 3.01, abs=0.2)
    for _ in range(80):
        meter.add(silence, live=False)
    assert meter.lufs == SILENCE_LUFS


def test_the_mixers_levels_carry_each_sources_and_the_programs_loudness() -> None:
    mixer = AudioMixer(["a", "b"], RATE, 2, 25)
    a = sine(997, 4, [0.25, 0.25]).astype(np.int16)
    for start in range(0, len(a), 1920):
        mixer.push("a", a[start : start + 1920])
        mixer.mix({"a"}, set())
    levels = {level.source: level for level in mixer.levels()}
    want = expected_lufs([0.25, 0.25], 997)
    assert levels["a"].short_term_lufs == pytest.approx(want, abs=0.2)
    assert levels[""].short_term_lufs == pytest.approx(want, abs=0.2)  # a alone, master 0 dB
    assert levels["b"].short_term_lufs == SILENCE_LUFS


def test_a_bank_reads_each_signal_as_its_own_meter_and_keeps_them_across_changes() -> None:
    rng = np.random.default_rng(3)
    signals = {
        "a": sine(1000, 4, [0.1, 0.1]),
        "b": (rng.standard_normal((4 * RATE, 2)) * 2000).astype(np.float32),
        "c": np.zeros((4 * RATE, 2), dtype=np.float32),
    }
    bank = LoudnessBank(RATE, 2, ["a", "b", "c"])
    alone = {name: ShortTermLoudness(RATE, 2) for name in signals}
    for start in range(0, 4 * RATE, 1920):
        frames = np.stack([s[start : start + 1920] for s in signals.values()], axis=1)
        live = np.array([True, True, False])
        bank.add(frames, live)
        for (name, meter), on in zip(alone.items(), live, strict=True):
            meter.add(signals[name][start : start + 1920], bool(on))
    for name, meter in alone.items():
        assert bank.lufs(name) == pytest.approx(meter.lufs, abs=1e-9), name
    assert bank.lufs("a") == pytest.approx(-20.0, abs=0.2) and bank.lufs("c") == SILENCE_LUFS
    # "a" leaves, "d" comes: "b" keeps its reading, "d" reads nothing until it has 3 s of sound.
    before = bank.lufs("b")
    bank.set_names(["d", "b"])
    assert bank.names == ["d", "b"] and bank.lufs("b") == before and bank.lufs("d") == SILENCE_LUFS
    tone = sine(1000, 3.2, [0.1, 0.1])
    for start in range(0, len(tone) - 1920 + 1, 1920):
        frames = np.stack([tone[start : start + 1920], signals["b"][:1920]], axis=1)
        bank.add(frames, np.array([True, True]))
    assert bank.lufs("d") == pytest.approx(-20.0, abs=0.3)
