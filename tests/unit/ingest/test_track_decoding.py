"""WHIP tracks' decoding (services/ingest/track_decoding.py): aiortc's own receiver, fed RTP
directly, counts what fails to decode and hands every decoded frame on in order: pictures from
a decoder thread, sound decoded on the event loop."""

from __future__ import annotations

import asyncio
import fractions
import os
import threading
import time

import aiortc.rtcrtpreceiver
import av
import numpy as np
import pytest
import structlog
import structlog.testing
from aiortc import (
    RTCCertificate,
    RTCDtlsTransport,
    RTCIceGatherer,
    RTCIceTransport,
    RTCRtpReceiver,
)
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpReceiveParameters,
)
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from aiortc.rtp import RtpPacket

from services.ingest import track_decoding
from services.ingest.webrtc_source import shorten_audio_prefetch

PAYLOAD_TYPE = 97
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90_000, payloadType=PAYLOAD_TYPE)
OPUS = RTCRtpCodecParameters(
    mimeType="audio/opus", clockRate=48_000, channels=2, payloadType=PAYLOAD_TYPE
)
OPUS_FRAME = 960  # 20 ms at 48 kHz
SSRC = 1234
RTP_TIME_BASE = fractions.Fraction(1, 90_000)


def vp8_pictures(count: int) -> list[bytes]:
    """`count` small VP8 pictures: a keyframe, then inter frames."""
    codec = av.CodecContext.create("libvpx", "w")
    assert isinstance(codec, av.VideoCodecContext)
    codec.width, codec.height, codec.pix_fmt = 64, 48, "yuv420p"
    codec.time_base = fractions.Fraction(1, 25)
    codec.gop_size = 100
    out: list[bytes] = []
    for n in range(count):
        frame = av.VideoFrame(64, 48, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([n * 7 % 255]) * plane.buffer_size)
        frame.pts = n
        out.extend(bytes(p) for p in codec.encode(frame))
    out.extend(bytes(p) for p in codec.encode(None))
    return out


class Receiving:
    """An aiortc receiver of `kind` with its remote track, as a peer connection sets it up."""

    def __init__(self, kind: str = "video") -> None:
        transport = RTCDtlsTransport(
            RTCIceTransport(RTCIceGatherer()), [RTCCertificate.generateCertificate()]
        )
        self.kind = kind
        self.receiver = RTCRtpReceiver(kind, transport)
        self.track = RemoteStreamTrack(kind=kind)
        self.receiver._track = self.track
        if kind == "audio":
            shorten_audio_prefetch(self.receiver)  # as ingest does
        self._sequence = 0

    async def start(self) -> None:
        # aiortc starts the decoder thread here, as it does once a connection is up.
        codec = VP8 if self.kind == "video" else OPUS
        await self.receiver.receive(
            RTCRtpReceiveParameters(
                codecs=[codec],
                encodings=[RTCRtpDecodingParameters(ssrc=SSRC, payloadType=PAYLOAD_TYPE)],
            )
        )

    async def send(self, pictures: list[bytes], first: int = 0) -> None:
        """Packetize like a sender and hand each RTP packet to the receiver (`first`: the
        number of the first picture)."""
        packer = Vp8Encoder()
        for n, picture in enumerate(pictures, first):
            packet = av.Packet(picture)
            packet.pts, packet.time_base = n * 3600, RTP_TIME_BASE
            payloads, timestamp = packer.pack(packet)
            for i, payload in enumerate(payloads):
                await self._receive(payload, timestamp, marker=i == len(payloads) - 1)

    async def send_sound(self, packets: list[bytes], first: int = 0) -> None:
        """One RTP packet a 20 ms Opus packet, as a sender sends them."""
        for n, payload in enumerate(packets, first):
            await self._receive(payload, n * OPUS_FRAME, marker=n == 0)

    async def _receive(self, payload: bytes, timestamp: int, marker: bool) -> None:
        rtp = RtpPacket(
            payload_type=PAYLOAD_TYPE,
            sequence_number=self._sequence,
            timestamp=timestamp,
            ssrc=SSRC,
            marker=int(marker),
            payload=payload,
        )
        self._sequence += 1
        await self.receiver._handle_rtp_packet(rtp, arrival_time_ms=int(time.time() * 1e3))

    async def decoded(self, at_least: int) -> int:
        for _ in range(100):
            if self.track._queue.qsize() >= at_least:
                break
            await asyncio.sleep(0.02)
        return self.track._queue.qsize()

    async def stop(self) -> None:
        await self.receiver.stop()  # ends and joins the decoder thread


