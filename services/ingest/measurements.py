"""Signal measurements of one source, summarised once a second.

Picture checks (black, frozen) look at every 8th pixel of every 8th row of the luma plane of one
picture every `PICTURE_CHECK_S` (five a second: a flag that needs two seconds to rise loses nothing
by it, and checking all 25 pictures a second cost ~0.04 core of ingest at twelve 720p sources);
the frozen check compares the picture with the one checked before it. Audio checks run on every
decoded frame of sound.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

import av
import numpy as np

from services.common.media import pts_us

BLACK_LUMA = 28  # mean luma below this (video range black is 16) is a black picture
FROZEN_MEAN_DIFF = 0.6  # mean absolute luma change per sample below which a frame repeats
FROZEN_AFTER_S = 2.0
SILENT_DBFS = -60.0
SILENT_AFTER_S = 2.0
LEVEL_FLOOR_DBFS = -120.0
SAMPLE_STEP = 8
PICTURE_CHECK_S = 0.2
NOMINAL_FPS_FRAMES = 25


@dataclass
class Snapshot:
    fps: float
    width: int
    height: int
    audio_level_dbfs: float
    black: bool
    frozen: bool
    silent: bool
    video_frames: int
    audio_frames: int


def luma_samples(frame: av.VideoFrame) -> np.ndarray:
    plane = frame.planes[0]
    rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)
    return np.ascontiguousarray(rows[: frame.height : SAMPLE_STEP, : frame.width : SAMPLE_STEP])


def peak_dbfs(samples: np.ndarray) -> float:
    """The peak of int16 or float samples, in dBFS."""
    if samples.size == 0:
        return LEVEL_FLOOR_DBFS
    if samples.dtype == np.int16:  # two reductions, no copy (-32768 has no int16 magnitude)
        peak = max(int(samples.max()), -int(samples.min())) / 32768.0
    elif samples.dtype.kind == "f":
        peak = float(np.max(np.abs(samples)))
    else:
        peak = float(np.max(np.abs(samples.astype(np.int64)))) / 32768.0
    return 20 * math.log10(peak) if peak > 0 else LEVEL_FLOOR_DBFS


class Measurements:
    def __init__(self) -> None:
        self.width = 0
        self.height = 0
        self.video_frames = 0
        self.audio_frames = 0
        self._window_start = time.monotonic()
        self._window_frames = 0
        self._window_peak = LEVEL_FLOOR_DBFS
        self._previous: np.ndarray | None = None
        self._next_check = 0.0
        self._still_since: float | None = None
        self._black = False
        self._loud_at = time.monotonic()
        self._had_audio = False
        self._last_pts_s: float | None = None
        self._intervals: deque[float] = deque(maxlen=NOMINAL_FPS_FRAMES)

    @property
    def nominal_fps(self) -> float:
        """The frame rate the timestamps say (median frame interval), 0 until known."""
        if len(self._intervals) < 3:
            return 0.0
        interval = float(np.median(self._intervals))
        return round(1.0 / interval, 2) if interval > 0 else 0.0

    def on_video(self, frame: av.VideoFrame) -> None:
        now = time.monotonic()
        self.video_frames += 1
        self._window_frames += 1
        self.width, self.height = frame.width, frame.height
        if frame.pts is not None and frame.time_base is not None:
            pts_s = pts_us(frame.pts, frame.time_base) / 1e6
            if self._last_pts_s is not None and 0 < pts_s - self._last_pts_s < 1.0:
                self._intervals.append(pts_s - self._last_pts_s)
            self._last_pts_s = pts_s
        if now >= self._next_check:
            # The next check is due an interval after this one was due (arrival jitter does not
            # stretch the interval), or an interval from now after a pause.
            due = self._next_check + PICTURE_CHECK_S
            self._next_check = due if due > now else now + PICTURE_CHECK_S
            self._check_picture(luma_samples(frame), now)

    def _check_picture(self, luma: np.ndarray, now: float) -> None:
        self._black = int(luma.sum(dtype=np.uint32)) < BLACK_LUMA * luma.size
        if self._previous is not None and self._previous.shape == luma.shape:
            change = int(np.abs(luma.astype(np.int16) - self._previous).sum(dtype=np.int32))
            if change >= FROZEN_MEAN_DIFF * luma.size:
                self._still_since = None
            elif self._still_since is None:
                self._still_since = now
        self._previous = luma

    def on_audio(self, samples: np.ndarray) -> None:
        """One decoded frame of sound (int16 or float samples, any shape)."""
        self.audio_frames += 1
        self._had_audio = True
        level = peak_dbfs(samples)
        self._window_peak = max(self._window_peak, level)
        if level > SILENT_DBFS:
            self._loud_at = time.monotonic()

    def snapshot(self) -> Snapshot:
        """The figures since the previous snapshot (fps, level) and the current flags."""
        now = time.monotonic()
        elapsed = max(now - self._window_start, 1e-3)
        snap = Snapshot(
            fps=self._window_frames / elapsed,
            width=self.width,
            height=self.height,
            audio_level_dbfs=self._window_peak,
            black=self._black,
            frozen=self._still_since is not None and now - self._still_since >= FROZEN_AFTER_S,
            silent=(not self._had_audio) or now - self._loud_at >= SILENT_AFTER_S,
            video_frames=self.video_frames,
            audio_frames=self.audio_frames,
        )
        self._window_start = now
        self._window_frames = 0
        self._window_peak = LEVEL_FLOOR_DBFS
        return snap
