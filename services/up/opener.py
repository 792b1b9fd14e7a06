"""The demo show's title film (开场片头): a few seconds of H.264 and AAC made here.

The title fades in over a dark blue ground with a band of light sweeping across it (never black:
the platform's monitoring takes a black program for a fault), over a soft chord that swells and
fades. Pillow draws the text once; every frame is numpy over two arrays, and
PyAV encodes it, in the media library's house format (ADR 0027). Made once per format and kept
in the state directory.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from services.common.house_format import VIDEO_OPTIONS
from services.common.media_library import HOUSE_COMMENT

FONT_PATH = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
SECONDS = 5.0
FPS = 25
RATE = 48_000
GROUND = np.array([12, 28, 64], dtype=np.float32)  # dark blue
CHORD_HZ = (220.0, 277.18, 329.63, 440.0)  # A major, soft
CHORD_PEAK = 0.043  # of full scale, each of the four voices: the film reads about -23 LUFS


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype(FONT_PATH, size)
    except OSError:
        return ImageFont.load_default()


def _titles(width: int, height: int, title: str, subtitle: str) -> np.ndarray:
    """The text as a coverage mask 0..1 (height x width)."""
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    draw.text((width / 2, height * 0.44), title, font=_font(height // 7), fill=255, anchor="mm")
    draw.text((width / 2, height * 0.62), subtitle, font=_font(height // 22), fill=200, anchor="mm")
    return np.asarray(image, dtype=np.float32) / 255


def _picture(
    t: float, mask: np.ndarray, band: slice, columns: np.ndarray, seconds: float
) -> np.ndarray:
    """One RGB frame at `t` seconds: the ground and its band of light (one row, repeated), the
    title blended in only on the rows it covers (`band`)."""
    sweep = (t / seconds) * 1.6 - 0.3  # the band of light's centre, as a fraction of the width
    row = GROUND + np.exp(-(((columns - sweep) / 0.12) ** 2))[:, None] * 50
    frame = np.empty((mask.shape[0], len(columns), 3), dtype=np.uint8)
    frame[:] = row.astype(np.uint8)
    text = min(1.0, max(0.0, (t - 0.4) / 1.0)) * mask[band, :, None]
    frame[band] = (row * (1 - text) + 255 * text).astype(np.uint8)
    return frame


def _chord(seconds: float) -> np.ndarray:
    """The sound, float32 stereo (samples x 2)."""
    t = np.arange(round(seconds * RATE)) / RATE
    voices = sum(np.sin(2 * np.pi * hz * t) for hz in CHORD_HZ)
    envelope = np.minimum(1.0, np.minimum(t / 1.0, (seconds - t) / 1.2)).clip(0, 1)
    mono = (CHORD_PEAK * voices * envelope).astype(np.float32)
    return np.stack([mono, mono], axis=1)


def make_opener(
    path: Path,
    width: int,
    height: int,
    *,
    title: str,
    subtitle: str,
    seconds: float = SECONDS,
) -> Path:
    """Write the title film to `path` (MP4, H.264 and AAC) unless it is there already."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.mp4")
    mask = _titles(width, height, title, subtitle)
    rows = np.flatnonzero(mask.any(axis=1))
    band = slice(int(rows[0]), int(rows[-1]) + 1) if len(rows) else slice(0, 0)
    columns = np.arange(width, dtype=np.float32) / width
    with av.open(str(partial), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {**VIDEO_OPTIONS, "g": str(FPS)}
        out.metadata["comment"] = HOUSE_COMMENT
        audio = out.add_stream("aac", rate=RATE, layout="stereo")
        frames = round(seconds * FPS)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(
                _picture(i / FPS, mask, band, columns, seconds), format="rgb24"
            )
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        sound = _chord(frames / FPS)
        step = 1024
        for start in range(0, len(sound), step):
            chunk = np.ascontiguousarray(sound[start : start + step].T)
            samples = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            samples.sample_rate, samples.pts = RATE, start
            samples.time_base = Fraction(1, RATE)
            out.mux(audio.encode(samples))
        out.mux(audio.encode(None))
    partial.rename(path)
    return path
