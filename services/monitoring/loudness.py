"""Loudness per ITU-R BS.1770-4 / EBU R128, measured on a live stream.

The signal is K-weighted (a high shelf, then a high pass: BS.1770's two biquads, derived for any
sample rate from their analogue prototypes, the way libebur128 does) and squared; energies are
summed per 100 ms sub-block. From those:

* momentary loudness: the last 400 ms (4 sub-blocks), short-term: the last 3 s (30 sub-blocks);
* integrated loudness: 400 ms gating blocks every 100 ms (75 % overlap), an absolute gate at
  -70 LUFS and a relative gate 10 LU under the loudness of the blocks above the absolute gate;
* loudness range (EBU Tech 3342): the spread between the 10th and 95th percentiles of the
  short-term loudness, sampled every 100 ms, after an absolute gate at -70 LUFS and a relative
  gate 20 LU under their energy mean;
* true peak: the largest absolute sample of the signal oversampled 4x.

A show can run for hours, so gated values live in fixed histograms of 0.01 LU bins that also keep
the exact energy sum of each bin: memory stays constant and the gated means are exact, only the
gate's position is rounded to 0.01 LU.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from scipy import signal

from services.common.bs1770 import channel_weights, k_weighting_sos

ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
LRA_RELATIVE_GATE_LU = -20.0
LRA_LOW_PERCENTILE = 10.0
LRA_HIGH_PERCENTILE = 95.0
SUB_BLOCK_S = 0.1
MOMENTARY_SUB_BLOCKS = 4  # 400 ms
SHORT_TERM_SUB_BLOCKS = 30  # 3 s
TRUE_PEAK_OVERSAMPLING = 4
# Input samples of context kept between chunks so the oversampling filter sees across them.
TRUE_PEAK_CONTEXT = 16
HISTOGRAM_MIN_LUFS = ABSOLUTE_GATE_LUFS
HISTOGRAM_MAX_LUFS = 10.0
HISTOGRAM_STEP_LU = 0.01


def energy_to_lufs(energy: float) -> float:
    return -0.691 + 10 * math.log10(energy) if energy > 0 else -math.inf


def lufs_to_energy(lufs: float) -> float:
    return float(10 ** ((lufs + 0.691) / 10))


class GatedHistogram:
    """Loudness values in 0.01 LU bins with each bin's count and exact energy sum."""

    def __init__(self) -> None:
        bins = round((HISTOGRAM_MAX_LUFS - HISTOGRAM_MIN_LUFS) / HISTOGRAM_STEP_LU)
        self.counts = np.zeros(bins, dtype=np.int64)
        self.energy = np.zeros(bins, dtype=np.float64)

    def _bin(self, lufs: float) -> int:
        index = int((lufs - HISTOGRAM_MIN_LUFS) / HISTOGRAM_STEP_LU)
        return min(max(index, 0), len(self.counts) - 1)

    def add(self, energy: float) -> None:
        """Count a block; blocks at or under the absolute gate are left out."""
        lufs = energy_to_lufs(energy)
        if lufs <= ABSOLUTE_GATE_LUFS:
            return
        index = self._bin(lufs)
        self.counts[index] += 1
        self.energy[index] += energy

    def _above(self, lufs: float) -> slice:
        return slice(self._bin(lufs) if lufs > HISTOGRAM_MIN_LUFS else 0, None)

    def gated_mean(self, relative_gate_lu: float) -> tuple[float, slice]:
        """The mean energy of the blocks above the relative gate, and the bins that passed."""
        total = int(self.counts.sum())
        if total == 0:
            return 0.0, slice(0, 0)
        gate = energy_to_lufs(float(self.energy.sum()) / total) + relative_gate_lu
        passed = self._above(gate)
        count = int(self.counts[passed].sum())
        if count == 0:
            return 0.0, passed
        return float(self.energy[passed].sum()) / count, passed


