from __future__ import annotations

import time

import av
import numpy as np
import pytest

from services.common.fanout import packed_pcm
from services.ingest import measurements
from services.ingest.measurements import Measurements


def video(luma: int, seed: int = 0) -> av.VideoFrame:
    image = np.full((270, 320), 128, dtype=np.uint8)
    image[:180] = luma
    if seed:
        image[:180] = np.random.default_rng(seed).integers(16, 235, (180, 320), dtype=np.uint8)
    return av.VideoFrame.from_ndarray(image, format="yuv420p")


def audio(amplitude: float) -> np.ndarray:
    return (np.sin(np.arange(960) / 5) * amplitude * 32767).astype(np.int16)[:, None]


def test_black_picture_and_level(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    m = Measurements()
    m.on_video(video(16))
    m.on_audio(audio(0.5))
    snap = m.snapshot()
    assert snap.black and (snap.width, snap.height) == (320, 180)
    assert -6.5 < snap.audio_level_dbfs < -5.5
    assert not snap.silent
    now[0] += measurements.PICTURE_CHECK_S
    m.on_video(video(120))
    assert not m.snapshot().black


def test_pictures_are_checked_once_per_check_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every picture is counted, but only one every PICTURE_CHECK_S is looked at."""
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    m = Measurements()
    m.on_video(video(120))
    for _ in range(4):  # black pictures 40 ms apart, all inside the interval
        now[0] += 0.04
        m.on_video(video(16))
    snap = m.snapshot()
    assert snap.video_frames == 5 and not snap.black
    now[0] += 0.041  # 200 ms after the first check
    m.on_video(video(16))
    assert m.snapshot().black


def test_frozen_and_silent_after_two_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    m = Measurements()
    for i in range(3):
        m.on_video(video(0, seed=i + 1))  # changing picture
        m.on_audio(audio(0.5))
    assert not m.snapshot().frozen
    for _ in range(60 + 5):  # 2 s of the same picture after the first check that saw it
        now[0] += 0.04
        m.on_video(video(0, seed=7))  # the same picture again and again
        m.on_audio(audio(0.0001))  # -80 dBFS
    snap = m.snapshot()
    assert snap.frozen and snap.silent
    assert snap.audio_level_dbfs < measurements.SILENT_DBFS
    now[0] += measurements.PICTURE_CHECK_S
    m.on_video(video(0, seed=8))
    assert not m.snapshot().frozen


def test_the_peak_is_either_channels_of_either_sign_in_any_sample_format() -> None:
    quiet, loud = np.zeros(960, np.int16), np.zeros(960, np.int16)
    loud[500] = -16384  # half of full scale, negative, in the second channel only
    interleaved = np.stack([quiet, loud]).T.reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
    samples = packed_pcm(frame)  # as ingest reads decoded Opus: in place
    assert samples is not None and samples.shape == (960, 2)
    assert measurements.peak_dbfs(samples) == pytest.approx(-6.02, abs=0.01)
    planar = np.stack([quiet, loud]).astype(np.float32) / 32768
    frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout="stereo")
    assert packed_pcm(frame) is None  # as from AAC: converted
    assert measurements.peak_dbfs(frame.to_ndarray()) == pytest.approx(-6.02, abs=0.01)
    loud[500] = -32768
    assert measurements.peak_dbfs(np.stack([quiet, loud]).T) == 0.0
    assert measurements.peak_dbfs(np.zeros((0, 2), np.int16)) == measurements.LEVEL_FLOOR_DBFS
