"""A WHIP publisher (RFC 9725 client) that keeps a station on air.

It POSTs an offer with the bearer token, applies the answer, and watches the connection. When
the connection fails (or the server ends it), it DELETEs the old session (so the server does not
answer 409 to the new one) and publishes again, waiting 0.5 s, 1 s, 2 s ... up to 5 s between
attempts. 401 and 404 are final: retrying a wrong token or station helps nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from urllib.parse import urljoin

import aiohttp
import structlog
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from services.common.tls import http_connector

RETRY_MIN_S = 0.5
RETRY_MAX_S = 5.0
HTTP_TIMEOUT_S = 10.0

log = structlog.get_logger("station")


class PublishRefused(Exception):
    """The server refused the station for good (wrong token, unknown station)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


class WhipPublisher:
    def __init__(
        self,
        whip_url: str,
        token: str,
        make_tracks: Callable[[], list[MediaStreamTrack]],
        *,
        h264_only: bool = False,
        ca_file: str = "",
    ) -> None:
        self.whip_url = whip_url
        # Trusted on top of the system's roots for an https:// WHIP URL (a private CA).
        self.ca_file = ca_file
        self.token = token
        self.make_tracks = make_tracks
        self.h264_only = h264_only
        self.connected = asyncio.Event()
        self.sessions = 0  # how many times it went on air
        self.last_status = 0
        self.location: str | None = None
        self.pc: RTCPeerConnection | None = None

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set, reconnecting after every failure."""
        delay = RETRY_MIN_S
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S),
            connector=http_connector(self.ca_file),
        ) as http:
            while not stop.is_set():
                try:
                    ended = await self.publish_once(http)
                    delay = RETRY_MIN_S
                    stop_wait = asyncio.create_task(stop.wait())
                    await asyncio.wait([ended, stop_wait], return_when=asyncio.FIRST_COMPLETED)
                    stop_wait.cancel()
                    ended.cancel()
                except PublishRefused:
                    await self.close(http)
                    raise
                except (aiohttp.ClientError, OSError, TimeoutError, RuntimeError) as exc:
                    log.warning(
                        "publish_failed", url=self.whip_url, error=str(exc) or type(exc).__name__
                    )
                await self.close(http)
                if stop.is_set():
                    break
                log.info("reconnecting", in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def publish_once(self, http: aiohttp.ClientSession) -> asyncio.Task[None]:
        """Go on air once; returns a task that finishes when the connection is lost."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc = pc
        lost = asyncio.Event()

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "connected":
                self.connected.set()
            elif pc.connectionState in ("failed", "closed"):
                lost.set()

        for track in self.make_tracks():
            transceiver = pc.addTransceiver(track, direction="sendonly")
            if track.kind == "video" and self.h264_only:
                codecs = RTCRtpSender.getCapabilities("video").codecs
                transceiver.setCodecPreferences(
                    [c for c in codecs if c.mimeType in ("video/H264", "video/rtx")]
                )
        await pc.setLocalDescription(await pc.createOffer())
        async with http.post(
            self.whip_url,
            data=pc.localDescription.sdp.encode(),
            headers={**self._auth, "Content-Type": "application/sdp"},
        ) as resp:
            self.last_status = resp.status
            body = await resp.text()
            if resp.status in (401, 404):
                raise PublishRefused(resp.status, body.strip())
            if resp.status != 201:
                raise RuntimeError(f"WHIP POST answered {resp.status}: {body.strip()}")
            self.location = urljoin(self.whip_url, resp.headers["Location"])
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        self.sessions += 1
        log.info("on_air", url=self.whip_url, session=self.location)
        return asyncio.create_task(self._until(lost))

    @staticmethod
    async def _until(event: asyncio.Event) -> None:
        await event.wait()

    async def close(self, http: aiohttp.ClientSession) -> None:
        """End the current session: DELETE it on the server (best effort), close the peer."""
        self.connected.clear()
        location, self.location = self.location, None
        if location is not None:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with http.delete(location, headers=self._auth) as resp:
                    await resp.read()
        if self.pc is not None:
            await self.pc.close()
            self.pc = None
