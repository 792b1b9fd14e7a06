"""The audio mixer: per-source jitter buffers, gain, mute, audio-follow-video, master, mix-minus,
talkback, and meters (peak, RMS, short-term loudness). One call per video frame mixes exactly one
frame's worth of samples. Sources are metered after their input trim and before their processing
(channel_strip.py) and fader, the program after the master.

Loudness control (loudness_control.py, docs/adr/0021): the leveler's gain multiplies the master
fader's on the program and on every return, and each then goes through a true-peak limiter.

Talkback (docs/adr/0012): a talk input (the director's microphone) is buffered like a source but
never mixed into the program; a station that hears it gets its mix-minus ducked by
`TALKBACK_DUCK_DB` with the talk input on top. Gains change along a one-frame ramp, so pressing
and releasing the talk button does not click.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer import metrics
from services.mixer.channel_strip import ChannelStrip
from services.mixer.loudness import LoudnessBank, ShortTermLoudness
from services.mixer.loudness_control import LoudnessControl

FULL_SCALE = 32768.0
SILENCE_DBFS = -120.0
# How far a station's mix-minus is lowered under the director's voice while it hears talkback.
TALKBACK_DUCK_DB = 15.0
# Reads (frames) over which a buffer's lowest depth is watched before its excess is dropped.
TRIM_WINDOW_READS = 50


def db_to_gain(db: float) -> float:
    return float(10 ** (db / 20))


def to_dbfs(value: float) -> float:
    return 20 * math.log10(value) if value > 1e-6 else SILENCE_DBFS


class AudioBuffer:
    """Samples of one source waiting to be mixed, bounded both ways.

    After running dry it refills to `start_samples` before playing again, so a source arriving in
    frame-sized bursts at a phase to our clock plays smoothly; past `max_samples` the oldest go.
    What a burst (a stall upstream, then a catch-up) leaves behind would otherwise stay for good
    as latency: when the depth has not come down to `start_samples` + one read within a window
    of reads, the excess is dropped, so the delay through the mixer stays near `start_samples`.
    """

    def __init__(
        self,
        channels: int,
        start_samples: int,
        max_samples: int,
        *,
        window_reads: int = TRIM_WINDOW_READS,
    ) -> None:
        self.channels = channels
        self.start_samples = start_samples
        self.max_samples = max_samples
        self.window_reads = window_reads
        self._chunks: deque[np.ndarray] = deque()
        self.depth = 0
        self.playing = False
        self.dropped = 0
        self.trimmed = 0
        self.underruns = 0
        self._reads = 0
        self._low = max_samples

    def push(self, samples: np.ndarray) -> None:
        if samples.shape[1] != self.channels:
            samples = (
                samples.mean(axis=1, keepdims=True).astype(np.int16)
                if self.channels == 1
                else np.repeat(samples[:, :1], self.channels, axis=1)
            )
        self._chunks.append(samples)
        self.depth += samples.shape[0]
        while self.depth > self.max_samples and self._chunks:
            old = self._chunks.popleft()
            self.depth -= old.shape[0]
            self.dropped += old.shape[0]

    def _drop(self, count: int) -> None:
        """Drop `count` samples from the head (the oldest)."""
        while count > 0 and self._chunks:
            chunk = self._chunks[0]
            if chunk.shape[0] <= count:
                self._chunks.popleft()
                taken = chunk.shape[0]
            else:
                self._chunks[0] = chunk[count:]
                taken = count
            count -= taken
            self.depth -= taken
            self.trimmed += taken

    def _keep_latency(self, count: int) -> None:
        self._low = min(self._low, self.depth)
        self._reads += 1
        if self._reads < self.window_reads:
            return
        excess = self._low - self.start_samples - count
        if excess > 0:
            self._drop(self._low - self.start_samples)
        self._reads, self._low = 0, self.max_samples

    def read(self, count: int, out: np.ndarray) -> bool:
        """Fill `out` (count, channels) float32; False (and silence) when nothing to play."""
        if not self.playing and self.depth >= self.start_samples:
            self.playing = True
        if not self.playing:
            out.fill(0)
            return False
        self._keep_latency(count)
        filled = 0
        while filled < count and self._chunks:
            chunk = self._chunks[0]
            take = min(count - filled, chunk.shape[0])
            out[filled : filled + take] = chunk[:take]
            if take == chunk.shape[0]:
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[take:]
            filled += take
            self.depth -= take
        if filled < count:
            out[filled:] = 0
            self.playing = False
            self.underruns += 1
        return filled > 0


@dataclass
class Meter:
    peak: float = 0.0
    sum_squares: float = 0.0
    count: int = 0

    def add(self, samples: np.ndarray) -> None:
        if samples.size:
            self.peak = max(self.peak, float(np.abs(samples).max()))
            self.sum_squares += float(np.square(samples, dtype=np.float64).sum())
            self.count += samples.size

    def take(self, source: str) -> mixer_pb2.Level:
        rms = math.sqrt(self.sum_squares / self.count) if self.count else 0.0
        level = mixer_pb2.Level(
            source=source,
            peak_dbfs=round(to_dbfs(self.peak / FULL_SCALE), 2),
            rms_dbfs=round(to_dbfs(rms / FULL_SCALE), 2),
        )
        self.peak, self.sum_squares, self.count = 0.0, 0.0, 0
        return level


@dataclass
class MixResult:
    program: np.ndarray  # (n, channels) int16
    mixminus: dict[str, np.ndarray] = field(default_factory=dict)


class AudioMixer:
    """`loudness`: the production's loudness control; None for a bare mixer without one.
    `production` labels the mixer's metrics."""

    def __init__(
        self,
        sources: list[str],
        sample_rate: int,
        channels: int,
        fps: int,
        *,
        loudness: mixer_pb2.Loudness | None = None,
        production: str = "",
    ) -> None:
        self.production = production
        self.sample_rate = sample_rate
        self.channels = channels
        self.samples_per_frame = sample_rate // fps
        n = self.samples_per_frame
        self.buffers = {s: AudioBuffer(channels, 2 * n, sample_rate // 4) for s in sources}
        self.settings: dict[str, mixer_pb2.SourceAudio] = {
            s: mixer_pb2.SourceAudio(source=s) for s in sources
        }
        self.master_gain_db = 0.0
        self.strips = {s: ChannelStrip(sample_rate, channels) for s in sources}
        self.bus = LoudnessControl(sample_rate, channels, fps)
        self.bus.configure(loudness)
        self._sent_returns: list[str] = []
        self._return_levels: list[mixer_pb2.Level] = []
        self._inputs = {s: np.zeros((n, channels), dtype=np.float32) for s in sources}
        self._total = np.zeros((n, channels), dtype=np.float32)
        self.meters = {s: Meter() for s in ["", *sources]}
        # Short-term loudness: the sources' measured together, the program's after the mix.
        self.loudness = LoudnessBank(sample_rate, channels, list(self.buffers))
        self.program_loudness = ShortTermLoudness(sample_rate, channels)
        self._measured = np.zeros((n, len(self.buffers), channels), dtype=np.float32)
        self.last_levels: dict[str, float] = {s: SILENCE_DBFS for s in sources}
        self.talk_buffers: dict[str, AudioBuffer] = {}
        self._talk_inputs: dict[str, np.ndarray] = {}
        self._live: dict[str, bool] = {}
        # Gains as they stand after the last frame, for the ramps: the program part of each
        # station's mix-minus, and each talk input in each station's mix-minus.
        self._duck: dict[str, float] = {}
        self._talk_gain: dict[tuple[str, str], float] = {}
        # Each source's gain in the last frame's mix: a station that just left the mix (its
        # sound ran dry, its fader closed) still is in the program limiter's delayed samples.
        self._last_gains: dict[str, float] = {}
        self._ramp = (np.arange(1, n + 1, dtype=np.float32) / n)[:, None]
        self._duck_gain = db_to_gain(-TALKBACK_DUCK_DB)

    def add_talk_input(self, source: str) -> None:
        """Buffer `source` as a talk input: heard only where talkback sends it."""
        if source not in self.talk_buffers and source not in self.buffers:
            n = self.samples_per_frame
            # One frame ahead, not two: a conversation wants the voice soon more than a voice
            # that never stutters (the talkback onset target is 150 ms end to end).
            self.talk_buffers[source] = AudioBuffer(self.channels, n, self.sample_rate // 4)
            self._talk_inputs[source] = np.zeros((n, self.channels), dtype=np.float32)

    def set_sources(self, sources: list[str]) -> None:
        """The production's sources changed while it runs: buffers for the new ones (silent
        until their audio comes), the removed ones forgotten."""
        n = self.samples_per_frame
        for source in sources:
            if source not in self.buffers:
                self.talk_buffers.pop(source, None)  # a talk source that became a station
                self._talk_inputs.pop(source, None)
                self.buffers[source] = AudioBuffer(self.channels, 2 * n, self.sample_rate // 4)
                self.settings[source] = mixer_pb2.SourceAudio(source=source)
                self.strips[source] = ChannelStrip(self.sample_rate, self.channels)
                self._inputs[source] = np.zeros((n, self.channels), dtype=np.float32)
                self.meters[source] = Meter()
                self.last_levels[source] = SILENCE_DBFS
        for source in set(self.buffers) - set(sources):
            del self.buffers[source], self.settings[source], self._inputs[source]
            del self.strips[source]
            del self.meters[source]
            self.last_levels.pop(source, None)
            self._live.pop(source, None)
            self._duck.pop(source, None)
            for key in [k for k in self._talk_gain if source in k]:
                del self._talk_gain[key]
        self.loudness.set_names(list(self.buffers))
        self._measured = np.zeros((n, len(self.buffers), self.channels), dtype=np.float32)

    def configure(self, audio: list[mixer_pb2.SourceAudio], master_gain_db: float) -> None:
        for a in audio:
            if a.source in self.settings:
                self.settings[a.source].CopyFrom(a)
                self.strips[a.source].configure(a)
        self.master_gain_db = master_gain_db

    def set_loudness(self, loudness: mixer_pb2.Loudness | None) -> None:
        self.bus.configure(loudness)

    def push(self, source: str, samples: np.ndarray) -> None:
        buffer = self.buffers.get(source) or self.talk_buffers.get(source)
        if buffer is not None:
            buffer.push(samples)

    def gain(self, source: str, on_program: bool) -> float:
        s = self.settings[source]
        if s.mute or (s.afv and not on_program):
            return 0.0
        return db_to_gain(s.gain_db)

    def mix(
        self,
        on_program: set[str],
        mixminus_for: set[str],
        talk: Mapping[str, Collection[str]] | None = None,
    ) -> MixResult:
        """Mix one frame of samples; mix-minus signals for the sources in `mixminus_for`, each
        with the talk inputs `talk[source]` over it (ducked) when it hears talkback."""
        n = self.samples_per_frame
        talk = talk or {}
        self._total.fill(0)
        gains: dict[str, float] = {}
        for i, (source, buffer) in enumerate(self.buffers.items()):
            data = self._inputs[source]
            live = self._live[source] = buffer.read(n, data)
            strip = self.strips[source]
            if live:
                strip.trim(data)
                self.meters[source].add(data)
            self._measured[:, i] = data
            if live:
                strip.process(data)
            g = self.gain(source, source in on_program)
            gains[source] = g if live else 0.0
            if gains[source]:
                self._total += data * g
        self.loudness.add(self._measured, np.array([self._live[s] for s in self.buffers]))
        # Talk inputs are read every frame, heard or not, so a press plays the voice of now.
        for source, buffer in self.talk_buffers.items():
            self._live[source] = buffer.read(n, self._talk_inputs[source])
        master = self.bus.gain(self._total) * db_to_gain(self.master_gain_db)
        program = _to_int16(self.bus.limit_program(self._total * master))
        metered = program.astype(np.float32)
        self.meters[""].add(metered)
        self.program_loudness.add(metered, any(self._live[s] for s in self.buffers))
        result = MixResult(program)
        for source in mixminus_for:
            g = gains.get(source, 0.0)
            heard = talk.get(source, ())
            if heard or self._duck.get(source, 1.0) != 1.0:
                minus = self._total - self._inputs[source] * g if g else self._total.copy()
                result.mixminus[source] = self._talkback(source, minus, master, heard)
            elif g:
                result.mixminus[source] = _to_int16(
                    self.bus.limit_return(source, (self._total - self._inputs[source] * g) * master)
                )
            elif self._last_gains.get(source):
                # Out of the mix since this frame: the program's limiter still holds the last
                # samples of the frame before, the station's own sound in them; its return's
                # limiter holds them without it, for one more frame.
                result.mixminus[source] = _to_int16(
                    self.bus.limit_return(source, self._total * master)
                )
            else:
                result.mixminus[source] = program
        self.bus.end_frame()
        self._last_gains = gains
        self._sent_returns = sorted(mixminus_for)
        for station in set(self._duck) - mixminus_for:
            del self._duck[station]  # nobody listens: a new listener starts from the target
        for key in [k for k in self._talk_gain if k[0] not in mixminus_for]:
            del self._talk_gain[key]
        return result

    def _talkback(
        self,
        station: str,
        minus: np.ndarray,
        master: float | np.ndarray,
        heard: Collection[str],
    ) -> np.ndarray:
        """`minus` (the program without the station) ducked, with the talk inputs added."""
        target = self._duck_gain if heard else 1.0
        minus *= self._along(self._duck.get(station, 1.0), target) * master
        if target == 1.0:
            self._duck.pop(station, None)
        else:
            self._duck[station] = target
        fading = [s for (st, s) in self._talk_gain if st == station and s not in heard]
        for source in [*heard, *fading]:
            key = (station, source)
            before, after = self._talk_gain.get(key, 0.0), 1.0 if source in heard else 0.0
            data = self._talk_inputs.get(source)
            if data is None:
                data = self._inputs.get(source)
            if data is not None and self._live.get(source, False):
                minus += data * self._along(before, after)
            if after:
                self._talk_gain[key] = after
            else:
                self._talk_gain.pop(key, None)
        return _to_int16(self.bus.limit_return(station, minus))

    def _along(self, before: float, after: float) -> float | np.ndarray:
        """A gain going from `before` to `after` over one frame (a column of gains), or the
        constant gain when it does not change."""
        if before == after:
            return after
        return before + (after - before) * self._ramp

    def levels(self) -> list[mixer_pb2.Level]:
        # The returns' first: a return that is the program reads the program limiter's
        # reduction, which the program's level then takes.
        self._return_levels = self.bus.return_levels(self._sent_returns)
        out = [meter.take(source) for source, meter in self.meters.items()]
        for level in out:
            lufs = self.loudness.lufs(level.source) if level.source else self.program_loudness.lufs
            level.short_term_lufs = round(lufs, 2)
            if level.source:
                self.last_levels[level.source] = level.peak_dbfs
                level.gain_reduction_db = round(self.strips[level.source].take_reduction(), 2)
            else:
                self.bus.program_level(level)
        metrics.observe_loudness(self.production, out, self._return_levels)
        return out

    def return_levels(self) -> list[mixer_pb2.Level]:
        """The returns' leveler gain and limiter reduction, as of the last `levels()`."""
        return self._return_levels


def _to_int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)
