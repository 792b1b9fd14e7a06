"""A viewer's RTP stream of a shared encoding: the payloads are aiortc's, packetized once for all
viewers; each viewer's packets carry its own SSRC, continuous sequence numbers and timestamps;
a new viewer starts on a keyframe; a NACK is answered as RTX. Real x264 and Opus packets; the
sender, SRTP and ICE pair are stand-ins that record what would go on the wire."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpSendParameters,
)
from aiortc.rtp import HeaderExtensions, HeaderExtensionsMap, RtpPacket

from services.distribution.packet_fanout import Fanout
from services.distribution.rtp_stream import (
    IdleTrack,
    Packetizer,
    RtpStream,
    packetize,
)

H264_PT, RTX_PT, OPUS_PT = 102, 103, 111
MID_ID, ABS_SEND_TIME_ID = 1, 3
VIDEO_TIME_BASE = Fraction(1, 90_000)
WIDTH, HEIGHT = 640, 360


def h264_packets(count: int, keyframes: tuple[int, ...] = (0,)) -> list[av.Packet]:
    """`count` pictures of noise from x264 (big enough for FU-A), keyframes where asked."""
    codec = av.CodecContext.create("libx264", "w")
    assert isinstance(codec, av.VideoCodecContext)
    codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    codec.time_base = VIDEO_TIME_BASE
    codec.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "profile": "baseline",
        "qp": "24",
    }
    codec.options |= {"g": "1000", "keyint_min": "1000", "sc_threshold": "0", "forced-idr": "1"}
    rng = np.random.default_rng(7)
    out: list[av.Packet] = []
    for n in range(count):
        image = rng.integers(0, 255, (HEIGHT * 3 // 2, WIDTH), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts, frame.time_base = n * 3600, VIDEO_TIME_BASE
        if n in keyframes:
            frame.pict_type = av.video.frame.PictureType.I
        for packet in codec.encode(frame):
            packet.time_base = VIDEO_TIME_BASE
            out.append(packet)
    return out


def opus_packets(count: int) -> list[av.Packet]:
    codec = av.CodecContext.create("libopus", "w")
    assert isinstance(codec, av.AudioCodecContext)
    codec.sample_rate, codec.layout, codec.format = 48_000, "mono", "s16"
    codec.time_base = Fraction(1, 48_000)
    codec.bit_rate = 64_000
    codec.options = {"application": "lowdelay", "frame_duration": "40"}
    out: list[av.Packet] = []
    t = np.arange(1920 * (count + 2)) / 48_000
    tone = (3000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    for n in range(count + 2):
        frame = av.AudioFrame.from_ndarray(
            tone[n * 1920 : (n + 1) * 1920].reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts, frame.time_base = 48_000, n * 1920, Fraction(1, 48_000)
        for packet in codec.encode(frame):
            packet.time_base = Fraction(1, 48_000)
            out.append(packet)
    return out[:count]


class Wire:
    """A stand-in for aiortc's sender, its DTLS transport (SRTP: identity) and its ICE pair."""

    def __init__(self, ssrc: int) -> None:
        self.datagrams: list[bytes] = []
        self.rtp_sent: list[bytes] = []  # through the DTLS transport (retransmissions)
        socket = SimpleNamespace(sendto=self._sendto, is_closing=lambda: False)
        pair = SimpleNamespace(protocol=SimpleNamespace(transport=socket), remote_addr=("x", 1))
        connection = SimpleNamespace(_nominated={1: pair})
        self.dtls = SimpleNamespace(
            state="connected",
            _tx_srtp=SimpleNamespace(protect=lambda data: data),
            transport=SimpleNamespace(_connection=connection),
            _send_rtp=self._send_rtp,
        )
        self.started_with: RTCRtpSendParameters | None = None
        self.sender: Any = SimpleNamespace(
            _ssrc=ssrc, _rtx_ssrc=ssrc + 1, transport=self.dtls, send=self._send
        )

    def _sendto(self, data: bytes, _address: object) -> None:
        self.datagrams.append(data)

    async def _send_rtp(self, data: bytes) -> None:
        self.rtp_sent.append(data)

    async def _send(self, parameters: RTCRtpSendParameters) -> None:
        self.started_with = parameters


