"""A viewer's RTP stream of a shared encoding: its header, its SRTP, its socket, nothing more.

aiortc's `RTCRtpSender` sends a track from a task of its own: per frame a wakeup and the codec's
packetizer, per RTP packet an `RtpPacket` object, its serialization, SRTP and four coroutine hops
down to the socket. For a dozen viewers of one encoding that is the same packetization a dozen
times and a dozen tasks woken per frame. Here an encoding's packet is split into RTP payloads
once (`Packetizer`, with aiortc's own H.264 packetizer, remembered for the next viewer of the
same packet), and `Fanout.publish` hands the packet to every viewer's `RtpStream`, which writes
its own header (its SSRC, sequence number, timestamp origin, header extensions), protects it
with its own SRTP session and sends it on its ICE pair: synchronously, on the event loop.

aiortc's sender keeps everything else: the SDP, its RTCP task (sender reports, from the counts
this stream writes back into it), receiver reports, PLI/FIR (which `viewers.py` sends to the
shared encoder) and NACK (answered from this stream's history, as RTX when negotiated). Its track
is an `IdleTrack`, which never yields a frame.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from fractions import Fraction
from struct import pack

import av
import structlog
from aiortc import RTCRtpSender
from aiortc.clock import current_ntp_time
from aiortc.codecs import is_rtx
from aiortc.codecs.h264 import H264Encoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack, convert_timebase
from aiortc.rtcrtpparameters import RTCRtpSendParameters
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import (
    RTP_HISTORY_SIZE,
    HeaderExtensions,
    HeaderExtensionsMap,
    RtpPacket,
    wrap_rtx,
)
from aiortc.utils import random32

VIDEO_CLOCK = Fraction(1, 90_000)
AUDIO_CLOCK = Fraction(1, 48_000)
RTP_VERSION_BITS = 0x80  # version 2, no padding, no CSRC
EXTENSION_BIT = 0x10
MARKER_BIT = 0x80
ABS_SEND_TIME_MASK = 0xFFFFFF

log = structlog.get_logger("distribution.rtp_stream")


@dataclass(frozen=True, slots=True)
class RtpFrame:
    """One encoded packet as RTP payloads, with its timestamp on the RTP clock."""

    payloads: tuple[bytes, ...]
    timestamp: int  # before the stream's random origin is added
    keyframe: bool


def packetize(packet: av.Packet, video: bool) -> RtpFrame:
    """The payloads aiortc's codec would make of `packet` (H.264 FU-A/STAP-A, or one Opus)."""
    pts = packet.pts or 0
    if video:
        payloads = H264Encoder._packetize(H264Encoder._split_bitstream(bytes(packet)))
        timestamp = convert_timebase(pts, packet.time_base, VIDEO_CLOCK)
    else:
        payloads = [bytes(packet)]
        timestamp = convert_timebase(pts, packet.time_base, AUDIO_CLOCK)
    return RtpFrame(tuple(payloads), timestamp, bool(packet.is_keyframe))


class Packetizer:
    """`packetize`, remembered for the last packet: `Fanout.publish` hands one packet to every
    viewer in turn, on one thread, so every viewer after the first finds it ready."""

    def __init__(self) -> None:
        self._last: tuple[av.Packet, RtpFrame] | None = None
        self.packetized = 0  # packets split (not counting the ones found ready)

    def __call__(self, packet: av.Packet, video: bool) -> RtpFrame:
        last = self._last
        if last is not None and last[0] is packet:
            return last[1]
        frame = packetize(packet, video)
        self._last = (packet, frame)  # holding the packet keeps its identity unique
        self.packetized += 1
        return frame


SHARED_PACKETIZER = Packetizer()


