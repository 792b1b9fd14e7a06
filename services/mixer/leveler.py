"""The loudness leveler: a slow gain that brings the program to the production's target.

It measures what it is fed the way BS.1770 does (K-weighted mean square, a frame at a time) and
steers its gain from two readings of it: the *short-term* loudness of the frames that count
(3 s) sets where a slow gain goes; the *momentary* loudness (400 ms) caps it frame by frame, so
a source cut in 20 dB louder is brought down within a few frames, not seconds, and a shout
is held down while it lasts and let go as soon as it ends. Frames more than `BURST_LU` above the
level the slow gain stands for do not count for it until they have lasted `BURST_S`: a burst is
not a new level (an energy average is dominated by its loud parts, so a third of a second of
applause would otherwise pull the gain down for the three seconds it stays in the window).

Why it does not pump: the gain moves along an exponential, quickly down (0.5 s) and slowly up
(2 s), so speech's syllables and pauses do not move it; and it holds still while the signal is
gated out: below `ABSOLUTE_GATE_LUFS` (silence, room tone), or more than `RELATIVE_GATE_LU`
under the short-term loudness (a pause between words). The relative gate reads only the last
3 s, so a source that stays much quieter than the one before it is taken as the new level once
the louder one has left the window, instead of being held out for good.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

from services.common.bs1770 import channel_weights, k_weighting_sos

FULL_SCALE = 32768.0
DEFAULT_TARGET_LUFS = -23.0
ABSOLUTE_GATE_LUFS = -50.0
RELATIVE_GATE_LU = 15.0
MOMENTARY_S = 0.4
SHORT_TERM_S = 3.0
# How far above the target the momentary loudness may go before the gain is cut at once.
MOMENTARY_CAP_LU = 4.0
# Louder than the level the slow gain stands for by this much is a burst (a shout, applause, a
# slammed fader): the cap's business while it lasts less than BURST_S, a new level after that.
BURST_LU = 8.0
BURST_S = 1.0
DOWN_TAU_S = 0.5
UP_TAU_S = 2.0
MAX_BOOST_DB = 18.0
MAX_CUT_DB = 30.0
NEGLIGIBLE_STATE = 1e-12


def _lufs(energy: float) -> float:
    return -0.691 + 10 * math.log10(energy) if energy > 0 else -math.inf


class Leveler:
    """The gain (a column of n gains per frame, ramped from the last) that brings the signal it
    measures to `target_lufs`. Samples are (n, channels) floats at int16 scale."""

    def __init__(
        self, sample_rate: int, channels: int, fps: int, target_lufs: float = DEFAULT_TARGET_LUFS
    ) -> None:
        self.target_lufs = target_lufs
        self._sos = k_weighting_sos(sample_rate)
        self._zi = np.zeros((self._sos.shape[0], 2, channels))
        self._weights = channel_weights(channels) / FULL_SCALE**2
        self._frame_s = 1 / fps
        self._energy = np.zeros(max(1, round(SHORT_TERM_S * fps)))  # the frames' mean squares
        self._counts = np.zeros(len(self._energy), dtype=bool)  # which of them count
        self._momentary = max(1, round(MOMENTARY_S * fps))
        self._index = 0
        self.level_db = 0.0  # the slow gain
        self.gain_db = 0.0  # the slow gain with the momentary cap: what is applied
        self._burst_frames = 0
        self._burst_limit = max(1, round(BURST_S * fps))
        self._down = 1 - math.exp(-self._frame_s / DOWN_TAU_S)
        self._up = 1 - math.exp(-self._frame_s / UP_TAU_S)

    def measure(self, samples: np.ndarray) -> None:
        """Take one frame's loudness and move the gain."""
        filtered, self._zi = signal.sosfilt(self._sos, samples, axis=0, zi=self._zi)
        if np.abs(self._zi).max() < NEGLIGIBLE_STATE:
            self._zi.fill(0.0)  # keeps silence out of slow denormal numbers
        energy = float(np.square(filtered).mean(axis=0) @ self._weights) if len(samples) else 0.0
        slot = self._index % len(self._energy)
        self._energy[slot] = energy
        self._counts[slot] = False
        self._index += 1
        recent = self._energy.take(np.arange(slot - self._momentary + 1, slot + 1), mode="wrap")
        momentary = _lufs(float(recent.mean()))
        short_term = self._short_term()
        counts = momentary > ABSOLUTE_GATE_LUFS and (
            short_term is None or momentary > short_term - RELATIVE_GATE_LU
        )
        # Against the level the slow gain stands for, not the short-term loudness: that one
        # takes a burst's first frames in at once (it is an energy average).
        burst = momentary > self.target_lufs - self.level_db + BURST_LU
        self._burst_frames = self._burst_frames + 1 if burst else 0
        if counts and not 0 < self._burst_frames < self._burst_limit:
            self._counts[slot] = True
            short_term = self._short_term()
            assert short_term is not None
            wanted = max(min(self.target_lufs - short_term, MAX_BOOST_DB), -MAX_CUT_DB)
            step = self._down if wanted < self.level_db else self._up
            self.level_db += (wanted - self.level_db) * step
        # The cap, frame by frame and without memory: it lets go as soon as the momentary
        # loudness falls back.
        cap = self.target_lufs + MOMENTARY_CAP_LU - momentary - self.level_db
        self.gain_db = self.level_db + max(min(cap, 0.0), -MAX_CUT_DB)

    def _short_term(self) -> float | None:
        """The loudness of the frames that count in the last 3 s; None when none do."""
        if not self._counts.any():
            return None
        return _lufs(float(self._energy[self._counts].mean()))
