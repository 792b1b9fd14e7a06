"""SRT push (caller, encrypted) to a real SRT listener (Debian ffmpeg with libsrt)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.gen.baycast.v1 import distribution_pb2 as dist
from tests.integration.distribution.conftest import FPS, HEIGHT, WIDTH, Show
from tests.support.nats import free_udp_port
from tests.support.rtmp import probe

PASSPHRASE = "harbour-bridge-2026"


class SrtListener:
    """ffmpeg listening for one SRT caller, saving what it receives as MPEG-TS."""

    def __init__(self, folder: Path, passphrase: str) -> None:
        self.port = free_udp_port()
        self.path = folder / "received.ts"
        self.log = folder / "srt-listener.log"
        url = f"srt://127.0.0.1:{self.port}?mode=listener&passphrase={passphrase}&pbkeylen=16"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    "ffmpeg",
                    "-hide_banner",
                    "-nostdin",
                    "-loglevel",
                    "error",
                    "-y",
                    "-f",
                    "mpegts",
                    "-i",
                    url,
                    "-map",
                    "0",
                    "-c",
                    "copy",
                    "-f",
                    "mpegts",
                    str(self.path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def wait(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def srt_listener(tmp_path: Path) -> Iterator[SrtListener]:
    listener = SrtListener(tmp_path, PASSPHRASE)
    yield listener
    listener.stop()


async def test_srt_push_arrives_encrypted_and_decodes(
    show: Show, srt_listener: SrtListener
) -> None:
    url = f"srt://127.0.0.1:{srt_listener.port}"
    state = await show.add(id="srt", kind=dist.OUTPUT_KIND_SRT, url=url, passphrase=PASSPHRASE)
    assert PASSPHRASE not in str(state)
    await show.wait_status("srt", dist.OUTPUT_STATUS_LIVE)
    await asyncio.sleep(3)
    stopped = (await show.command(stop=dist.OutputRef(id="srt"))).outputs[0]
    await asyncio.to_thread(srt_listener.wait, 10)
    info = probe(srt_listener.path)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", WIDTH, HEIGHT)
    assert video["r_frame_rate"] == f"{FPS}/1"
    assert (audio["codec_name"], audio["sample_rate"]) == ("aac", "48000")
    assert abs(float(info["format"]["duration"]) - stopped.media_seconds) < 0.5
    assert all(PASSPHRASE not in s.reason + s.url for s in show.states)


async def test_srt_wrong_passphrase_fails_without_retrying(
    show: Show, srt_listener: SrtListener
) -> None:
    url = f"srt://127.0.0.1:{srt_listener.port}"
    await show.add(id="srt", kind=dist.OUTPUT_KIND_SRT, url=url, passphrase="not-the-passphrase")
    failed = await show.wait_status("srt", dist.OUTPUT_STATUS_FAILED)
    assert failed.attempts == 1 and failed.reason
    assert "not-the-passphrase" not in failed.reason
