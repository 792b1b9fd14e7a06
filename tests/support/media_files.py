"""Clips and stills for tests of the media library, made with PyAV and Pillow in a test's folder."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image

SAMPLE_RATE = 48_000
TONE_HZ = 440.0


def write_clip(
    path: Path,
    *,
    seconds: float = 1.0,
    width: int = 320,
    height: int = 180,
    fps: int = 25,
    audio: str | None = "aac",
    noise: bool = False,
) -> Path:
    """An H.264 clip (MP4 or MKV by the suffix) with a tone track in `audio` (aac, libopus, or
    None for none). `noise`: random pictures, which barely compress (about 1.1 MB a second at
    320x180), for a file of many chunks."""
    rng = np.random.default_rng(7)
    frames = round(seconds * fps)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "18"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = out.add_stream(audio, rate=SAMPLE_RATE, layout="stereo") if audio else None
        out.start_encoding()  # opens the encoders: the audio one now knows its frame size
        for i in range(frames):
            if noise:
                image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            else:
                image = np.full((height, width, 3), (i * 9) % 256, dtype=np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(video.encode(None))
        if sound is not None:
            _write_tone(out, sound, seconds)
    return path


def _write_tone(out: av.container.OutputContainer, sound: av.AudioStream, seconds: float) -> None:
    size = sound.codec_context.frame_size or 1024
    for start in range(0, int(seconds * SAMPLE_RATE) - size + 1, size):
        t = (start + np.arange(size)) / SAMPLE_RATE
        tone = (0.25 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = SAMPLE_RATE, start
        out.mux(sound.encode(frame))
    out.mux(sound.encode(None))


def write_still(path: Path, *, width: int = 64, height: int = 36) -> Path:
    """A PNG or JPEG (by the suffix) of one colour."""
    Image.new("RGB", (width, height), (200, 40, 30)).save(path)
    return path
