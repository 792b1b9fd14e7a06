"""A WHEP client (draft-ietf-wish-whep) on aiortc for tests: it receives, decodes and keeps what
it saw, so a test can look at the pictures, listen to the sound and count keyframes.

    viewer = WhepViewer(url, token)
    response = await viewer.post(http)          # offer after gathering, answer applied on 201
    await viewer.wait_frames(1, timeout=1.0)
    pcm = await viewer.record_audio(1.0)
    await viewer.delete(http)

ICE must be limited to 127.0.0.1 beforehand (`services.common.ice.configure(("127.0.0.1",))`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp
import av
import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription

H264 = ("video/H264", "video/rtx")
KEEP_PICTURES = 8


@dataclass
class WhepResponse:
    status: int
    headers: dict[str, str]
    body: str


class WhepViewer:
    def __init__(self, url: str, token: str, *, video_codecs: Sequence[str] = H264) -> None:
        self.url = url
        self.token = token
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.video = self.pc.addTransceiver("video", direction="recvonly")
        self.audio = self.pc.addTransceiver("audio", direction="recvonly")
        capabilities = RTCRtpReceiver.getCapabilities("video").codecs
        self.video.setCodecPreferences([c for c in capabilities if c.mimeType in video_codecs])
        self.location: str | None = None
        self.answer: str | None = None
        self.connected_at: float | None = None
        self.first_picture_at: float | None = None
        self.pictures = 0
        self.keyframes = 0
        self.last_pictures: deque[av.VideoFrame] = deque(maxlen=KEEP_PICTURES)
        self._recording: list[np.ndarray] | None = None
        self._picture_seen = asyncio.Event()
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    @property
    def session_id(self) -> str:
        """The server's id of the session: the last part of its Location."""
        assert self.location is not None
        return self.location.rsplit("/", 1)[-1]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/sdp"}

    async def offer(self) -> str:
        """The offer, with every candidate gathered (WHEP without trickle)."""
        if self.pc.localDescription is None:
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def post(self, http: aiohttp.ClientSession, body: str | None = None) -> WhepResponse:
        """POST the offer (or `body`); on 201 apply the answer and remember the Location."""
        data = await self.offer() if body is None else body
        async with http.post(self.url, data=data.encode(), headers=self.headers) as resp:
            response = WhepResponse(resp.status, dict(resp.headers), await resp.text())
        if response.status == 201:
            self.location = urljoin(self.url, response.headers["Location"])
            self.answer = response.body
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=response.body, type="answer")
            )
        return response

    async def delete(self, http: aiohttp.ClientSession, token: str | None = None) -> int:
        assert self.location is not None
        headers = {"Authorization": f"Bearer {token or self.token}"}
        async with http.delete(self.location, headers=headers) as resp:
            return resp.status

    async def _on_state(self) -> None:
        if self.pc.connectionState == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()
            self._connected.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        read = self._read_video if track.kind == "video" else self._read_audio
        self._tasks.append(asyncio.create_task(read(track)))

    async def _read_video(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.VideoFrame)
                if self.first_picture_at is None:
                    self.first_picture_at = time.monotonic()
                self.pictures += 1
                self.keyframes += bool(frame.key_frame)
                self.last_pictures.append(frame)
                self._picture_seen.set()

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                if self._recording is not None:
                    self._recording.append(
                        frame.to_ndarray().reshape(-1, len(frame.layout.channels))
                    )

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def wait_frames(self, count: int, timeout: float) -> None:
        """Until `count` more pictures have been decoded."""
        target = self.pictures + count
        async with asyncio.timeout(timeout):
            while self.pictures < target:
                self._picture_seen.clear()
                await self._picture_seen.wait()

    async def record_audio(self, seconds: float) -> np.ndarray:
        """The decoded sound of the next `seconds` (int16, samples x channels)."""
        self._recording = []
        await asyncio.sleep(seconds)
        chunks, self._recording = self._recording, None
        return np.concatenate(chunks) if chunks else np.zeros((0, 2), dtype=np.int16)

    def picture(self) -> np.ndarray:
        """The newest decoded picture as packed I420 (rows x width)."""
        return self.last_pictures[-1].to_ndarray(format="yuv420p")

    def video_ssrc(self) -> int:
        """The SSRC the server sends the picture with (from its answer)."""
        assert self.answer is not None
        media = next(m for m in SessionDescription.parse(self.answer).media if m.kind == "video")
        return media.ssrc[0].ssrc

    async def send_pli(self) -> None:
        """Ask the server for a keyframe as a decoder that lost one would (RTCP PLI)."""
        await self.video.receiver._send_rtcp_pli(self.video_ssrc())

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pc.close()
