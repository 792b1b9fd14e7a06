"""Short-term loudness (EBU R128, ITU-R BS.1770) of every source and of the program, for the
mixer's level events.

Each signal is K-weighted with a filter whose state carries from frame to frame, squared,
weighted per channel and summed into 100 ms blocks; the short-term loudness is the mean of the
last 30 blocks (3 s), ungated. Everything is whole-array numpy: a frame costs one `sosfilt` and
a cumulative sum, whatever its length.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

from services.common.bs1770 import channel_weights, k_weighting_sos

BLOCK_S = 0.1
SHORT_TERM_BLOCKS = 30  # 3 s
SILENCE_LUFS = -120.0
FULL_SCALE = 32768.0
# Filter state this small is gone for good: zeroing it keeps a silent source's filter out of
# denormal numbers, which are many times slower to compute.
NEGLIGIBLE_STATE = 1e-12


class ShortTermLoudness:
    """The short-term loudness of one signal, fed one frame of int16-scale samples at a time."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        self._sos = k_weighting_sos(sample_rate)
        self._zi = np.zeros((self._sos.shape[0], 2, channels))
        # Samples arrive at int16 scale: the weights bring their squares to full scale = 1.
        self._weights = channel_weights(channels) / FULL_SCALE**2
        self._block = round(sample_rate * BLOCK_S)
        self._sums = np.zeros(SHORT_TERM_BLOCKS)  # energy of the last blocks, a ring
        self._blocks = 0  # blocks closed so far
        self._partial = 0.0  # energy of the block being filled
        self._filled = 0  # its samples so far
        self.started = False

    def add(self, samples: np.ndarray, live: bool = True) -> None:
        """Measure one frame (n, channels). Nothing is measured before the signal's first sound,
        so its first reading covers 3 s of it; after that, silence counts as silence."""
        if not (live or self.started) or not len(samples):
            return
        self.started = True
        filtered, self._zi = signal.sosfilt(self._sos, samples, axis=0, zi=self._zi)
        if not live and np.abs(self._zi).max() < NEGLIGIBLE_STATE:
            self._zi.fill(0.0)
        energy = np.cumsum(np.square(filtered) @ self._weights)
        n = len(energy)
        # Sample counts into this frame at which a block fills up.
        ends = np.arange(self._block - self._filled, n + 1, self._block)
        if not ends.size:
            self._partial += float(energy[-1])
            self._filled += n
            return
        closed = np.diff(energy[ends - 1], prepend=0.0)
        closed[0] += self._partial
        closed = closed[-SHORT_TERM_BLOCKS:]
        self._sums[(self._blocks + np.arange(closed.size)) % SHORT_TERM_BLOCKS] = closed
        self._blocks += closed.size
        self._partial = float(energy[-1] - energy[ends[-1] - 1])
        self._filled = n - int(ends[-1])

    @property
    def lufs(self) -> float:
        """LUFS over the last 3 s; SILENCE_LUFS for silence and until 3 s were measured."""
        if self._blocks < SHORT_TERM_BLOCKS:
            return SILENCE_LUFS
        energy = float(self._sums.sum()) / (SHORT_TERM_BLOCKS * self._block)
        if energy <= 0:
            return SILENCE_LUFS
        return max(SILENCE_LUFS, -0.691 + 10 * math.log10(energy))
