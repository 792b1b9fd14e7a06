"""Short-term loudness (EBU R128, ITU-R BS.1770) of every source and of the program, for the
mixer's level events.

Each signal is K-weighted with a filter whose state carries from frame to frame, squared,
weighted per channel and summed into 100 ms blocks; the short-term loudness is the mean of the
last 30 blocks (3 s), ungated. Everything is whole-array numpy: a frame of every signal
measured together costs one `sosfilt` and one cumulative sum, whatever its length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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


class LoudnessBank:
    """The short-term loudness of several signals of one format, measured together.

    A mixer tick feeds every source's frame at once: one `sosfilt` over all their channels side
    by side and one cumulative sum, instead of one of each per source (with a dozen sources the
    per-source calls were a tenth of the mixer's profile in the seed's show). The signals share
    the 100 ms block grid; a signal is measured from its first sound, so its first block may be
    a partial one.
    """

    def __init__(self, sample_rate: int, channels: int, names: Sequence[str] = ()) -> None:
        self._sos = k_weighting_sos(sample_rate)
        self._channels = channels
        # Samples arrive at int16 scale: the weights bring their squares to full scale = 1.
        self._weights = channel_weights(channels) / FULL_SCALE**2
        self._block = round(sample_rate * BLOCK_S)
        self.names: list[str] = []
        self._zi = np.zeros((self._sos.shape[0], 2, 0))
        self._sums = np.zeros((SHORT_TERM_BLOCKS, 0))  # energy of the last blocks, a ring
        self._blocks = np.zeros(0, dtype=np.int64)  # blocks closed since each signal started
        self._partial = np.zeros(0)  # energy of the block being filled
        self._started = np.zeros(0, dtype=bool)
        self._ring = 0  # blocks closed so far, all signals (the ring's position)
        self._filled = 0  # samples of the block being filled
        self.set_names(names)

    def set_names(self, names: Sequence[str]) -> None:
        """Measure `names` from now: the ones kept keep their state, new ones start unheard."""
        old = {name: i for i, name in enumerate(self.names)}
        index = np.array([old.get(name, -1) for name in names], dtype=np.int64)

        def pick(array: np.ndarray, axis: int, width: int = 1) -> np.ndarray:
            """`array`'s slots of the kept names along `axis` (`width` columns each), in the
            new order; zeros for the new names."""
            columns = (index[:, None] * width + np.arange(width)).reshape(-1)
            new = np.repeat(index < 0, width)
            shape = list(array.shape)
            shape[axis] = len(columns)
            out = np.zeros(shape, dtype=array.dtype)
            if (~new).any():
                kept = np.take(array, columns[~new], axis=axis)
                out.swapaxes(0, axis)[~new] = kept.swapaxes(0, axis)
            return out

        self._zi = pick(self._zi, 2, self._channels)
        self._sums = pick(self._sums, 1)
        self._blocks = pick(self._blocks, 0)
        self._partial = pick(self._partial, 0)
        self._started = pick(self._started, 0)
        self.names = list(names)

    def add(self, frames: np.ndarray, live: np.ndarray) -> None:
        """Measure one frame of every signal: `frames` (n, signals, channels) of int16-scale
        samples, `live` (signals,) whether each has sound. Nothing is measured of a signal
        before its first sound, so its first reading covers 3 s of it; after that, silence
        counts as silence."""
        n = frames.shape[0]
        if not n or not self.names:
            return
        self._started |= live
        filtered, self._zi = signal.sosfilt(self._sos, frames.reshape(n, -1), axis=0, zi=self._zi)
        quiet = np.repeat(~live, self._channels)
        if quiet.any():
            # A silent signal's filter rings down: once it is negligible, it is zero.
            tail = np.abs(self._zi).max(axis=(0, 1)) < NEGLIGIBLE_STATE
            self._zi[:, :, quiet & tail] = 0.0
        energy = np.cumsum(
            np.square(filtered).reshape(n, len(self.names), self._channels) @ self._weights,
            axis=0,
        )
        energy[:, ~self._started] = 0.0
        # Sample counts into this frame at which a block fills up.
        ends = np.arange(self._block - self._filled, n + 1, self._block)
        if not ends.size:
            self._partial += energy[-1]
            self._filled += n
            return
        closed = np.diff(energy[ends - 1], axis=0, prepend=0.0)
        closed[0] += self._partial
        closed = closed[-SHORT_TERM_BLOCKS:]
        self._sums[(self._ring + np.arange(len(closed))) % SHORT_TERM_BLOCKS] = closed
        self._ring += len(closed)
        self._blocks[self._started] += len(closed)
        self._partial = energy[-1] - energy[ends[-1] - 1]
        self._filled = n - int(ends[-1])

    def lufs(self, name: str) -> float:
        """LUFS of `name` over the last 3 s; SILENCE_LUFS for silence and until 3 s of it
        were measured."""
        i = self.names.index(name)
        if self._blocks[i] < SHORT_TERM_BLOCKS:
            return SILENCE_LUFS
        energy = float(self._sums[:, i].sum()) / (SHORT_TERM_BLOCKS * self._block)
        if energy <= 0:
            return SILENCE_LUFS
        return max(SILENCE_LUFS, -0.691 + 10 * math.log10(energy))


class ShortTermLoudness:
    """The short-term loudness of one signal, fed one frame of int16-scale samples at a time."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        self._bank = LoudnessBank(sample_rate, channels, [""])
        self._live = np.ones(1, dtype=bool)
        self._quiet = np.zeros(1, dtype=bool)

    def add(self, samples: np.ndarray, live: bool = True) -> None:
        """Measure one frame (n, channels) (see `LoudnessBank.add`)."""
        self._bank.add(samples[:, None, :], self._live if live else self._quiet)

    @property
    def lufs(self) -> float:
        return self._bank.lufs("")
