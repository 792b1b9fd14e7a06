"""The library's house format for clips: what the mixer decodes on air cheaply (ADR 0027).

`baycast ctl media add` prepares a clip before it stores it (a still is kept as it is): the
picture in H.264 that x264 makes for cheap decoding (`tune=fastdecode`: CAVLC instead of CABAC,
no deblocking filter, no weighted prediction) at CRF 18, a keyframe every second so a seek
decodes at most a second, I420 in video range, at most 1920x1080 at the clip's own rate and
timestamps; the sound in AAC at 48 kHz, mono or stereo. A file in the house format carries
`media_library.HOUSE_COMMENT` in its container's comment and is not prepared again.

The work is the operator's tool's, off the air: the mixer's CPU is sized for the show.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
from av.video.reformatter import ColorRange

from services.common.media_library import HOUSE_COMMENT, MediaError, is_house

MAX_WIDTH, MAX_HEIGHT = 1920, 1080
CRF = 18
VIDEO_OPTIONS = {"preset": "veryfast", "tune": "fastdecode", "crf": str(CRF)}
AUDIO_RATE = 48000
AUDIO_BIT_RATE = {"mono": 96_000, "stereo": 192_000}

Progress = Callable[[float], None]  # the share of the clip's duration prepared, 0..1


def needs_preparing(path: Path) -> bool:
    """Whether `path` is a clip not in the house format (a still, or a file FFmpeg cannot read,
    is left to the library's probe to take or refuse)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video or container.format.name == "image2":
                return False
            if container.format.name.endswith("_pipe"):
                return False
            return not is_house(container)
    except av.error.FFmpegError:
        return False


def house_size(width: int, height: int) -> tuple[int, int]:
    """The largest even size of the picture's shape within 1920x1080 (never larger than it)."""
    scale = min(1.0, MAX_WIDTH / width, MAX_HEIGHT / height)
    return max(2, math.floor(width * scale / 2) * 2), max(2, math.floor(height * scale / 2) * 2)


def prepare(source: Path, target: Path, progress: Progress | None = None) -> Path:
    """Write `source` to `target` (MP4) in the house format; MediaError if it cannot be read."""
    try:
        with av.open(str(source)) as src, av.open(str(target), "w", format="mp4") as out:
            _Transcode(src, out, progress or (lambda _share: None)).run()
    except av.error.FFmpegError as exc:
        target.unlink(missing_ok=True)
        raise MediaError(
            f"{source}: cannot be prepared for the library ({exc})", field="file"
        ) from None
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


class _Transcode:
    def __init__(self, src: Any, out: Any, progress: Progress) -> None:
        self.src, self.out, self.progress = src, out, progress
        self.video_in = src.streams.video[0]
        self.video_in.thread_type = "AUTO"
        self.audio_in = src.streams.audio[0] if src.streams.audio else None
        rate = self.video_in.average_rate or self.video_in.guessed_rate or Fraction(25)
        ctx = self.video_in.codec_context
        if not ctx.width or not ctx.height:
            raise MediaError(f"{src.name}: its video stream has no picture size", field="file")
        self.width, self.height = house_size(ctx.width, ctx.height)
        self.video = out.add_stream(
            "libx264", rate=rate, options={**VIDEO_OPTIONS, "g": str(max(1, round(rate)))}
        )
        self.video.width, self.video.height, self.video.pix_fmt = (
            self.width,
            self.height,
            "yuv420p",
        )
        self.video.codec_context.time_base = self.video_in.time_base
        if ctx.sample_aspect_ratio:
            self.video.codec_context.sample_aspect_ratio = ctx.sample_aspect_ratio
        self.audio = None
        if self.audio_in is not None:
            layout = "mono" if self.audio_in.codec_context.channels == 1 else "stereo"
            self.audio = out.add_stream("aac", rate=AUDIO_RATE, layout=layout)
            self.audio.bit_rate = AUDIO_BIT_RATE[layout]
        out.metadata["comment"] = HOUSE_COMMENT
        start = self.video_in.start_time or 0
        self.origin = float(start * self.video_in.time_base) if self.video_in.time_base else 0.0
        self.duration = (src.duration or 0) / 1_000_000
        self.frame_length = 1 / rate
        self.last_pts: int | None = None

    def run(self) -> None:
        streams = [s for s in (self.video_in, self.audio_in) if s is not None]
        for packet in self.src.demux(*streams):
            for frame in packet.decode():
                if packet.stream is self.video_in:
                    self._picture(frame)
                elif self.audio is not None:
                    self.out.mux(self.audio.encode(frame))
        self.out.mux(self.video.encode(None))
        if self.audio is not None:
            self.out.mux(self.audio.encode(None))
        self.progress(1.0)

    def _picture(self, frame: av.VideoFrame) -> None:
        convert = (
            frame.format.is_rgb
            or frame.format.name.startswith("yuvj")
            or frame.color_range == ColorRange.JPEG
        )
        picture = frame.reformat(
            width=self.width,
            height=self.height,
            format="yuv420p",
            interpolation="BICUBIC",
            dst_colorspace="ITU709" if convert else None,
            dst_color_range="MPEG" if convert else None,
        )
        pts = frame.pts
        if pts is None or (self.last_pts is not None and pts <= self.last_pts):
            # a frame without a time, or out of order: the next frame's slot
            step = max(1, round(self.frame_length / self.video_in.time_base))
            pts = 0 if self.last_pts is None else self.last_pts + step
        picture.pts, picture.time_base = pts, self.video_in.time_base
        self.last_pts = pts
        self.out.mux(self.video.encode(picture))
        if self.duration > 0:
            done = float(pts * self.video_in.time_base) - self.origin
            self.progress(min(1.0, max(0.0, done / self.duration)))
