"""The aiortc decoder hook: aiortc's own receiver, fed RTP directly, counts what fails to decode
and hands every decoded frame to the track in order."""

from __future__ import annotations

import asyncio
import fractions
import gc
import time

import av
from aiortc import (
    RTCCertificate,
    RTCDtlsTransport,
    RTCIceGatherer,
    RTCIceTransport,
    RTCRtpReceiver,
)
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpReceiveParameters,
)
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from aiortc.rtp import RtpPacket

from services.ingest import decode_errors

PAYLOAD_TYPE = 97
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90_000, payloadType=PAYLOAD_TYPE)
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
    """An aiortc video receiver with its remote track, as a peer connection sets it up."""

    def __init__(self) -> None:
        transport = RTCDtlsTransport(
            RTCIceTransport(RTCIceGatherer()), [RTCCertificate.generateCertificate()]
        )
        self.receiver = RTCRtpReceiver("video", transport)
        self.track = RemoteStreamTrack(kind="video")
        self.receiver._track = self.track
        self._sequence = 0

    async def start(self) -> None:
        # aiortc starts the decoder thread here, as it does once a connection is up.
        await self.receiver.receive(
            RTCRtpReceiveParameters(
                codecs=[VP8],
                encodings=[RTCRtpDecodingParameters(ssrc=SSRC, payloadType=PAYLOAD_TYPE)],
            )
        )

    async def send(self, pictures: list[bytes]) -> None:
        """Packetize like a sender and hand each RTP packet to the receiver."""
        packer = Vp8Encoder()
        for n, picture in enumerate(pictures):
            packet = av.Packet(picture)
            packet.pts, packet.time_base = n * 3600, RTP_TIME_BASE
            payloads, timestamp = packer.pack(packet)
            for i, payload in enumerate(payloads):
                rtp = RtpPacket(
                    payload_type=PAYLOAD_TYPE,
                    sequence_number=self._sequence,
                    timestamp=timestamp,
                    ssrc=SSRC,
                    marker=int(i == len(payloads) - 1),
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


def truncated(pictures: list[bytes], which: set[int]) -> list[bytes]:
    return [p[: len(p) // 3] if n in which else p for n, p in enumerate(pictures)]


async def test_a_watched_track_counts_each_payload_that_fails_to_decode() -> None:
    pictures = vp8_pictures(10)
    receiving = Receiving()
    counter = decode_errors.DecodeErrorCounter()
    decode_errors.watch(receiving.track, counter)
    keyframe_requests = []

    async def pli(ssrc: int) -> None:
        keyframe_requests.append(ssrc)

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
    counter = decode_errors.DecodeErrorCounter()
    decode_errors.watch(watched.track, counter)
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
    decode_errors.watch(receiving.track, decode_errors.DecodeErrorCounter())
    await receiving.start()
    await receiving.send(pictures)
    assert await receiving.decoded(11) == 11  # the last waits for a next picture to start
    await receiving.stop()
    frames = [await asyncio.wait_for(receiving.track._queue.get(), 5) for _ in range(12)]
    assert [f.pts for f in frames[:11]] == [n * 3600 for n in range(11)]
    assert frames[11] is None  # the track ends when the receiver stops


def test_a_watched_track_is_forgotten_with_it() -> None:
    gc.collect()  # tracks of earlier tests in this process go first, not during the count
    before = len(decode_errors._watched)
    track = RemoteStreamTrack(kind="video")
    decode_errors.watch(track, decode_errors.DecodeErrorCounter())
    assert len(decode_errors._watched) == before + 1
    del track
    gc.collect()
    assert len(decode_errors._watched) == before
