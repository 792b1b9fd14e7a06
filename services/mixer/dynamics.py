"""A source's dynamics: the gate and the compressor, whole-array per frame.

Both read the signal's peak (dBFS, the louder channel: the channels are linked, so a stereo
image does not wander) and turn it into a gain reduction in dB, sample by sample, then give
that reduction its ballistics without a per-sample loop. The slow direction (a compressor
letting go, a gate closing) moves at most a fixed number of dB a sample: the envelope
`y[k] = max(x[k], y[k-1] - r)` is `max_j (x[j] - r (k - j))`, a cumulative maximum. The fast
direction (a compressor catching a peak, a gate opening) is a one-pole smoother over that
(`lfilter`), with its state carried from frame to frame (the "smooth, decoupled" detector of
Giannoulis, Massberg and Reiss, JAES 2012). A release is given as the time to recover 10 dB.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

from services.common.gen.baycast.v1 import mixer_pb2

FULL_SCALE = 32768.0
FLOOR_DB = -120.0
RELEASE_SPAN_DB = 10.0
DEFAULT_GATE_THRESHOLD_DB = -50.0
DEFAULT_GATE_RANGE_DB = 40.0
DEFAULT_GATE_ATTACK_MS = 1.0
DEFAULT_GATE_RELEASE_MS = 150.0
# How fast the gate's detector lets a peak go: slower than a low note's half period, so the gate
# does not chatter between the peaks of one sound.
GATE_DETECTOR_DB_PER_S = 100.0
DEFAULT_COMP_THRESHOLD_DB = -20.0
DEFAULT_COMP_RATIO = 3.0
DEFAULT_COMP_ATTACK_MS = 10.0
DEFAULT_COMP_RELEASE_MS = 150.0


def peak_db(samples: np.ndarray) -> np.ndarray:
    """Each sample's level in dBFS, the louder channel's."""
    level = np.abs(samples).max(axis=1) / FULL_SCALE
    return 20 * np.log10(np.maximum(level, 10 ** (FLOOR_DB / 20)))


def falling_at_most(values: np.ndarray, rate: float, last: float) -> np.ndarray:
    """y[k] = max(values[k], y[k-1] - rate), y[-1] = last."""
    k = rate * np.arange(1, len(values) + 1)
    return np.maximum(np.maximum.accumulate(values + k), last) - k


def rising_at_most(values: np.ndarray, rate: float, last: float) -> np.ndarray:
    """y[k] = min(values[k], y[k-1] + rate), y[-1] = last."""
    return -falling_at_most(-values, rate, -last)


class Smoother:
    """A one-pole low-pass with time constant `ms`, its state carried between frames."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._pole = 0.0
        self._last = 0.0

    def set_time(self, ms: float) -> None:
        self._pole = math.exp(-1000 / (max(ms, 0.01) * self.sample_rate))

    def __call__(self, values: np.ndarray) -> np.ndarray:
        p = self._pole
        out, _ = signal.lfilter([1 - p], [1, -p], values, zi=[p * self._last])
        self._last = float(out[-1])
        return out


def _value(message: object, name: str, default: float) -> float:
    return float(getattr(message, name)) if message.HasField(name) else default  # type: ignore[attr-defined]


class Compressor:
    """Above `threshold_db` the level rises 1 dB for every `ratio` dB in; `makeup_db` after."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.on = False
        self._held = 0.0
        self._attack = Smoother(sample_rate)
        self.configure(mixer_pb2.Compressor())
        self.reduction_db = 0.0  # the largest since the meters last read it

    def configure(self, c: mixer_pb2.Compressor) -> None:
        self.on = c.enabled
        self.threshold_db = _value(c, "threshold_db", DEFAULT_COMP_THRESHOLD_DB)
        self.ratio = max(1.0, _value(c, "ratio", DEFAULT_COMP_RATIO))
        self.makeup_db = _value(c, "makeup_db", 0.0)
        self._attack.set_time(_value(c, "attack_ms", DEFAULT_COMP_ATTACK_MS))
        release_ms = max(1.0, _value(c, "release_ms", DEFAULT_COMP_RELEASE_MS))
        self._release = RELEASE_SPAN_DB / (release_ms / 1000 * self.sample_rate)

    def process(self, samples: np.ndarray) -> np.ndarray:
        if not self.on:
            return samples
        over = np.maximum(peak_db(samples) - self.threshold_db, 0.0) * (1 - 1 / self.ratio)
        held = falling_at_most(over, self._release, self._held)
        self._held = float(held[-1])
        reduction = self._attack(held)
        self.reduction_db = max(self.reduction_db, float(reduction.max()))
        gain = 10 ** ((self.makeup_db - reduction) / 20)
        return samples * gain[:, None]


class Gate:
    """Lowers the source by `range_db` while its level stays under `threshold_db`."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.on = False
        self._detector = FLOOR_DB
        self._closed = 0.0  # the reduction at the last sample
        self._open = Smoother(sample_rate)
        self._detector_rate = GATE_DETECTOR_DB_PER_S / sample_rate
        self.configure(mixer_pb2.Gate())
        self.reduction_db = 0.0

    def configure(self, g: mixer_pb2.Gate) -> None:
        self.on = g.enabled
        self.threshold_db = _value(g, "threshold_db", DEFAULT_GATE_THRESHOLD_DB)
        self.range_db = max(0.0, _value(g, "range_db", DEFAULT_GATE_RANGE_DB))
        self._open.set_time(_value(g, "attack_ms", DEFAULT_GATE_ATTACK_MS))
        release_ms = max(1.0, _value(g, "release_ms", DEFAULT_GATE_RELEASE_MS))
        self._release = RELEASE_SPAN_DB / (release_ms / 1000 * self.sample_rate)

    def process(self, samples: np.ndarray) -> np.ndarray:
        if not self.on:
            return samples
        level = falling_at_most(peak_db(samples), self._detector_rate, self._detector)
        self._detector = float(level[-1])
        wanted = np.where(level < self.threshold_db, self.range_db, 0.0)
        closing = rising_at_most(wanted, self._release, self._closed)
        self._closed = float(closing[-1])
        reduction = self._open(closing)
        self.reduction_db = max(self.reduction_db, float(reduction.max()))
        return samples * (10 ** (-reduction / 20))[:, None]
