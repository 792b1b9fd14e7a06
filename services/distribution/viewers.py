"""WHEP viewers: one aiortc peer connection each, sending packets of shared encodings.

A `Viewer` takes its picture and its sound from a `VideoEncoding` and an `AudioEncoding` of
`LiveEncodings` through two `RtpStream`s (`rtp_stream.py`): receivers of the encodings'
fan-outs that send each packet as it is published, split into RTP payloads once for all viewers,
with only the viewer's own header, SRTP and socket per viewer; aiortc's `RTCRtpSender` keeps the
SDP and RTCP. So a viewer costs RTP, SRTP and a socket, never an encoder, nor a task woken per
frame. Its streams stay paused until the connection is up, then start on a keyframe asked for
then, so the first picture is fresh and nothing stale is sent in a burst. A viewer's PLI/FIR
asks the shared encoding for a keyframe too.

`ViewerRegistry` holds the viewers of this replica: opens them (within `max_viewers`), stops
them, reads their RTCP-based statistics once a second, and keeps the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import Callable

import structlog
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.exceptions import InvalidAccessError, OperationError
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from services.common import errors
from services.common.credentials import Principal
from services.common.gen.baycast.v1 import exchange_pb2
from services.common.ice import announce_public_ip
from services.common.peer_certificate import use_peer_certificate
from services.distribution import metrics
from services.distribution.access import Feed
from services.distribution.live_encoding import (
    AudioEncoding,
    AudioKey,
    LiveEncodings,
    VideoEncoding,
    VideoKey,
)
from services.distribution.rtp_stream import IdleTrack, RtpStream
from services.distribution.whep_offer import is_opus, is_shared_h264

VIDEO_CLOCK_RATE = 90_000
AUDIO_CLOCK_RATE = 48_000
# A viewer whose connection is not up this long after its answer has gone away.
CONNECT_TIMEOUT_S = 20.0

log = structlog.get_logger("distribution.viewers")


def _preferences(kind: str) -> list[RTCRtpCodecCapability]:
    """Our codec capabilities the shared encodings fit, Constrained Baseline (42e01f) first."""
    capabilities = RTCRtpSender.getCapabilities(kind).codecs
    if kind == "video":
        chosen = [c for c in capabilities if is_shared_h264(c)]
        chosen.sort(key=lambda c: c.parameters.get("profile-level-id") != "42e01f")
        return chosen + [c for c in capabilities if c.mimeType.lower() == "video/rtx"]
    return [c for c in capabilities if is_opus(c)]


class Viewer:
    """One WHEP session: a peer connection sending one feed's picture and sound."""

    def __init__(
        self,
        feed: Feed,
        principal: Principal,
        video: VideoEncoding,
        audio: AudioEncoding,
        *,
        public_ip: str = "",
        on_end: Callable[[Viewer, str], None],
    ) -> None:
        self.id = uuid.uuid4().hex
        self.feed = feed
        self.principal = principal
        self.video = video
        self.audio = audio
        self.public_ip = public_ip
        self.since_us = time.time_ns() // 1000
        self.started = time.monotonic()
        self.state = "new"
        self.bitrate_kbps = 0.0
        self.loss_fraction = 0.0
        self.rtt_ms = 0.0
        self.jitter_ms = 0.0
        self.bytes_sent = 0
        self._measured_at = time.monotonic()
        self._on_end = on_end
        # Receivers from now (the encodings run for them), paused until the connection is up:
        # see the module docstring.
        self.video_stream = video.fanout.add(RtpStream(video=True))
        self.audio_stream = audio.fanout.add(RtpStream(video=False))
        # No STUN/TURN servers: aiortc's default would send packets to a public STUN server.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        use_peer_certificate(self.pc)
        self.pc.on("connectionstatechange", self._on_state)

    @property
    def rendition(self) -> str:
        return f"{self.video.key.describe()} + opus"

    async def answer(self, offer: str) -> str:
        """Apply the offer, gather every candidate, return the answer SDP.

        Raises InvalidArgument for an offer aiortc cannot use, Unavailable when no candidate
        could be gathered (ICE hosts or the RTC port range).
        """
        video = self.pc.addTransceiver(IdleTrack("video"), "sendonly")
        audio = self.pc.addTransceiver(IdleTrack("audio"), "sendonly")
        self.video_stream.attach(video.sender)
        self.audio_stream.attach(audio.sender)
        # The offer's sections take these transceivers, so only what the encodings make is
        # answered: H.264 Constrained Baseline (with RTX) and Opus.
        video.setCodecPreferences(_preferences("video"))
        audio.setCodecPreferences(_preferences("audio"))
        self._ask_keyframes_on_pli(video)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        except (ValueError, KeyError, IndexError, OperationError, InvalidAccessError) as exc:
            raise errors.InvalidArgument(f"cannot use this offer: {exc}") from None
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        local = self.pc.localDescription.sdp
        if "a=candidate:" not in local:
            # aioice skips addresses it cannot bind: with ICE_HOSTS wrong or the RTC port range
            # full, the answer would carry no candidate and the session could never connect.
            raise errors.Unavailable("no ICE candidate could be gathered (ICE hosts, RTC ports)")
        self.state = "connecting"
        return announce_public_ip(local, self.public_ip)

    def _ask_keyframes_on_pli(self, transceiver: RTCRtpTransceiver) -> None:
        # aiortc answers a PLI or FIR by calling the sender's `_send_keyframe()`, which only
        # flags its own encoder; this sender has none (it sends packets of the shared
        # encoding), so the request goes to the encoding, shared by every viewer of it.
        transceiver.sender._send_keyframe = self.video.request_keyframe  # type: ignore[method-assign]

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self.state != "connected":
            self.state = "connected"
            self.audio_stream.resume()
            self.video_stream.resume()
            self.video.request_keyframe()
            log.info("whep_viewer_connected", session=self.id, production=self.feed.production)
        elif state in ("failed", "closed") and self.state not in ("failed", "closed"):
            self.state = state
            self._on_end(self, f"connection {state}")

    async def measure(self) -> int:
        """Read the RTCP-based statistics; returns the bytes sent since the last call."""
        report = await self.pc.getStats()
        sent = 0
        loss = rtt = jitter = 0.0
        for item in report.values():
            if item.type == "outbound-rtp":
                sent += item.bytesSent
            elif item.type == "remote-inbound-rtp":
                # aiortc 1.16 reports the receiver report's raw 8-bit fraction (n/256).
                loss = max(loss, item.fractionLost / 256)
                if item.roundTripTime is not None:
                    rtt = max(rtt, item.roundTripTime * 1000)
                rate = VIDEO_CLOCK_RATE if item.kind == "video" else AUDIO_CLOCK_RATE
                jitter = max(jitter, item.jitter / rate * 1000)
        now = time.monotonic()
        delta = max(0, sent - self.bytes_sent)
        elapsed = now - self._measured_at
        if elapsed > 0:
            self.bitrate_kbps = delta * 8 / elapsed / 1000
        self.bytes_sent, self._measured_at = sent, now
        self.loss_fraction, self.rtt_ms, self.jitter_ms = loss, rtt, jitter
        return delta

    def to_proto(self) -> exchange_pb2.Viewer:
        return exchange_pb2.Viewer(
            id=self.id,
            production=self.feed.production,
            handle=self.feed.handle,
            principal=self.principal.label,
            since_us=self.since_us,
            state=self.state,
            bitrate_kbps=self.bitrate_kbps,
            loss_fraction=self.loss_fraction,
            rtt_ms=self.rtt_ms,
            jitter_ms=self.jitter_ms,
            rendition=self.rendition,
        )

    async def close(self) -> None:
        if self.state not in ("failed", "closed"):
            self.state = "closed"
        self.video.fanout.remove(self.video_stream)
        self.audio.fanout.remove(self.audio_stream)
        await self.pc.close()


