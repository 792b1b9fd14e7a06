"""The library's house format: a clip prepared frame for frame, at its times, cheap to decode
(x264's fastdecode: no CABAC, no deblocking), close to its source, its sound kept."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from services.common.house_format import house_size, needs_preparing, prepare
from services.common.media_library import MediaError, probe
from tests.support.media_files import grain_clip, psnr_db

SECONDS, FPS = 2, 25
TONE_HZ = 1000


def make_source(path: Path, width: int = 640, height: int = 360, seconds: float = SECONDS) -> Path:
    """Grain at 44.1 kHz: the house format resamples its sound."""
    return grain_clip(path, width, height, seconds, tone_hz=TONE_HZ, sample_rate=44_100)


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(f.time) for f in container.decode(video=0) if f.time is not None]


def sound(path: Path) -> tuple[int, int, np.ndarray]:
    """Sample rate, channels, and the first channel's samples."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        parts = [f.to_ndarray()[0] for f in container.decode(stream)]
        return stream.rate, stream.codec_context.channels, np.concatenate(parts)


def tone_dbfs(samples: np.ndarray, rate: int) -> float:
    middle = samples[rate // 2 : rate // 2 + rate // 2]  # half a second, clear of the ends
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
    peak = spectrum[round(TONE_HZ * len(middle) / rate)]
    return float(20 * np.log10(peak * 2 / np.hanning(len(middle)).sum()))


def test_a_clip_is_prepared_frame_for_frame_cheap_to_decode_and_close_to_its_source(
    tmp_path: Path,
) -> None:
    source = make_source(tmp_path / "film.mp4")
    shares: list[float] = []
    prepared = prepare(source, tmp_path / "house.mp4", shares.append)

    assert needs_preparing(source) and not needs_preparing(prepared)
    item = probe(prepared, "film")
    assert (item.kind, item.house, item.width, item.height, item.fps) == (
        "clip", True, 640, 360, 25.0
    )  # fmt: skip
    assert not probe(source, "film").house
    # every picture, at its time
    assert frame_times(prepared) == frame_times(source)
    assert len(frame_times(prepared)) == SECONDS * FPS
    # x264's own record of its settings: what the decoder is spared, a keyframe every second
    settings = prepared.read_bytes()
    for option in (b"cabac=0", b"deblock=0", b"weightb=0", b"weightp=0", b"keyint=25 "):
        assert option in settings, option
    assert b"cabac=1" in source.read_bytes()
    assert psnr_db(prepared, source) >= 42.0  # 42.6 dB measured: grain is the hardest case
    # sound at 48 kHz, the same length and level
    rate, channels, samples = sound(prepared)
    source_rate, _channels, source_samples = sound(source)
    assert (rate, channels) == (48000, 2)
    assert len(samples) / rate == pytest.approx(len(source_samples) / source_rate, abs=0.03)
    assert tone_dbfs(samples, rate) == pytest.approx(
        tone_dbfs(source_samples, source_rate), abs=0.5
    )
    # progress: rising to the whole clip
    assert shares == sorted(shares) and shares[-1] == 1.0 and len(shares) > SECONDS * FPS


def test_a_picture_larger_than_1080p_is_brought_within_it(tmp_path: Path) -> None:
    assert house_size(1920, 1080) == (1920, 1080)
    assert house_size(1280, 720) == (1280, 720)  # never made larger
    assert house_size(3840, 2160) == (1920, 1080)
    assert house_size(4096, 2160) == (1920, 1012)
    assert house_size(1080, 1920) == (606, 1080)  # upright, from a phone
    source = make_source(tmp_path / "uhd.mp4", 2560, 1440, seconds=0.2)
    prepared = prepare(source, tmp_path / "house.mp4")
    item = probe(prepared, "uhd")
    assert (item.width, item.height, item.house) == (1920, 1080, True)


def test_full_range_pictures_are_brought_to_video_range(tmp_path: Path) -> None:
    source = tmp_path / "camera.mkv"
    with av.open(str(source), "w") as out:  # a camera's motion JPEG: full-range YUV
        stream = out.add_stream("mjpeg", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuvj420p"
        for i in range(FPS):
            frame = av.VideoFrame.from_ndarray(np.full((180, 320, 3), 255, np.uint8), "rgb24")
            frame = frame.reformat(format="yuvj420p")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    prepared = prepare(source, tmp_path / "house.mp4")
    with av.open(str(prepared)) as container:
        frame = next(container.decode(video=0))
    assert frame.format.name == "yuv420p"
    luma = frame.to_ndarray()[:180]
    assert abs(float(luma.mean()) - 235) <= 2  # white in video range, not 255


def test_a_file_that_is_no_clip_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("no picture here\n")
    assert not needs_preparing(notes)  # the library's probe refuses it with its reason
    with pytest.raises(MediaError, match="cannot be prepared"):
        prepare(notes, tmp_path / "house.mp4")
    assert not (tmp_path / "house.mp4").exists()
