"""One source's processing before its fader, in signal order: the input trim (the source's
meter reads after it), the high-pass filter and EQ (one filter cascade), the gate, the
compressor. Every stage is off until set; a source with none on costs nothing."""

from __future__ import annotations

import numpy as np

from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer.dynamics import Compressor, Gate
from services.mixer.equalizer import SourceFilters


class ChannelStrip:
    def __init__(self, sample_rate: int, channels: int) -> None:
        self.trim_gain = 1.0
        self.filters = SourceFilters(sample_rate, channels)
        self.gate = Gate(sample_rate)
        self.compressor = Compressor(sample_rate)

    def configure(self, settings: mixer_pb2.SourceAudio) -> None:
        self.trim_gain = float(10 ** (settings.trim_db / 20))
        self.filters.configure(settings.high_pass, settings.eq)
        self.gate.configure(settings.gate)
        self.compressor.configure(settings.compressor)

    @property
    def active(self) -> bool:
        return self.filters.active or self.gate.on or self.compressor.on

    def trim(self, samples: np.ndarray) -> None:
        """Apply the input trim in place."""
        if self.trim_gain != 1.0:
            samples *= self.trim_gain

    def process(self, samples: np.ndarray) -> None:
        """Filters, gate and compressor, in place."""
        if not self.active:
            return
        out = self.filters.process(samples)
        out = self.gate.process(out)
        samples[:] = self.compressor.process(out)

    def take_reduction(self) -> float:
        """The gate's and compressor's largest gain reduction since the last call (dB)."""
        value = self.gate.reduction_db + self.compressor.reduction_db
        self.gate.reduction_db = self.compressor.reduction_db = 0.0
        return value
