"""Confidence monitoring of one stream: black, frozen and silent, loudness off target, gone.

The monitor is fed frames with the time (seconds, any monotonic clock) they arrived, and reports
each condition's changes. A condition is raised once it held for its threshold and cleared once
it was absent for `clear_after_s`, so a one-frame flicker neither raises nor clears anything.

A black picture is also a still one: while black is raised, frozen is not (the operator needs
one alarm, the one that says what is on air). Likewise silence suppresses the loudness alarm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from services.monitoring.loudness import LoudnessMeter

BLACK = "black"
FROZEN = "frozen"
SILENT = "silent"
LOUDNESS = "loudness"
LOST = "lost"
CONDITIONS = (LOST, BLACK, FROZEN, SILENT, LOUDNESS)
# Frame difference is measured on every other pixel and row: a quarter of the work, and a
# frozen picture is frozen everywhere.
DIFF_SUBSAMPLE = 2


@dataclass(frozen=True)
class Thresholds:
    black_luma: float = 24.0  # mean Y (0..255, black is 16) at or under which a picture is black
    black_after_s: float = 1.0
    frozen_difference: float = 0.5  # mean absolute Y change between frames at or under which
    frozen_after_s: float = 2.0
    silence_dbfs: float = -60.0
    silence_after_s: float = 2.0
    loudness_target_lufs: float = -23.0
    loudness_tolerance_lu: float = 2.0
    loudness_after_s: float = 5.0
    lost_after_s: float = 2.0
    clear_after_s: float = 0.5


class ConditionTimer:
    """Raises after `raise_after_s` of continuous presence, clears after `clear_after_s` absent."""

    def __init__(self, raise_after_s: float, clear_after_s: float) -> None:
        self.raise_after_s = raise_after_s
        self.clear_after_s = clear_after_s
        self.raised = False
        self._since: float | None = None  # when the observation started to disagree with state

    def observe(self, present: bool, now: float) -> bool | None:
        """Record an observation; returns the new state when it changed, else None."""
        if present == self.raised:
            self._since = None
            return None
        if self._since is None:
            self._since = now
        hold = self.clear_after_s if self.raised else self.raise_after_s
        if now - self._since >= hold:
            self.raised = present
            self._since = None
            return present
        return None

    def reset(self) -> None:
        self._since = None


@dataclass
class Change:
    condition: str
    raised: bool
    value: float
    message: str


@dataclass
class Reading:
    """The latest measurements, for status and metrics."""

    luma: float = math.nan
    difference: float = math.nan
    audio_level_dbfs: float = -math.inf
    video_frames: int = 0
    audio_frames: int = 0
    last_video_at: float | None = None
    last_audio_at: float | None = None
    width: int = 0
    height: int = 0


@dataclass
class ConfidenceMonitor:
    thresholds: Thresholds = field(default_factory=Thresholds)
    sample_rate: int = 48_000
    channels: int = 2

    def __post_init__(self) -> None:
        t = self.thresholds
        self.timers = {
            LOST: ConditionTimer(t.lost_after_s, t.clear_after_s),
            BLACK: ConditionTimer(t.black_after_s, t.clear_after_s),
            FROZEN: ConditionTimer(t.frozen_after_s, t.clear_after_s),
            SILENT: ConditionTimer(t.silence_after_s, t.clear_after_s),
            LOUDNESS: ConditionTimer(t.loudness_after_s, t.clear_after_s),
        }
        self.reading = Reading()
        self.loudness = LoudnessMeter(self.sample_rate, self.channels)
        self._previous_luma: np.ndarray | None = None
        self._started_at: float | None = None

    def active(self, condition: str) -> bool:
        return self.timers[condition].raised

    def retarget(self, loudness_target_lufs: float) -> bool:
        """Judge loudness against another target from now on (the production's changed); True
        if it differs. The condition's timer carries on: a program that was off the old target
        and is on the new one clears after `clear_after_s`, like any recovery."""
        if loudness_target_lufs == self.thresholds.loudness_target_lufs:
            return False
        self.thresholds = replace(self.thresholds, loudness_target_lufs=loudness_target_lufs)
        return True

    def assume(self, condition: str) -> None:
        """`condition` was raised before this monitor judged it (by another replica): it is
        cleared once it has been absent for `clear_after_s`, like one raised here."""
        timer = self.timers[condition]
        if not timer.raised:
            timer.raised = True
            timer.reset()

    # -- input ---------------------------------------------------------------------------------

    def video(self, luma: np.ndarray, now: float) -> list[Change]:
        """A picture's Y plane (uint8, h x w)."""
        r = self.reading
        r.video_frames += 1
        r.last_video_at = now
        r.height, r.width = luma.shape
        r.luma = float(luma.mean())
        small = luma[::DIFF_SUBSAMPLE, ::DIFF_SUBSAMPLE].astype(np.int16)
        previous, self._previous_luma = self._previous_luma, small
        if previous is None or previous.shape != small.shape:
            r.difference = math.nan
        else:
            r.difference = float(np.abs(small - previous).mean())
        changes = self._observe(LOST, False, 0.0, now)
        black = r.luma <= self.thresholds.black_luma
        changes += self._observe(BLACK, black, r.luma, now)
        if not math.isnan(r.difference):
            frozen = r.difference <= self.thresholds.frozen_difference and not self.active(BLACK)
            for change in self._observe(FROZEN, frozen, r.difference, now):
                if not change.raised and self.active(BLACK):
                    change.message = "the still picture went black (see the black alert)"
                changes.append(change)
        return changes

    def audio(self, pcm: np.ndarray, now: float, sample_rate: int = 0) -> list[Change]:
        """Interleaved s16 samples of shape (n, channels) at `sample_rate` (0: as before)."""
        r = self.reading
        r.audio_frames += 1
        r.last_audio_at = now
        if len(pcm) == 0:
            return []
        sample_rate = sample_rate or self.sample_rate
        if pcm.shape[1] != self.channels or sample_rate != self.sample_rate:
            # The producer sent another format than asked for: measure what it sends, afresh.
            self.channels, self.sample_rate = pcm.shape[1], sample_rate
            self.loudness = LoudnessMeter(sample_rate, self.channels)
        self.loudness.feed_int16(pcm)
        samples = pcm.astype(np.float64) / 32768.0
        # RMS of the loudest channel, relative to a full-scale sine (which reads 0 dBFS).
        rms = float(np.sqrt((samples * samples).mean(axis=0)).max()) * math.sqrt(2)
        r.audio_level_dbfs = 20 * math.log10(rms) if rms > 0 else -math.inf
        changes = self._observe(SILENT, r.audio_level_dbfs < self.thresholds.silence_dbfs, 0, now)
        short_term = self.loudness.short_term
        off_target = (
            math.isfinite(short_term)
            and abs(short_term - self.thresholds.loudness_target_lufs)
            > self.thresholds.loudness_tolerance_lu
            and not self.active(SILENT)
        )
        changes += self._observe(LOUDNESS, off_target, short_term, now)
        return changes

    def tick(self, now: float) -> list[Change]:
        """Time passes without frames: is the stream gone?"""
        if self._started_at is None:
            self._started_at = now
        last = self.reading.last_video_at
        silent_for = now - (last if last is not None else self._started_at)
        if silent_for < self.thresholds.lost_after_s:
            return []
        self._previous_luma = None  # what comes back is not a continuation
        return self._observe(LOST, True, silent_for, now, hold=False)

    def clear_all(self) -> list[Change]:
        """The stream ended on purpose: everything raised is cleared."""
        changes = []
        for condition, timer in self.timers.items():
            if timer.raised:
                timer.raised = False
                changes.append(Change(condition, False, 0.0, f"{condition}: stream withdrawn"))
            timer.reset()
        return changes

    # -- conditions ----------------------------------------------------------------------------

    def _observe(
        self, condition: str, present: bool, value: float, now: float, *, hold: bool = True
    ) -> list[Change]:
        timer = self.timers[condition]
        if not hold and present and not timer.raised:
            timer.raised = True
            timer.reset()
            return [Change(condition, True, value, self._describe(condition, True, value))]
        changed = timer.observe(present, now)
        if changed is None:
            return []
        return [Change(condition, changed, value, self._describe(condition, changed, value))]

    def _describe(self, condition: str, raised: bool, value: float) -> str:
        t = self.thresholds
        if not raised:
            return {
                LOST: "frames are arriving again",
                BLACK: "picture is back",
                FROZEN: "picture is moving again",
                SILENT: "sound is back",
                LOUDNESS: f"short-term loudness back within {t.loudness_target_lufs:g} "
                f"± {t.loudness_tolerance_lu:g} LUFS",
            }[condition]
        return {
            LOST: f"no frames for {value:.1f} s",
            BLACK: f"black picture for {t.black_after_s:g} s (mean luma {value:.1f})",
            FROZEN: f"frozen picture for {t.frozen_after_s:g} s (frame difference {value:.2f})",
            SILENT: f"silence under {t.silence_dbfs:g} dBFS for {t.silence_after_s:g} s",
            LOUDNESS: f"short-term loudness {value:.1f} LUFS, target {t.loudness_target_lufs:g} "
            f"± {t.loudness_tolerance_lu:g}",
        }[condition]
