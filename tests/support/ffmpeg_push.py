"""Debian's ffmpeg as a station encoder in tests: a few seconds of test pattern and tone, pushed
over RTMP or SRT to 127.0.0.1.

    push = await ffmpeg_push(rtmp_url(port, "live", token), "flv", seconds=4)
    ...
    code, log = await push.finish()
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import numpy as np

from services.common.gen.baycast.v1 import media_pb2
from services.common.media import proto_to_pcm

FFMPEG = "/usr/bin/ffmpeg"
SIZE = (640, 360)
TONE_HZ = 1000


def rtmp_url(port: int, app: str, key: str) -> str:
    return f"rtmp://127.0.0.1:{port}/{app}/{key}"


def encoder_args(seconds: float, size: tuple[int, int] = SIZE) -> list[str]:
    """A moving pattern and a 1 kHz tone, H.264 + AAC, one keyframe a second."""
    w, h = size
    return [
        FFMPEG,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "info",
        "-re",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={w}x{h}:rate=25",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency={TONE_HZ}:sample_rate=48000",
        "-t",
        str(seconds),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-ar",
        "48000",
    ]


@dataclass
class Push:
    proc: asyncio.subprocess.Process

    async def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        """Wait for the encoder to exit; (exit code, its log)."""
        try:
            _, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        except TimeoutError:
            self.kill()
            _, err = await self.proc.communicate()
        assert self.proc.returncode is not None
        return self.proc.returncode, err.decode(errors="replace")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


async def ffmpeg_push(url: str, muxer: str, seconds: float = 4.0) -> Push:
    proc = await asyncio.create_subprocess_exec(
        *encoder_args(seconds),
        "-f",
        muxer,
        url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    return Push(proc)


def dominant_hz(frames: list[media_pb2.AudioFrame]) -> float:
    """The strongest frequency in the first channel of `frames`."""
    pcm = np.concatenate([proto_to_pcm(f)[:, 0] for f in frames]).astype(np.float64)
    rate = frames[0].sample_rate
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])
