"""Clips and stills for tests of the media library, made with PyAV and Pillow in a test's folder."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
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


def open_media(path: Path) -> av.container.InputContainer:
    """`path` opened for reading, as MPEG-TS when it is named so: as an HLS player knows its
    segments from the playlist. FFmpeg's probe alone can take a file of a few TS packets (an
    output stopped a picture or two into a new segment) for MPEG-PS and find no stream in it."""
    return av.open(str(path), format="mpegts" if path.suffix == ".ts" else None)


def write_still(path: Path, *, width: int = 64, height: int = 36) -> Path:
    """A PNG or JPEG (by the suffix) of one colour."""
    Image.new("RGB", (width, height), (200, 40, 30)).save(path)
    return path


def grain_clip(
    path: Path,
    width: int,
    height: int,
    seconds: float,
    *,
    fps: int = 25,
    tone_hz: float = 1000.0,
    sample_rate: int = 48_000,
    encoding: Sequence[str] = (),
) -> Path:
    """Debian ffmpeg's moving pattern with film grain, the costliest picture to decode and to
    keep, as H.264 High (CABAC, deblocking; `encoding`: more x264 options) with a tone in AAC."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps},noise=alls=12:allf=t",
         "-f", "lavfi", "-i", f"sine=frequency={tone_hz}:sample_rate={sample_rate}",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high",
         *encoding, "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2", str(path)],
        check=True,
    )  # fmt: skip
    return path


def psnr_db(copy: Path, original: Path) -> float:
    """The average PSNR of `copy`'s pictures against `original`'s (Debian ffmpeg)."""
    run = subprocess.run(
        ["ffmpeg", "-nostats", "-i", str(copy), "-i", str(original),
         "-lavfi", "[0:v][1:v]psnr", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = re.search(r"PSNR .*average:([0-9.]+)", run.stderr)
    if found is None:
        raise ValueError(f"ffmpeg gave no PSNR: {run.stderr[-500:]}")
    return float(found.group(1))
