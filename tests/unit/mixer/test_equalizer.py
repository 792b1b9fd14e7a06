"""The high-pass filter and the three-band EQ, measured by FFT of tones through them."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer.equalizer import SourceFilters

RATE = 48_000
FRAME = 1920


def gain_at(filters: SourceFilters, hz: float) -> float:
    """The filters' gain (dB) at `hz`: a tone a second long through them, fed a frame at a
    time, compared by FFT at its bin in the last half second (the filters settled)."""
    t = np.arange(RATE) / RATE
    wave = np.sin(2 * np.pi * hz * t) * 1000
    tone = np.stack([wave, wave], axis=1)
    out = np.concatenate(
        [filters.process(tone[i : i + FRAME].copy()) for i in range(0, RATE, FRAME)]
    )
    window = np.hanning(RATE // 2)
    bin_ = round(hz * (RATE // 2) / RATE)
    spectrum_in = np.abs(np.fft.rfft(tone[RATE // 2 :, 0] * window))
    spectrum_out = np.abs(np.fft.rfft(out[RATE // 2 :, 0] * window))
    return float(20 * np.log10(spectrum_out[bin_] / spectrum_in[bin_]))


def equalizer(low: float, mid: float, high: float) -> mixer_pb2.Equalizer:
    return mixer_pb2.Equalizer(
        enabled=True,
        low=mixer_pb2.EqBand(gain_db=low, frequency_hz=120),
        mid=mixer_pb2.EqBand(gain_db=mid, frequency_hz=1000, q=1.0),
        high=mixer_pb2.EqBand(gain_db=high, frequency_hz=8000),
    )


@pytest.mark.parametrize(("low", "mid", "high"), [(6.0, -4.0, 3.0), (-9.0, 8.0, -6.0)])
def test_each_band_has_its_setting_at_its_centre(low: float, mid: float, high: float) -> None:
    filters = SourceFilters(RATE, 2)
    filters.configure(mixer_pb2.HighPass(), equalizer(low, mid, high))
    # A peak's centre is its frequency; a shelf's band lies beyond its corner (two octaves).
    assert gain_at(filters, 1000) == pytest.approx(mid, abs=0.5)
    assert gain_at(filters, 30) == pytest.approx(low, abs=0.5)
    assert gain_at(filters, 16000) == pytest.approx(high, abs=0.5)


def test_the_high_pass_filter_cuts_below_its_frequency() -> None:
    filters = SourceFilters(RATE, 2)
    filters.configure(mixer_pb2.HighPass(enabled=True, frequency_hz=100), mixer_pb2.Equalizer())
    assert gain_at(filters, 100) == pytest.approx(-3.0, abs=0.2)  # Butterworth: -3 dB there
    assert gain_at(filters, 25) < -22  # 12 dB an octave
    assert gain_at(filters, 1000) == pytest.approx(0.0, abs=0.1)


def test_filters_that_are_off_cost_nothing_and_change_nothing() -> None:
    filters = SourceFilters(RATE, 2)
    filters.configure(mixer_pb2.HighPass(frequency_hz=300), equalizer(6, 6, 6).__class__())
    samples = np.ones((FRAME, 2))
    assert not filters.active and filters.process(samples) is samples