class ViewerRegistry:
    """The WHEP viewers of this replica."""

    def __init__(
        self,
        encodings: LiveEncodings,
        *,
        max_viewers: int,
        public_ip: str = "",
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.encodings = encodings
        self.max_viewers = max_viewers
        self.public_ip = public_ip
        self.connect_timeout_s = connect_timeout_s
        self.accepting = True
        self._viewers: dict[str, Viewer] = {}
        self._opening = 0
        self._stopping: set[asyncio.Task[bool]] = set()
        self._labels: set[tuple[str, str]] = set()  # (production, kind) series we export

    def __len__(self) -> int:
        return len(self._viewers)

    def get(self, viewer_id: str) -> Viewer | None:
        return self._viewers.get(viewer_id)

    def all(self) -> list[Viewer]:
        return list(self._viewers.values())

    def viewers(self, production: str) -> list[exchange_pb2.Viewer]:
        """The production's viewers on this replica, for ExchangeState and ListViewers."""
        return [v.to_proto() for v in self._viewers.values() if v.feed.production == production]

    async def open(
        self, feed: Feed, principal: Principal, offer: str, *, width: int, height: int, fps: int
    ) -> tuple[Viewer, str]:
        """A new viewer of `feed` and its answer SDP (Unavailable over `max_viewers`)."""
        if not self.accepting:
            raise errors.Unavailable("distribution is shutting down")
        if len(self._viewers) + self._opening >= self.max_viewers:
            raise errors.Unavailable(f"this distribution serves at most {self.max_viewers} viewers")
        self._opening += 1
        try:
            viewer = Viewer(
                feed,
                principal,
                self.encodings.video(VideoKey(feed.video_handle, width, height, fps)),
                # A return is foldback (the station's monitoring and IFB): mono, as is usual,
                # at half the encoder's work; the feeds a station may air stay stereo.
                self.encodings.audio(
                    AudioKey(feed.audio_handle, "opus", channels=1 if feed.kind == "return" else 2)
                ),
                public_ip=self.public_ip,
                on_end=self._ended,
            )
            try:
                answer = await viewer.answer(offer)
            except errors.BaycastError:
                await viewer.close()
                raise
            except Exception as exc:  # e.g. no free UDP port in the RTC range
                await viewer.close()
                log.warning("whep_setup_failed", production=feed.production, error=repr(exc))
                raise errors.Unavailable("cannot set up the WebRTC session now") from None
            if not self.accepting:  # the drain began while we gathered
                await viewer.close()
                raise errors.Unavailable("distribution is shutting down")
            self._viewers[viewer.id] = viewer
        finally:
            self._opening -= 1
        self.refresh_metrics()
        return viewer, answer

    def _ended(self, viewer: Viewer, reason: str) -> None:
        task = asyncio.create_task(self.stop(viewer.id, reason), name=f"whep-stop-{viewer.id}")
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def stop(self, viewer_id: str, reason: str) -> bool:
        """End a viewer; False if there is none by that id."""
        viewer = self._viewers.pop(viewer_id, None)
        if viewer is None:
            return False
        try:
            await viewer.close()
        finally:
            self.refresh_metrics()
            log.info(
                "whep_session_ended",
                session=viewer.id,
                production=viewer.feed.production,
                handle=viewer.feed.handle,
                principal=viewer.principal.label,
                reason=reason,
            )
        return True

    async def close_all(self, reason: str) -> None:
        """Stop taking viewers and end every one (SIGTERM drain, teardown)."""
        self.accepting = False
        await asyncio.gather(
            *(self.stop(viewer_id, reason) for viewer_id in list(self._viewers)),
            return_exceptions=True,
        )

    async def measure(self) -> None:
        """Read every viewer's statistics, end those that never connected, update metrics."""
        now = time.monotonic()
        for viewer in self.all():
            if viewer.state != "connected":
                if now - viewer.started > self.connect_timeout_s:
                    await self.stop(viewer.id, "never connected")
                continue
            try:
                sent = await viewer.measure()
            except Exception as exc:  # a connection closing under us: next round
                log.debug("whep_stats_failed", session=viewer.id, error=repr(exc))
                continue
            metrics.WHEP_SENT_BYTES.labels(viewer.feed.production, viewer.feed.kind).inc(sent)
        self.refresh_metrics()

    async def measure_forever(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.measure()

    def refresh_metrics(self) -> None:
        groups: dict[tuple[str, str], list[Viewer]] = defaultdict(list)
        for viewer in self._viewers.values():
            groups[(viewer.feed.production, viewer.feed.kind)].append(viewer)
        for labels in self._labels - set(groups):
            metrics.WHEP_VIEWERS.labels(*labels).set(0)
            metrics.forget_whep_quality(*labels)
        for labels, members in groups.items():
            connected = [v for v in members if v.state == "connected"]
            metrics.WHEP_VIEWERS.labels(*labels).set(len(members))
            metrics.WHEP_BITRATE.labels(*labels).set(sum(v.bitrate_kbps for v in connected) * 1000)
            metrics.WHEP_LOSS.labels(*labels).set(
                max((v.loss_fraction for v in connected), default=0)
            )
            metrics.WHEP_RTT.labels(*labels).set(
                max((v.rtt_ms for v in connected), default=0) / 1000
            )
        self._labels |= set(groups)

    def exported(self) -> set[tuple[str, str]]:
        """The (production, kind) pairs whose metric series exist."""
        return set(self._labels)

    def forget(self, production: str) -> None:
        """Drop a deleted production's metric series (its viewers are stopped already)."""
        for labels in [lb for lb in self._labels if lb[0] == production]:
            self._labels.discard(labels)
            metrics.forget_whep(*labels)

    async def wait_stopped(self) -> None:
        """Until the stops that connection failures started have finished (tests, teardown)."""
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._stopping, return_exceptions=True)
