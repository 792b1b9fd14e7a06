"""The loudness control of the program bus and of the stations' returns (docs/adr/0021).

One leveler, fed the program's mix before the master fader, sets one gain for the program and
for every return: a return is the program without its station, so at the program's gain it
keeps the balance the program has and never runs louder than the program. A leveler of its own
per return would lift the others' room tone whenever the station itself talks (it is not in
its own return), and cost a K-weighting filter each. What a return does need of its own is a
limiter, because taking one source out of a mix moves its peaks: only a return that differs
from the program gets one (one that is the program sends the program's samples), started from
the program limiter's state before the frame it joins on, so that it joins without a click and
without the station's own sound of the last frame (the limiter's delay holds it).
"""

from __future__ import annotations

import numpy as np

from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer.leveler import DEFAULT_TARGET_LUFS, Leveler
from services.mixer.limiter import DEFAULT_CEILING_DBTP, TruePeakLimiter


class LoudnessControl:
    """The leveler's gain ramp and the limiters; turned off, a gain of 1 and no limiting."""

    def __init__(self, sample_rate: int, channels: int, fps: int) -> None:
        self.sample_rate, self.channels = sample_rate, channels
        self.leveler = Leveler(sample_rate, channels, fps)
        self.limiter = TruePeakLimiter(sample_rate, channels)
        self._before = TruePeakLimiter(sample_rate, channels)  # `limiter` before this frame
        self.returns: dict[str, TruePeakLimiter] = {}
        self._used: set[str] = set()
        self.on = False
        n = sample_rate // fps
        self._ramp = (np.arange(1, n + 1, dtype=np.float32) / n)[:, None]
        self._gain = 1.0

    def configure(self, loudness: mixer_pb2.Loudness | None) -> None:
        """None (a bare mixer) or `enabled: false` turns it off."""
        self.on = loudness is not None and (loudness.enabled or not loudness.HasField("enabled"))
        if loudness is None:
            return
        target = loudness.target_lufs if loudness.HasField("target_lufs") else None
        ceiling = loudness.true_peak_dbtp if loudness.HasField("true_peak_dbtp") else None
        self.leveler.target_lufs = DEFAULT_TARGET_LUFS if target is None else target
        ceiling = DEFAULT_CEILING_DBTP if ceiling is None else ceiling
        for limiter in [self.limiter, *self.returns.values()]:
            limiter.set_ceiling(ceiling)

    def gain(self, mix: np.ndarray) -> float | np.ndarray:
        """This frame's leveler gain for `mix` (the sum of the faders): a column ramped from the
        last frame's gain to this one's, or a constant."""
        if not self.on:
            return 1.0
        self.leveler.measure(mix)
        before, self._gain = self._gain, float(10 ** (self.leveler.gain_db / 20))
        if before == self._gain:
            return self._gain
        return before + (self._gain - before) * self._ramp

    def limit_program(self, samples: np.ndarray) -> np.ndarray:
        self._used.clear()
        if not self.on:
            return samples
        self._before.copy_history(self.limiter)
        return self.limiter.process(samples)

    def limit_return(self, station: str, samples: np.ndarray) -> np.ndarray:
        if not self.on:
            return samples
        limiter = self.returns.get(station)
        if limiter is None:
            limiter = self.returns[station] = TruePeakLimiter(
                self.sample_rate, self.channels, self.limiter.ceiling_dbtp
            )
            limiter.copy_history(self._before)
        self._used.add(station)
        return limiter.process(samples)

    def end_frame(self) -> None:
        """Forget the limiters of returns that were the program (or not sent) this frame."""
        for station in set(self.returns) - self._used:
            del self.returns[station]

    def program_level(self, level: mixer_pb2.Level) -> None:
        if self.on:
            level.leveler_gain_db = round(self.leveler.gain_db, 2)
            level.limiter_reduction_db = round(self.limiter.take_reduction(), 2)

    def return_levels(self, stations: list[str]) -> list[mixer_pb2.Level]:
        if not self.on:
            return []
        gain = round(self.leveler.gain_db, 2)
        shared = self.limiter.reduction_db  # not taken: program_level takes it
        out = []
        for station in sorted(stations):
            own = self.returns.get(station)
            reduction = own.take_reduction() if own is not None else shared
            out.append(
                mixer_pb2.Level(
                    source=station, leveler_gain_db=gain, limiter_reduction_db=round(reduction, 2)
                )
            )
        return out
