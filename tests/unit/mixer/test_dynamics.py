"""The gate and the compressor on known steps, fed a video frame (1920 samples) at a time."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer.dynamics import Compressor, Gate, falling_at_most, rising_at_most

RATE = 48_000
FRAME = 1920
FULL = 32768.0


def tone(seconds: float, dbfs: float, hz: float = 1000.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    wave = np.sin(2 * np.pi * hz * t) * FULL * 10 ** (dbfs / 20)
    return np.stack([wave, wave], axis=1)


def run(stage: Compressor | Gate, samples: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [stage.process(samples[i : i + FRAME]) for i in range(0, len(samples), FRAME)]
    )


def peak_db(samples: np.ndarray) -> float:
    return float(20 * np.log10(np.abs(samples).max() / FULL))


def test_the_ballistics_match_their_per_sample_definitions() -> None:
    rng = np.random.default_rng(3)
    values = rng.uniform(-40, 0, 500)
    falling, rising = [], []
    f, r = -10.0, -30.0
    for v in values:
        f = max(v, f - 0.5)
        r = min(v, r + 0.5)
        falling.append(f)
        rising.append(r)
    np.testing.assert_allclose(falling_at_most(values, 0.5, -10.0), falling)
    np.testing.assert_allclose(rising_at_most(values, 0.5, -30.0), rising)


@pytest.mark.parametrize(("ratio", "threshold"), [(2.0, -30.0), (4.0, -30.0), (10.0, -24.0)])
def test_the_compressors_gain_reduction_on_a_step_matches_its_ratio(
    ratio: float, threshold: float
) -> None:
    comp = Compressor(RATE)
    comp.configure(
        mixer_pb2.Compressor(
            enabled=True, threshold_db=threshold, ratio=ratio, attack_ms=5, release_ms=100
        )
    )
    quiet, loud = -40.0, -6.0
    out = run(comp, np.concatenate((tone(1.0, quiet), tone(1.0, loud))))
    before, after = out[RATE // 2 : RATE], out[-RATE // 2 :]
    assert peak_db(before) == pytest.approx(quiet, abs=0.1)  # under the threshold: untouched
    reduction = loud - peak_db(after)
    want = (loud - threshold) * (1 - 1 / ratio)
    assert reduction == pytest.approx(want, abs=1.0)
    assert comp.reduction_db == pytest.approx(want, abs=1.0)


def test_the_compressor_lets_go_after_the_step_and_adds_its_makeup() -> None:
    comp = Compressor(RATE)
    comp.configure(
        mixer_pb2.Compressor(enabled=True, threshold_db=-30, ratio=4, release_ms=100, makeup_db=3)
    )
    out = run(comp, np.concatenate((tone(1.0, -10.0), tone(1.0, -40.0))))
    # 15 dB of reduction recovers at 10 dB per 100 ms: half a second later it is all gone.
    assert peak_db(out[-RATE // 2 :]) == pytest.approx(-40.0 + 3.0, abs=0.1)


def test_the_gate_closes_by_its_range_under_its_threshold_and_opens_above() -> None:
    gate = Gate(RATE)
    gate.configure(mixer_pb2.Gate(enabled=True, threshold_db=-45, range_db=30, release_ms=100))
    signal = np.concatenate((tone(1.0, -20.0, 200), tone(1.0, -60.0, 200), tone(1.0, -20.0, 200)))
    out = run(gate, signal)
    assert peak_db(out[RATE // 2 : RATE]) == pytest.approx(-20.0, abs=0.1)  # open
    # Closed once its detector has let the loud tone go (0.25 s at 100 dB/s) and it has closed
    # (30 dB at 10 dB per 100 ms).
    closed = out[RATE + 6 * RATE // 10 : 2 * RATE]
    assert peak_db(closed) == pytest.approx(-90.0, abs=0.5)
    assert peak_db(out[2 * RATE + RATE // 10 :]) == pytest.approx(-20.0, abs=0.1)  # open again
    assert gate.reduction_db == pytest.approx(30.0, abs=0.1)


def test_stages_that_are_off_return_the_samples_untouched() -> None:
    samples = tone(0.04, -3.0)
    assert Compressor(RATE).process(samples) is samples
    assert Gate(RATE).process(samples) is samples
