"""A source's filters: the high-pass filter and the three-band EQ (a low shelf, a peak, a high
shelf), as one cascade of second-order sections run by one `sosfilt` a frame, its state carried
from frame to frame. The EQ's sections are the RBJ "Audio EQ Cookbook" biquads: a peak's gain
at its centre frequency is exactly its setting, a shelf's is its setting far beyond its corner
and half of it at the corner.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

from services.common.gen.baycast.v1 import mixer_pb2

DEFAULT_HIGH_PASS_HZ = 80.0
DEFAULT_LOW_HZ = 120.0
DEFAULT_MID_HZ = 1000.0
DEFAULT_HIGH_HZ = 8000.0
DEFAULT_MID_Q = 1.0
NEGLIGIBLE_STATE = 1e-12


def _normalized(b: list[float], a: list[float]) -> np.ndarray:
    return np.array([*(x / a[0] for x in b), 1.0, a[1] / a[0], a[2] / a[0]])


def peak(gain_db: float, hz: float, q: float, sample_rate: int) -> np.ndarray:
    """A peaking section: `gain_db` at `hz`, bandwidth set by `q`."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * hz / sample_rate
    alpha = math.sin(w0) / (2 * q)
    cos = math.cos(w0)
    return _normalized(
        [1 + alpha * a, -2 * cos, 1 - alpha * a], [1 + alpha / a, -2 * cos, 1 - alpha / a]
    )


def shelf(gain_db: float, hz: float, sample_rate: int, *, high: bool) -> np.ndarray:
    """A shelving section (slope 1): `gain_db` below `hz` (low) or above it (high)."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * hz / sample_rate
    cos = math.cos(w0)
    two_root_a_alpha = 2 * math.sqrt(a) * math.sin(w0) / 2 * math.sqrt(2)
    s = -1 if high else 1  # the high shelf is the low one with cos's sign flipped
    return _normalized(
        [
            a * ((a + 1) - s * (a - 1) * cos + two_root_a_alpha),
            s * 2 * a * ((a - 1) - s * (a + 1) * cos),
            a * ((a + 1) - s * (a - 1) * cos - two_root_a_alpha),
        ],
        [
            (a + 1) + s * (a - 1) * cos + two_root_a_alpha,
            -s * 2 * ((a - 1) + s * (a + 1) * cos),
            (a + 1) + s * (a - 1) * cos - two_root_a_alpha,
        ],
    )


def sections(
    high_pass: mixer_pb2.HighPass, eq: mixer_pb2.Equalizer, sample_rate: int
) -> np.ndarray:
    """The second-order sections of the filters that are on; (0, 6) when none are."""
    out: list[np.ndarray] = []
    if high_pass.enabled:
        hz = high_pass.frequency_hz if high_pass.HasField("frequency_hz") else DEFAULT_HIGH_PASS_HZ
        out.extend(signal.butter(2, hz, "highpass", fs=sample_rate, output="sos"))
    if eq.enabled:
        if eq.low.gain_db:
            hz = eq.low.frequency_hz if eq.low.HasField("frequency_hz") else DEFAULT_LOW_HZ
            out.append(shelf(eq.low.gain_db, hz, sample_rate, high=False))
        if eq.mid.gain_db:
            hz = eq.mid.frequency_hz if eq.mid.HasField("frequency_hz") else DEFAULT_MID_HZ
            q = eq.mid.q if eq.mid.HasField("q") else DEFAULT_MID_Q
            out.append(peak(eq.mid.gain_db, hz, q, sample_rate))
        if eq.high.gain_db:
            hz = eq.high.frequency_hz if eq.high.HasField("frequency_hz") else DEFAULT_HIGH_HZ
            out.append(shelf(eq.high.gain_db, hz, sample_rate, high=True))
    return np.array(out).reshape(len(out), 6)


class SourceFilters:
    """The high-pass filter and EQ of one source, on (n, channels) float frames."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self._sos = np.zeros((0, 6))
        self._zi = np.zeros((0, 2, channels))

    @property
    def active(self) -> bool:
        return len(self._sos) > 0

    def configure(self, high_pass: mixer_pb2.HighPass, eq: mixer_pb2.Equalizer) -> None:
        sos = sections(high_pass, eq, self.sample_rate)
        if sos.shape != self._sos.shape:
            # A section more or fewer: its state means nothing to the new cascade. Settings
            # changed within the same sections keep theirs, so turning a knob does not click.
            self._zi = np.zeros((len(sos), 2, self.channels))
        self._sos = sos

    def process(self, samples: np.ndarray) -> np.ndarray:
        if not self.active:
            return samples
        out, self._zi = signal.sosfilt(self._sos, samples, axis=0, zi=self._zi)
        if np.abs(self._zi).max() < NEGLIGIBLE_STATE:
            self._zi.fill(0.0)
        return out
