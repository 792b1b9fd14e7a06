"""A WHIP contribution: an aiortc peer connection that receives one station's tracks.

Each track's payloads are decoded as `track_decoding` arranges (pictures in a thread of their
own, sound on the event loop) and the decoded `av.VideoFrame`/`av.AudioFrame` go straight to the
hub once the source runs, so aiortc's unbounded track queues stay empty; the tracks' `recv()`
only tells when they end. Payloads that fail to decode are counted per source (aiortc itself
only logs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import structlog
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.exceptions import InvalidAccessError, OperationError
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdtlstransport import SRTPProtectionProfile
from aiortc.sdp import SessionDescription
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL, crypto

from services.common.ice import announce_public_ip, probe_rtt_ms
from services.common.peer_certificate import PeerCertificate, use_peer_certificate
from services.common.sdp_checks import transport_problem
from services.ingest import dtls_p224, track_decoding
from services.ingest.source import FrameSink, Source, TransportStats

# aiortc holds back four 20 ms Opus packets before it decodes the first (80 ms); the mixer's
# own buffer absorbs arrival jitter after decoding, so one is enough here (talkback onset and
# lip sync both gain the difference).
AUDIO_PREFETCH_PACKETS = 1
VIDEO_CLOCK_RATE = 90_000
AUDIO_CLOCK_RATE = 48_000
RTT_PROBE_TIMEOUT_S = 1.0
log = structlog.get_logger("ingest.whip")


# What WebRTC offers carry: media, and a data channel (answered, never used).
SECTION_KINDS = ("audio", "video", "application")


class SdpError(ValueError):
    """The offer is not an SDP offer this server can answer; the message says why."""


def check_offer(text: str) -> SessionDescription:
    """Parse an SDP offer and refuse what cannot work, with a reason for the 400 reply."""
    if not text.startswith("v=0"):
        raise SdpError("the body is not SDP (it must start with v=0)")
    try:
        parsed = SessionDescription.parse(text)
    except Exception as exc:  # aiortc raises ValueError, IndexError, KeyError on bad lines
        raise SdpError(f"malformed SDP: {type(exc).__name__}: {exc}") from None
    kinds = [m.kind for m in parsed.media]
    if not any(k in ("audio", "video") for k in kinds):
        raise SdpError("the offer has no audio or video section")
    for kind in kinds:
        if kind not in SECTION_KINDS:  # aiortc would answer it as a data channel it never made
            raise SdpError(f"the offer has a section of kind {kind!r} (m={kind})")
    problem = transport_problem(parsed)
    if problem:
        raise SdpError(problem)
    for media in parsed.media:
        if media.kind not in ("audio", "video"):
            continue
        if media.direction is None:
            # SDP's default is sendrecv, but aiortc fails to answer a section without one.
            raise SdpError(f"the {media.kind} section has no direction (a=sendonly)")
        if media.direction not in ("sendonly", "sendrecv"):
            raise SdpError(f"the {media.kind} section must be sendonly (it is {media.direction})")
        if not (media.ice and media.ice.usernameFragment):
            raise SdpError(f"the {media.kind} section has no ICE credentials (a=ice-ufrag)")
        if media.dtls is None or not media.dtls.fingerprints:
            raise SdpError(f"the {media.kind} section has no DTLS fingerprint")
    return parsed


class WhipCertificate(PeerCertificate):
    """The peers' certificate (services/common/peer_certificate.py: ECDSA P-256, ECDHE-RSA
    suites offered too) whose DTLS also works with FFmpeg's own P-224 certificate.

    A WHIP offer says `a=setup:actpass` (FFmpeg's muxer: `passive`) and aiortc answers `active`:
    ingest is the DTLS client.

    * FFmpeg 8.1 built with GnuTLS makes its certificate on P-224. As a TLS 1.2 client, OpenSSL
      takes a server's ECDSA certificate only on one of its own groups, and the OpenSSL of the
      `cryptography` wheel has no P-224 group ("wrong curve", `illegal_parameter`).
      `dtls_p224` gives it one (ADR 0013); the verification callback then adds P-224 to a
      connection's groups when, and only when, the publisher's certificate is on P-224: the
      ClientHello stays as it was for every publisher, and DTLS stays 1.2 with the same suites.
      Ingest as the DTLS server (FFmpeg's `-whip_flags dtls_active`) still refuses a P-224
      client certificate: OpenSSL also wants its curve among the client's own groups.
    """

    def _create_ssl_context(self, srtp_profiles: list[SRTPProtectionProfile]) -> SSL.Context:
        context = super()._create_ssl_context(srtp_profiles)  # the ECDHE-RSA twins too
        if dtls_p224.available():
            context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, accept_peer)
        return context


def accept_peer(
    connection: SSL.Connection, certificate: crypto.X509, _errno: int, depth: int, _ok: int
) -> bool:
    """Accept any certificate, as aiortc does (it compares the fingerprint from the SDP once the
    handshake is done), and put P-224 among the connection's groups if the publisher's is on
    P-224. OpenSSL calls this before it checks the curve (at the server's key exchange)."""
    with contextlib.suppress(Exception):  # an exception here would abort the handshake
        key = certificate.to_cryptography().public_key()
        on_p224 = isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP224R1)
        if depth == 0 and on_p224:
            dtls_p224.allow_on(connection)
    return True


def use_whip_certificate(pc: RTCPeerConnection) -> WhipCertificate:
    """Give `pc` a `WhipCertificate`, before any offer or answer."""
    return use_peer_certificate(pc, WhipCertificate)


def shorten_audio_prefetch(receiver: RTCRtpReceiver) -> None:
    """Let aiortc's audio jitter buffer of `receiver` hold back one packet, not four (aiortc
    has no option for it; the buffer is made in the receiver's `__init__`)."""
    buffer = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    if not isinstance(buffer, JitterBuffer) or not hasattr(buffer, "_prefetch"):
        raise RuntimeError("aiortc changed: RTCRtpReceiver has no jitter buffer to set")
    buffer._prefetch = AUDIO_PREFETCH_PACKETS


class NoCandidates(RuntimeError):
    """No local address/port could be bound for ICE."""


MEDIA_KINDS = frozenset({"audio", "video"})


class WhipSource(Source):
    """One contribution's WebRTC session, from the SDP offer to the end of its tracks.

    Only the media `kinds` are received: an offered section of another kind is answered
    `inactive`, so the publisher sends nothing there (a talk source takes the voice, not the
    picture a browser may offer with it).
    """

    protocol = "whip"

    def __init__(
        self,
        source_id: str,
        station: str,
        name: str,
        public_ip: str = "",
        kinds: frozenset[str] = MEDIA_KINDS,
    ) -> None:
        super().__init__(source_id, station, name)
        self.session_id = uuid.uuid4().hex
        self.public_ip = public_ip
        self.kinds = kinds
        # No STUN/TURN servers: aiortc's default would send packets to a public STUN server.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        use_whip_certificate(self.pc)
        self._tracks: list[MediaStreamTrack] = []
        self._deliveries: list[track_decoding.Delivery] = []
        self._ended = asyncio.Event()
        self._end_reason = "ended"
        self._rtt_ms = 0.0
        self._reading = 0
        self._decode_errors = track_decoding.DecodeErrorCounter()
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    async def answer(self, offer: str) -> str:
        """Apply the offer, gather candidates, return the answer SDP (raises SdpError)."""
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        except (ValueError, KeyError, IndexError, OperationError, InvalidAccessError) as exc:
            # OperationError: no codec in common (ingest receives VP8, H.264 and Opus).
            raise SdpError(
                f"cannot use this offer: {exc} (VP8, H264 and opus are supported)"
            ) from None
        if not self._tracks:
            wanted = " or ".join(sorted(self.kinds))
            raise SdpError(f"the offer has no {wanted} track to receive")
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind not in self.kinds:
                transceiver.direction = "inactive"
            elif transceiver.kind == "audio":
                shorten_audio_prefetch(transceiver.receiver)
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        local = self.pc.localDescription.sdp
        if "a=candidate:" not in local:
            # aioice skips addresses it cannot bind: with ICE_HOSTS wrong or the RTC port range
            # full, the answer would carry no candidate and the session could never connect.
            raise NoCandidates("no ICE candidate could be gathered (ICE hosts, RTC port range)")
        for media in SessionDescription.parse(local).media:
            if media.rtp.codecs and media.kind in self.kinds:
                codec = media.rtp.codecs[0].mimeType.split("/")[-1]
                if media.kind == "video":
                    self.video_codec = codec
                elif media.kind == "audio":
                    self.audio_codec = codec
        return announce_public_ip(local, self.public_ip)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind not in self.kinds:
            return
        receiver = next(t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track)
        self._deliveries.append(track_decoding.watch(receiver, self._decode_errors))
        self._tracks.append(track)

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        if state in ("failed", "closed"):
            self._end_reason = self.dtls_failure() or f"connection {state}"
            self._ended.set()

    def dtls_failure(self) -> str:
        """The end reason when ICE connected but the DTLS handshake did not, else ''."""
        for transceiver in self.pc.getTransceivers():
            dtls = transceiver.receiver.transport
            # ICE had connected (a DTLS transport fails only once started); aiortc may have
            # closed the ICE transport since, but not failed it.
            if dtls.state == "failed" and dtls.transport.state != "failed":
                return (
                    "DTLS handshake failed (the publisher's certificate or cipher suites were "
                    "refused: an ECDSA certificate must be on P-256, P-384 or P-521, or on P-224 "
                    "if the publisher is the DTLS server)"
                )
        return ""

    async def run(self, sink: FrameSink) -> str:
        # The session ends when the connection does, or when every media track has ended.
        self._reading = len(self._tracks)
        for track, delivery in zip(self._tracks, self._deliveries, strict=True):
            delivery.start(sink.offer_video if track.kind == "video" else sink.offer_audio)
        tasks = [asyncio.create_task(self._read(track)) for track in self._tracks]
        tasks.append(asyncio.create_task(self._probe_rtt()))
        try:
            await self._ended.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return self._end_reason

    async def _read(self, track: MediaStreamTrack) -> None:
        """Wait for `track` to end: its frames go to the sink by its delivery, so its queue
        carries only the end."""
        try:
            while True:
                await track.recv()
        except MediaStreamError:
            self._reading -= 1
            if self._reading == 0:
                self._end_reason = "media tracks ended"
                self._ended.set()

    async def _probe_rtt(self) -> None:
        """Round-trip time by a STUN binding request on the nominated ICE pair, every second.

        A receive-only aiortc peer computes no RTT (that comes from receiver reports, which a
        receiver does not get), but ICE checks are answered by every WebRTC stack.
        """
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                self._rtt_ms = await self._stun_rtt_ms()

    async def _stun_rtt_ms(self) -> float:
        transceivers = self.pc.getTransceivers()
        if not transceivers:
            return self._rtt_ms
        rtt = await probe_rtt_ms(transceivers[0].receiver.transport.transport, RTT_PROBE_TIMEOUT_S)
        return self._rtt_ms if rtt is None else rtt

    async def transport_stats(self) -> TransportStats:
        stats = TransportStats(rtt_ms=self._rtt_ms, decode_errors=self._decode_errors.count)
        report = await self.pc.getStats()
        for item in report.values():
            if item.type == "inbound-rtp":
                stats.packets_received += item.packetsReceived
                stats.packets_lost += max(0, item.packetsLost)
                rate = VIDEO_CLOCK_RATE if item.kind == "video" else AUDIO_CLOCK_RATE
                stats.jitter_ms = max(stats.jitter_ms, item.jitter / rate * 1000)
            elif item.type == "transport":
                stats.bytes_received = max(stats.bytes_received, item.bytesReceived)
        return stats

    async def close(self) -> None:
        self._end_reason = self._end_reason if self._ended.is_set() else "closed by ingest"
        self._ended.set()
        await self.pc.close()
