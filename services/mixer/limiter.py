"""A look-ahead true-peak limiter: the last stage of the program and of every station's return.

The true peak is read the way ITU-R BS.1770-4 (annex 2) reads it: the signal interpolated 4×
by a polyphase FIR, its largest magnitude between each pair of samples. Every sample gets the
gain that brings its neighbourhood's true peak under the ceiling; the output is delayed by the
look-ahead, so the gain can glide down over the look-ahead before the peak instead of jumping
at it (a jump is a click), and rises again at a fixed rate in dB (the release).

Whole-array steps per frame, no per-sample loop: the interpolation is one matrix product over
a sliding window, the look-ahead a sliding minimum, the release a cumulative minimum (a gain
that rises at most `r` dB a sample is `min_j (m[j] + r (k - j))`), the glide a moving average
by cumulative sums. A frame whose samples cannot reach the ceiling however they are
interpolated (their peak times the filter's largest gain) skips the interpolation.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal

FULL_SCALE = 32768.0
OVERSAMPLING = 4
TAPS_PER_PHASE = 16
DEFAULT_CEILING_DBTP = -1.0
# Aim this far under the ceiling: 4× interpolation reads a true peak up to a few tenths of a dB
# low, and another meter's filter reads a little differently from ours.
MARGIN_DB = 0.3
LOOKAHEAD_S = 0.0015
RELEASE_DB_PER_S = 40.0


def _interpolator() -> np.ndarray:
    """The 4× interpolation filter as a (taps per phase, phases) matrix, for the newest sample
    last in each window: column p holds h[p], h[p + 4], ... reversed."""
    taps = OVERSAMPLING * TAPS_PER_PHASE
    h = signal.firwin(taps, 0.5 / OVERSAMPLING * 2 * 0.99, window=("kaiser", 6.0)) * OVERSAMPLING
    phases = h.reshape(TAPS_PER_PHASE, OVERSAMPLING)  # phases[j, p] = h[4j + p]
    return np.ascontiguousarray(phases[::-1])


class TruePeakLimiter:
    """Limits (n, channels) float samples at int16 scale to `ceiling_dbtp`, one frame at a time;
    its output lags its input by `delay` samples."""

    def __init__(
        self, sample_rate: int, channels: int, ceiling_dbtp: float = DEFAULT_CEILING_DBTP
    ) -> None:
        self.channels = channels
        self._phases = _interpolator()
        # The most any interpolated value can exceed the largest sample it is made of.
        self._overshoot = float(np.abs(self._phases).sum(axis=0).max())
        self.attack = max(8, round(sample_rate * LOOKAHEAD_S))
        # A sample shapes the interpolated waveform as far as half the filter either side of it
        # (an abrupt start rings before and after it): its gain answers for all of that, whose
        # last value comes out of the filter this many samples after the sample.
        self._reach = 2 * (TAPS_PER_PHASE // 2)
        self.delay = self.attack + self._reach
        self._release = RELEASE_DB_PER_S / sample_rate
        self._history = np.zeros((self.delay + TAPS_PER_PHASE, channels), dtype=np.float64)
        self._need = np.ones(self.attack)  # required gains of the last samples, for the minimum
        self._held_db = 0.0  # the gain after the release, at the last sample
        self._glide = np.ones(self.attack)  # the last released gains, for the moving average
        self.reduction_db = 0.0  # the largest gain reduction since `take_reduction`
        self.ceiling_dbtp = ceiling_dbtp
        self._ceiling = FULL_SCALE * 10 ** ((ceiling_dbtp - MARGIN_DB) / 20)

    def set_ceiling(self, ceiling_dbtp: float) -> None:
        self.ceiling_dbtp = ceiling_dbtp
        self._ceiling = FULL_SCALE * 10 ** ((ceiling_dbtp - MARGIN_DB) / 20)

    def copy_history(self, other: TruePeakLimiter) -> None:
        """Start from where `other` stands (a return that was the program until now)."""
        self._history[:] = other._history
        self._need[:] = other._need
        self._held_db = other._held_db
        self._glide[:] = other._glide

    def take_reduction(self) -> float:
        value, self.reduction_db = self.reduction_db, 0.0
        return value

    def process(self, samples: np.ndarray) -> np.ndarray:
        """The limited frame (n, channels) float64, `delay` samples behind `samples`."""
        n = len(samples)
        buf = np.concatenate((self._history, samples))
        self._history[:] = buf[-len(self._history) :]
        need = self._required(buf, n)
        gain = self._gain(need)
        return buf[len(buf) - n - self.delay : len(buf) - self.delay] * gain[:, None]

    def _required(self, buf: np.ndarray, n: int) -> np.ndarray:
        """The gain each of the n newest measurable samples needs (1 where none)."""
        if float(np.abs(buf).max()) * self._overshoot <= self._ceiling:
            return np.ones(n)
        windows = sliding_window_view(buf, TAPS_PER_PHASE, axis=0)  # (m, ch, taps)
        interpolated = np.abs(windows @ self._phases).max(axis=(1, 2))  # index i: buf[i + taps-1]
        peak = np.zeros(len(buf))
        peak[TAPS_PER_PHASE - 1 :] = interpolated
        # Sample t's neighbourhood, t - reach/2 ... t + reach/2, leaves the filter at t + reach.
        end = len(buf) - self._reach
        reach = sliding_window_view(peak[end - n : end + self._reach], self._reach + 1)
        around = np.maximum(reach.max(axis=1), np.abs(buf[end - n : end]).max(axis=1))
        return np.minimum(1.0, self._ceiling / np.maximum(around, 1e-9))

    def _gain(self, need: np.ndarray) -> np.ndarray:
        """The gain for the delayed samples: the look-ahead minimum, released, glided."""
        a = self.attack
        at_rest = self._held_db >= 0.0 and self._glide.min() >= 1.0
        if at_rest and need.min() >= 1.0 and self._need.min() >= 1.0:
            return np.ones(len(need))
        history = np.concatenate((self._need, need))
        self._need[:] = history[-a:]
        lowest = sliding_window_view(history, a + 1).min(axis=1)  # (n,)
        lowest_db = 20 * np.log10(lowest)
        # Rises at most `release` dB per sample: h[k] = min_j (m[j] + r (k - j)), from the last.
        k = np.arange(1, len(need) + 1)
        released = np.minimum.accumulate(lowest_db - self._release * k)
        released = np.minimum(released, self._held_db) + self._release * k
        released = np.minimum(released, 0.0)
        self._held_db = float(released[-1])
        linear = 10 ** (released / 20)
        sums = np.cumsum(np.concatenate((self._glide, linear)))
        glided = (sums[a:] - np.concatenate(([0.0], sums[: -a - 1]))) / (a + 1)
        self._glide[:] = linear[-a:]
        self.reduction_db = max(self.reduction_db, float(-20 * np.log10(glided.min())))
        return glided