class IdleTrack(MediaStreamTrack):
    """The track of a sender whose packets go out through an `RtpStream`: aiortc's sender task
    waits on it, without waking, until it ends."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._ended = asyncio.Event()

    async def recv(self) -> av.Packet:
        await self._ended.wait()
        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        self._ended.set()


class RtpStream:
    """One viewer's RTP stream of one encoding (a receiver of its `Fanout`).

    Made paused, before the peer connection has a sender; `attach` gives it the sender (before
    the offer is answered), `resume` starts it once the connection is up: video from the next
    keyframe. Packets that come while paused, closed or before the connection is up are not sent.
    """

    def __init__(self, *, video: bool, packetizer: Packetizer = SHARED_PACKETIZER) -> None:
        self.video = video
        self.packetizer = packetizer
        self.paused = True
        self.closed = False
        self.sequence = random_sequence_number()
        self.timestamp_origin = random32()
        self.packets_sent = 0
        self.octets_sent = 0  # payload bytes, as aiortc counts them
        self.retransmitted = 0
        self.failures = 0
        self.sender: RTCRtpSender | None = None
        self._await_keyframe = video
        self._payload_type: int | None = None
        self._rtx_payload_type: int | None = None
        self._rtx_sequence = random_sequence_number()
        self._mid: str | None = None
        self._extensions = HeaderExtensionsMap()
        self._history: dict[int, bytes] = {}  # sequence % RTP_HISTORY_SIZE -> clear packet

    @property
    def waiting_for_keyframe(self) -> bool:
        return self._await_keyframe

    def attach(self, sender: RTCRtpSender) -> None:
        """Send as `sender` (its SSRC, its negotiated parameters, its transport)."""
        self.sender = sender
        start = sender.send

        async def send(parameters: RTCRtpSendParameters) -> None:
            self.configure(parameters)
            await start(parameters)

        # The peer connection calls `send` with what the offer and answer agreed on; a NACK
        # asks `_retransmit`, which would look in the history of packets aiortc never sent.
        sender.send = send  # type: ignore[method-assign]
        sender._retransmit = self.retransmit  # type: ignore[method-assign]

    def configure(self, parameters: RTCRtpSendParameters) -> None:
        """The payload types, MID and header extension ids agreed for this sender."""
        codec = parameters.codecs[0]
        self._payload_type = codec.payloadType
        for other in parameters.codecs:
            if is_rtx(other) and other.parameters.get("apt") == codec.payloadType:
                self._rtx_payload_type = other.payloadType
                break
        self._mid = parameters.muxId
        self._extensions.configure(parameters)

    def resume(self) -> None:
        """Start sending (video: from the next keyframe)."""
        self.paused = False
        self._await_keyframe = self.video

    def close(self) -> None:
        self.closed = True

    def put(self, packet: av.Packet) -> None:
        """Send `packet` to this viewer now (a `Fanout` receiver)."""
        if self.closed or self.paused or self._payload_type is None:
            return
        if self._await_keyframe:
            if not packet.is_keyframe:
                return
            self._await_keyframe = False
        try:
            self.send(self.packetizer(packet, self.video))
        except Exception as exc:  # this viewer's transport: the next viewer's send must go on
            self.failures += 1
            if self.failures == 1:
                log.warning("rtp_send_failed", error=repr(exc))

    def send(self, frame: RtpFrame) -> None:
        """Each payload of `frame` as one RTP packet: header, SRTP, the ICE pair's socket."""
        sender, payload_type = self.sender, self._payload_type
        if sender is None or payload_type is None:
            return
        dtls = sender.transport
        srtp = dtls._tx_srtp
        pair = dtls.transport._connection._nominated.get(1)
        if dtls.state != "connected" or srtp is None or pair is None or pair.protocol is None:
            return
        datagrams = pair.protocol.transport
        if datagrams is None or datagrams.is_closing():
            return
        ntp = current_ntp_time()
        # The same extensions aiortc's sender writes: its MID and the send time.
        profile, extension = self._extensions.set(
            _extensions(self._mid, (ntp >> 14) & ABS_SEND_TIME_MASK)
        )
        first = RTP_VERSION_BITS
        extension_header = b""
        if extension:
            first |= EXTENSION_BIT
            extension_header = pack("!HH", profile, len(extension) >> 2) + extension
        timestamp = (self.timestamp_origin + frame.timestamp) & 0xFFFFFFFF
        ssrc, address = sender._ssrc, pair.remote_addr
        history, sequence = self._history, self.sequence
        last = len(frame.payloads) - 1
        octets = 0
        for index, payload in enumerate(frame.payloads):
            marker = MARKER_BIT if index == last else 0
            data = (
                pack("!BBHLL", first, marker | payload_type, sequence, timestamp, ssrc)
                + extension_header
                + payload
            )
            history[sequence % RTP_HISTORY_SIZE] = data
            datagrams.sendto(srtp.protect(data), address)
            sequence = (sequence + 1) & 0xFFFF
            octets += len(payload)
        self.sequence = sequence
        self.packets_sent += len(frame.payloads)
        self.octets_sent += octets
        _report_counts(sender, self.packets_sent, self.octets_sent, ntp, timestamp)

    async def retransmit(self, sequence_number: int) -> None:
        """Send a packet again that a NACK reported lost (as RTX when negotiated)."""
        sender = self.sender
        data = self._history.get(sequence_number % RTP_HISTORY_SIZE)
        if sender is None or data is None:
            return
        packet = RtpPacket.parse(data, self._extensions)
        if packet.sequence_number != sequence_number:
            return  # overwritten since by a newer packet
        if self._rtx_payload_type is not None:
            packet = wrap_rtx(
                packet,
                payload_type=self._rtx_payload_type,
                sequence_number=self._rtx_sequence,
                ssrc=sender._rtx_ssrc,
            )
            self._rtx_sequence = (self._rtx_sequence + 1) & 0xFFFF
        self.retransmitted += 1
        await sender.transport._send_rtp(packet.serialize(self._extensions))


def _extensions(mid: str | None, abs_send_time: int) -> HeaderExtensions:
    values = HeaderExtensions()
    values.mid = mid
    values.abs_send_time = abs_send_time
    return values


def _report_counts(
    sender: RTCRtpSender, packets: int, octets: int, ntp_time: int, rtp_timestamp: int
) -> None:
    """What aiortc's sender reads for its sender reports and `getStats()` (outbound-rtp)."""
    sender._RTCRtpSender__packet_count = packets  # type: ignore[attr-defined]
    sender._RTCRtpSender__octet_count = octets  # type: ignore[attr-defined]
    sender._RTCRtpSender__ntp_timestamp = ntp_time  # type: ignore[attr-defined]
    sender._RTCRtpSender__rtp_timestamp = rtp_timestamp  # type: ignore[attr-defined]