def parameters(video: bool) -> RTCRtpSendParameters:
    if video:
        codecs = [
            RTCRtpCodecParameters(
                mimeType="video/H264",
                clockRate=90_000,
                payloadType=H264_PT,
                parameters={"packetization-mode": "1", "profile-level-id": "42e01f"},
            ),
            RTCRtpCodecParameters(
                mimeType="video/rtx",
                clockRate=90_000,
                payloadType=RTX_PT,
                parameters={"apt": H264_PT},
            ),
        ]
    else:
        codecs = [
            RTCRtpCodecParameters(
                mimeType="audio/opus", clockRate=48_000, channels=2, payloadType=OPUS_PT
            )
        ]
    return RTCRtpSendParameters(
        codecs=codecs,
        headerExtensions=[
            RTCRtpHeaderExtensionParameters(id=MID_ID, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
            RTCRtpHeaderExtensionParameters(
                id=ABS_SEND_TIME_ID,
                uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
            ),
        ],
        muxId="0" if video else "1",
    )


def connected(
    ssrc: int, *, video: bool, packetizer: Packetizer | None = None
) -> tuple[RtpStream, Wire]:
    stream = RtpStream(video=video, packetizer=packetizer or Packetizer())
    wire = Wire(ssrc)
    stream.attach(wire.sender)
    asyncio.run(wire.sender.send(parameters(video)))  # what the peer connection does
    assert wire.started_with is not None  # aiortc's own `send` still runs
    return stream, wire


def extensions_map(video: bool) -> HeaderExtensionsMap:
    extensions = HeaderExtensionsMap()
    extensions.configure(parameters(video))
    return extensions


def parsed(wire: Wire, video: bool = True) -> list[RtpPacket]:
    extensions = extensions_map(video)
    return [RtpPacket.parse(d, extensions) for d in wire.datagrams]


def test_payloads_are_exactly_what_aiortc_makes_of_the_packet() -> None:
    video = h264_packets(3)
    assert video[0].is_keyframe and not video[1].is_keyframe
    for packet in video:
        ours = packetize(packet, video=True)
        payloads, timestamp = H264Encoder().pack(packet)
        assert list(ours.payloads) == payloads and ours.timestamp == timestamp
        assert ours.keyframe == packet.is_keyframe
    assert len(packetize(video[0], video=True).payloads) > 3  # a keyframe spans FU-A fragments
    for packet in opus_packets(3):
        ours = packetize(packet, video=False)
        payloads, timestamp = OpusEncoder().pack(packet)
        assert list(ours.payloads) == payloads and ours.timestamp == timestamp


def test_a_packet_is_packetized_once_for_every_viewer() -> None:
    packetizer = Packetizer()
    fanout = Fanout()
    wires = []
    for ssrc in (1000, 2000, 3000):
        stream, wire = connected(ssrc, video=True, packetizer=packetizer)
        stream.resume()
        fanout.add(stream)
        wires.append(wire)
    packets = h264_packets(4)
    for packet in packets:
        fanout.publish(packet)
    assert packetizer.packetized == len(packets)
    expected = [p for packet in packets for p in packetize(packet, video=True).payloads]
    for wire in wires:
        assert [p.payload for p in parsed(wire)] == expected


def test_each_viewer_has_its_ssrc_and_continuous_sequence_numbers_and_timestamps() -> None:
    packets = h264_packets(5)
    streams = [connected(ssrc, video=True) for ssrc in (0x1234, 0xBEEF)]
    for stream, _wire in streams:
        stream.resume()
    for packet in packets:
        for stream, _wire in streams:
            stream.put(packet)
    origins = []
    for stream, wire in streams:
        sent = parsed(wire)
        counts = [len(packetize(p, video=True).payloads) for p in packets]
        assert len(sent) == sum(counts) == stream.packets_sent
        assert {p.ssrc for p in sent} == {wire.sender._ssrc}
        assert {p.payload_type for p in sent} == {H264_PT}
        first = sent[0].sequence_number
        assert [p.sequence_number for p in sent] == [(first + i) & 0xFFFF for i in range(len(sent))]
        # One timestamp per picture, 3600 ticks (40 ms) apart; the marker on its last packet.
        at = 0
        for n, count in enumerate(counts):
            picture = sent[at : at + count]
            assert {p.timestamp for p in picture} == {
                (stream.timestamp_origin + n * 3600) & 0xFFFFFFFF
            }
            assert [p.marker for p in picture] == [0] * (count - 1) + [1]
            at += count
        assert {p.extensions.mid for p in sent} == {"0"}
        assert all(p.extensions.abs_send_time is not None for p in sent)
        origins.append((first, stream.timestamp_origin))
        # What aiortc's sender reports in its sender reports and getStats().
        assert wire.sender._RTCRtpSender__packet_count == len(sent)
        assert wire.sender._RTCRtpSender__octet_count == sum(len(p.payload) for p in sent)
        assert wire.sender._RTCRtpSender__rtp_timestamp == sent[-1].timestamp
    assert origins[0] != origins[1]  # each viewer starts its own


def test_the_header_is_aiortcs_serialization() -> None:
    stream, wire = connected(0xCAFE, video=False)
    stream.resume()
    packet = opus_packets(1)[0]
    stream.put(packet)
    (datagram,) = wire.datagrams
    sent = RtpPacket.parse(datagram, extensions_map(False))
    again = RtpPacket(
        payload_type=OPUS_PT,
        marker=1,
        sequence_number=sent.sequence_number,
        timestamp=sent.timestamp,
        ssrc=0xCAFE,
        payload=bytes(packet),
    )
    again.extensions = HeaderExtensions()
    again.extensions.mid = "1"
    again.extensions.abs_send_time = sent.extensions.abs_send_time
    assert again.serialize(extensions_map(False)) == datagram


def test_a_new_viewer_starts_on_a_keyframe_and_sends_nothing_while_paused() -> None:
    packets = h264_packets(6, keyframes=(0, 3))
    assert [p.is_keyframe for p in packets] == [True, False, False, True, False, False]
    stream, wire = connected(0x42, video=True)
    stream.put(packets[0])  # paused: the connection is not up
    assert wire.datagrams == []
    stream.resume()
    assert stream.waiting_for_keyframe
    for packet in packets[1:]:
        stream.put(packet)
    sent = parsed(wire)
    key = packetize(packets[3], video=True)
    assert sent[0].payload == key.payloads[0]
    assert {p.timestamp - stream.timestamp_origin for p in sent} == {3 * 3600, 4 * 3600, 5 * 3600}
    # Sound starts at once.
    audio, audio_wire = connected(0x43, video=False)
    audio.resume()
    audio.put(opus_packets(1)[0])
    assert len(audio_wire.datagrams) == 1


def test_nothing_goes_out_before_the_connection_is_up_or_after_close() -> None:
    stream, wire = connected(0x51, video=False)
    stream.resume()
    wire.dtls.state = "connecting"
    packet = opus_packets(1)[0]
    stream.put(packet)
    wire.dtls.state = "connected"
    stream.close()
    stream.put(packet)
    assert wire.datagrams == [] and stream.packets_sent == 0


def test_a_nack_is_answered_as_rtx_from_the_history() -> None:
    stream, wire = connected(0x77, video=True)
    stream.resume()
    stream.put(h264_packets(1)[0])
    sent = parsed(wire)
    lost = sent[-3]  # the history keeps the newest 128
    asyncio.run(wire.sender._retransmit(lost.sequence_number))
    asyncio.run(wire.sender._retransmit((sent[-1].sequence_number + 500) & 0xFFFF))  # never sent
    (rtx_bytes,) = wire.rtp_sent
    rtx = RtpPacket.parse(rtx_bytes, extensions_map(True))
    assert rtx.payload_type == RTX_PT and rtx.ssrc == 0x77 + 1
    # RFC 4588: the original sequence number, then the original payload.
    assert rtx.payload[:2] == lost.sequence_number.to_bytes(2, "big")
    assert rtx.payload[2:] == lost.payload
    assert rtx.timestamp == lost.timestamp and stream.retransmitted == 1


@pytest.mark.asyncio
async def test_an_idle_track_waits_until_it_ends() -> None:
    track = IdleTrack("video")
    waiting = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    track.stop()
    with pytest.raises(Exception) as info:
        await asyncio.wait_for(waiting, 1.0)
    assert type(info.value).__name__ == "MediaStreamError"


def test_a_broken_viewer_does_not_stop_the_others() -> None:
    fanout = Fanout()
    broken, broken_wire = connected(0x61, video=False)
    healthy, healthy_wire = connected(0x62, video=False)
    for stream in (broken, healthy):
        stream.resume()
        fanout.add(stream)

    def refuse(_data: bytes) -> bytes:
        raise RuntimeError("srtp_protect failed")

    broken_wire.dtls._tx_srtp.protect = refuse
    for packet in opus_packets(3):
        fanout.publish(packet)
    assert broken.failures == 3 and broken_wire.datagrams == []
    assert len(healthy_wire.datagrams) == 3 and healthy.packets_sent == 3