def opus_packets(count: int) -> list[bytes]:
    """`count` 20 ms Opus packets of a 440 Hz tone (stereo, 48 kHz)."""
    codec = av.CodecContext.create("libopus", "w")
    assert isinstance(codec, av.AudioCodecContext)
    codec.sample_rate, codec.format, codec.layout = 48_000, "s16", "stereo"
    codec.bit_rate, codec.time_base = 64_000, fractions.Fraction(1, 48_000)
    t = np.arange(OPUS_FRAME * (count + 4)) / 48_000
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    out: list[bytes] = []
    for n in range(count + 4):
        samples = np.repeat(tone[n * OPUS_FRAME : (n + 1) * OPUS_FRAME], 2)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48_000, n * OPUS_FRAME
        out.extend(bytes(p) for p in codec.encode(frame))
    return out[:count]


def truncated(pictures: list[bytes], which: set[int]) -> list[bytes]:
    return [p[: len(p) // 3] if n in which else p for n, p in enumerate(pictures)]


async def test_a_watched_track_counts_each_payload_that_fails_to_decode() -> None:
    pictures = vp8_pictures(10)
    receiving = Receiving()
    counter = track_decoding.DecodeErrorCounter()
    track_decoding.watch(receiving.receiver, counter)
    keyframe_requests = []

    async def pli(media_ssrc: int) -> None:
        keyframe_requests.append(media_ssrc)

    receiving.receiver._send_rtcp_pli = pli  # type: ignore[method-assign]
    await receiving.start()
    await receiving.send(truncated(pictures, {4, 6}))
    # The jitter buffer hands a picture on when the next one starts: 9 complete, 2 fail.
    decoded = await receiving.decoded(7)
    failure_pending = receiving.receiver._RTCRtpReceiver__decoder_error.is_set()  # type: ignore[attr-defined]
    await receiving.stop()
    assert counter.count == 2
    assert decoded == 7  # the others are still decoded
    # Each failure is reported to the receiver, which asks the sender for a keyframe with the
    # next packet (one request may answer both; a failure after the last packet is still pending).
    assert keyframe_requests or failure_pending
    assert set(keyframe_requests) <= {SSRC}


async def test_an_unwatched_track_gets_aiortcs_decoder_and_counts_nowhere() -> None:
    pictures = vp8_pictures(10)
    watched, unwatched = Receiving(), Receiving()
    counter = track_decoding.DecodeErrorCounter()
    track_decoding.watch(watched.receiver, counter)
    await watched.start()
    await unwatched.start()
    await unwatched.send(truncated(pictures, {3, 5, 7}))
    await watched.send(pictures)
    decoded = await unwatched.decoded(6), await watched.decoded(9)
    await unwatched.stop()
    await watched.stop()
    assert decoded == (6, 9)
    assert counter.count == 0


async def test_a_watched_track_gets_every_frame_in_order_then_its_end() -> None:
    pictures = vp8_pictures(12)
    receiving = Receiving()
    track_decoding.watch(receiving.receiver, track_decoding.DecodeErrorCounter())
    await receiving.start()
    await receiving.send(pictures)
    assert await receiving.decoded(11) == 11  # the last waits for a next picture to start
    await receiving.stop()
    frames = [await asyncio.wait_for(receiving.track._queue.get(), 5) for _ in range(12)]
    assert [f.pts for f in frames[:11]] == [n * 3600 for n in range(11)]
    assert frames[11] is None  # the track ends when the receiver stops


def test_a_picture_decoder_decodes_in_its_tracks_thread_alone() -> None:
    codec = av.CodecContext.create("libx264", "w")
    assert isinstance(codec, av.VideoCodecContext)
    codec.width, codec.height, codec.pix_fmt = 320, 180, "yuv420p"
    codec.time_base = fractions.Fraction(1, 25)
    codec.options = {"tune": "zerolatency", "preset": "veryfast", "threads": "3"}  # 3 slices
    units: list[bytes] = []
    for n in range(5):
        frame = av.VideoFrame.from_ndarray(np.full((270, 320), 40 * n, np.uint8), "yuv420p")
        frame.pts = n
        units.extend(bytes(p) for p in codec.encode(frame))
    h264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90_000, payloadType=102)
    threads = len(os.listdir("/proc/self/task"))
    decoder = track_decoding.open_decoder(h264)
    pictures = [p for n, u in enumerate(units) for p in decoder.decode(JitterFrame(u, n * 3600))]
    # FFmpeg's automatic threads would have started (cores + 1) slice threads for this decoder
    assert len(os.listdir("/proc/self/task")) == threads
    assert [int(p.to_ndarray()[90, 160]) for p in pictures] == [0, 40, 80, 120, 160]


async def test_a_started_delivery_hands_pictures_to_the_sink_and_the_end_to_the_track() -> None:
    pictures = vp8_pictures(12)
    receiving = Receiving()
    delivery = track_decoding.watch(receiving.receiver, track_decoding.DecodeErrorCounter())
    await receiving.start()
    await receiving.send(pictures[:4])
    assert await receiving.decoded(3) == 3  # not started: into the track's queue
    sunk: list[av.VideoFrame] = []
    delivery.start(sunk.append)
    assert len(sunk) == 3 and receiving.track._queue.empty()
    await receiving.send(pictures[4:], first=4)
    for _ in range(100):
        if len(sunk) == 11:
            break
        await asyncio.sleep(0.02)
    await receiving.stop()
    assert [f.pts for f in sunk] == [n * 3600 for n in range(11)]
    assert await asyncio.wait_for(receiving.track._queue.get(), 5) is None
    assert receiving.track._queue.empty()


async def test_sound_is_decoded_on_the_loop_as_each_packet_completes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As in a process whose first watched track is a voice (a talk source): aiortc's own worker
    # would fail on the loop decoder in the track's thread.
    monkeypatch.setattr(
        aiortc.rtcrtpreceiver, "decoder_worker", track_decoding._original_decoder_worker
    )
    receiving = Receiving("audio")
    delivery = track_decoding.watch(receiving.receiver, track_decoding.DecodeErrorCounter())
    threads: list[threading.Thread] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: threads.append(args.thread))
    await receiving.start()
    sunk: list[av.AudioFrame] = []
    delivery.start(sunk.append)
    packets = opus_packets(25)
    for n, packet in enumerate(packets):
        await receiving.send_sound([packet], first=n)
        # No thread in between: the packet before this one is decoded by the time it returns.
        assert len(sunk) == n
    await receiving.stop()
    assert threads == []  # the track's thread ended without an error
    assert [f.pts for f in sunk] == [n * OPUS_FRAME for n in range(24)]
    assert all(f.samples == OPUS_FRAME and f.format.name == "s16" for f in sunk)
    assert max(abs(int(v)) for v in sunk[-1].to_ndarray()[0]) > 4000  # the tone, decoded
    assert await asyncio.wait_for(receiving.track._queue.get(), 1) is None  # then the end