class LoudnessMeter:
    """Streaming BS.1770 meter: feed interleaved float samples, read the loudness values."""

    def __init__(self, sample_rate: int = 48_000, channels: int = 2) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self._sos = k_weighting_sos(sample_rate)
        self._zi = np.zeros((self._sos.shape[0], 2, channels))
        self._weights = channel_weights(channels)
        self._step = round(sample_rate * SUB_BLOCK_S)
        self._partial_energy = 0.0
        self._partial_samples = 0
        self._sub_blocks: deque[float] = deque(maxlen=SHORT_TERM_SUB_BLOCKS)
        self._blocks = GatedHistogram()
        self._short_terms = GatedHistogram()
        self._peak_tail = np.zeros((2 * TRUE_PEAK_CONTEXT, channels))
        self.true_peak = 0.0  # linear, largest so far
        self.samples = 0

    # -- input ---------------------------------------------------------------------------------

    def feed_int16(self, pcm: np.ndarray) -> None:
        """Interleaved s16 samples of shape (n, channels)."""
        self.feed(pcm.astype(np.float64) / 32768.0)

    def feed(self, samples: np.ndarray) -> None:
        """Samples in [-1, 1] of shape (n, channels)."""
        if samples.ndim == 1:
            samples = samples[:, None]
        if samples.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {samples.shape[1]}")
        if len(samples) == 0:
            return
        self.samples += len(samples)
        self._measure_true_peak(samples)
        filtered, self._zi = signal.sosfilt(self._sos, samples, axis=0, zi=self._zi)
        energy = (filtered * filtered) @ self._weights  # weighted energy per sample
        start = 0
        if self._partial_samples:
            take = min(self._step - self._partial_samples, len(energy))
            self._partial_energy += float(energy[:take].sum())
            self._partial_samples += take
            start = take
            if self._partial_samples == self._step:
                self._close_sub_block(self._partial_energy)
                self._partial_energy, self._partial_samples = 0.0, 0
        whole = (len(energy) - start) // self._step
        if whole:
            sums = energy[start : start + whole * self._step].reshape(whole, self._step).sum(axis=1)
            for value in sums.tolist():
                self._close_sub_block(value)
            start += whole * self._step
        if start < len(energy):
            self._partial_energy = float(energy[start:].sum())
            self._partial_samples = len(energy) - start

    def _close_sub_block(self, energy_sum: float) -> None:
        self._sub_blocks.append(energy_sum)
        if len(self._sub_blocks) >= MOMENTARY_SUB_BLOCKS:
            self._blocks.add(self._mean_energy(MOMENTARY_SUB_BLOCKS))
        if len(self._sub_blocks) == SHORT_TERM_SUB_BLOCKS:
            self._short_terms.add(self._mean_energy(SHORT_TERM_SUB_BLOCKS))

    def _mean_energy(self, sub_blocks: int) -> float:
        recent = list(self._sub_blocks)[-sub_blocks:]
        return sum(recent) / (sub_blocks * self._step)

    def _measure_true_peak(self, samples: np.ndarray) -> None:
        # Oversample the chunk with context on both sides; each input region is measured once,
        # after the filter has seen its neighbours.
        buffer = np.concatenate([self._peak_tail, samples])
        up = signal.resample_poly(buffer, TRUE_PEAK_OVERSAMPLING, 1, axis=0)
        valid = up[
            TRUE_PEAK_OVERSAMPLING * TRUE_PEAK_CONTEXT : TRUE_PEAK_OVERSAMPLING
            * (len(buffer) - TRUE_PEAK_CONTEXT)
        ]
        if valid.size:
            self.true_peak = max(self.true_peak, float(np.abs(valid).max()))
        self._peak_tail = buffer[-2 * TRUE_PEAK_CONTEXT :]

    # -- readings ------------------------------------------------------------------------------

    @property
    def momentary(self) -> float:
        """LUFS over the last 400 ms (-inf until 400 ms were measured)."""
        if len(self._sub_blocks) < MOMENTARY_SUB_BLOCKS:
            return -math.inf
        return energy_to_lufs(self._mean_energy(MOMENTARY_SUB_BLOCKS))

    @property
    def short_term(self) -> float:
        """LUFS over the last 3 s (-inf until 3 s were measured)."""
        if len(self._sub_blocks) < SHORT_TERM_SUB_BLOCKS:
            return -math.inf
        return energy_to_lufs(self._mean_energy(SHORT_TERM_SUB_BLOCKS))

    @property
    def integrated(self) -> float:
        """Gated LUFS since the start (-inf while no block passed the gates)."""
        energy, _ = self._blocks.gated_mean(RELATIVE_GATE_LU)
        return energy_to_lufs(energy)

    @property
    def loudness_range(self) -> float:
        """LU between the 10th and 95th percentile of the gated short-term loudness."""
        _, passed = self._short_terms.gated_mean(LRA_RELATIVE_GATE_LU)
        counts = self._short_terms.counts[passed]
        total = int(counts.sum())
        if total == 0:
            return 0.0
        cumulative = np.cumsum(counts)
        low = int(np.searchsorted(cumulative, total * LRA_LOW_PERCENTILE / 100, side="left"))
        high = int(np.searchsorted(cumulative, total * LRA_HIGH_PERCENTILE / 100, side="left"))
        return (high - low) * HISTOGRAM_STEP_LU

    @property
    def true_peak_dbtp(self) -> float:
        return 20 * math.log10(self.true_peak) if self.true_peak > 0 else -math.inf