async def test_sound_that_fails_to_decode_is_counted_and_the_rest_still_flows() -> None:
    receiving = Receiving("audio")
    counter = track_decoding.DecodeErrorCounter()
    delivery = track_decoding.watch(receiving.receiver, counter)
    await receiving.start()
    sunk: list[av.AudioFrame] = []
    delivery.start(sunk.append)
    packets = opus_packets(12)
    # An Opus packet of code 3 (an arbitrary number of frames) that declares none: invalid.
    packets[5] = bytes([packets[5][0] | 0x03, 0x00])
    await receiving.send_sound(packets[:7])  # the 7th completes the 6th, which fails
    error_reported = receiving.receiver._RTCRtpReceiver__decoder_error.is_set()  # type: ignore[attr-defined]
    await receiving.send_sound(packets[7:], first=7)
    await receiving.stop()
    assert counter.count == 1
    assert error_reported  # the receiver hears of it, as from aiortc's decoder thread
    assert len(sunk) == 10  # the last packet waits for a next one


async def test_a_sink_that_raises_does_not_reach_the_receive_path() -> None:
    receiving = Receiving("audio")
    delivery = track_decoding.watch(receiving.receiver, track_decoding.DecodeErrorCounter())
    await receiving.start()
    calls: list[int | None] = []

    def broken(frame: av.AudioFrame) -> None:
        calls.append(frame.pts)
        raise ValueError("broken sink")

    delivery.start(broken)
    with structlog.testing.capture_logs() as logs:
        await receiving.send_sound(opus_packets(6))  # would raise out of aiortc's receive path
    await receiving.stop()
    assert calls == [n * OPUS_FRAME for n in range(5)]
    assert [e["event"] for e in logs] == ["frame_delivery_failed"]  # the first one, logged
