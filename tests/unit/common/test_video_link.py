"""Compressed video between hosts: what the encoder sends and the decoder makes of it."""

from __future__ import annotations

import queue

import av
import numpy as np
import pytest

from services.common.gen.baycast.v1 import media_pb2
from services.common.media import decoded, proto_to_i420
from services.common.video_link import (
    LinkDecoder,
    LinkEncoder,
    compression_problem,
    link_kbps,
)

W, H, FPS = 320, 240, 25


def _picture(n: int, width: int = W, height: int = H) -> np.ndarray:
    """Frame n: a luma level that steps with n, a moving bar and grain; neutral chroma."""
    rng = np.random.default_rng(n)
    image = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
    luma = image[:height]
    luma[:] = 40 + (n * 7) % 160
    bar = (n * 8) % (width - 16)
    luma[:, bar : bar + 16] = 235
    luma += rng.integers(0, 6, size=luma.shape, dtype=np.uint8)
    return image


class _Encoded:
    def __init__(self, kbps: int = 600, width: int = W, height: int = H) -> None:
        self.packets: queue.Queue[media_pb2.VideoPacket] = queue.Queue()
        self.encoder = LinkEncoder(width, height, FPS, kbps, self.packets.put, name="test")

    def send(self, n: int, picture: np.ndarray) -> media_pb2.VideoPacket:
        """One picture through the encoder, waited for (a picture's packet comes at once)."""
        self.encoder.submit(
            av.VideoFrame.from_ndarray(picture, format="yuv420p"),
            pts_us=n * 40_000,
            capture_time_us=1_000_000 + n,
        )
        packet = self.packets.get(timeout=10)
        packet.sequence = n
        return packet

    def close(self) -> None:
        self.encoder.close()
        self.encoder.join(10)


def test_pictures_cross_in_order_with_their_timestamps_and_keyframes_each_second() -> None:
    link, decoder = _Encoded(), LinkDecoder()
    sent = [_picture(n) for n in range(60)]
    try:
        packets = [link.send(n, picture) for n, picture in enumerate(sent)]
    finally:
        link.close()
    assert [n for n, p in enumerate(packets) if p.keyframe] == [0, 25, 50]
    assert all((p.width, p.height, p.codec) == (W, H, media_pb2.VIDEO_CODEC_H264) for p in packets)
    for n, packet in enumerate(packets):
        (message,) = decoded(decoder, packet)  # as the client makes them
        video = message.video
        assert (video.pts_us, video.capture_time_us, video.sequence) == (
            n * 40_000,
            1_000_000 + n,
            n,
        )
        image = proto_to_i420(video).astype(np.int16)
        error = np.abs(image - sent[n]).mean()
        assert error < 4, (n, error)  # the same picture, not a neighbour (levels step by 7)
    assert decoder.discarded == 0
    # The rate held: 60 pictures of grain in 2.4 s at 600 kbit/s, within 25 %.
    kbits = sum(len(p.data) for p in packets) * 8 / 1000
    assert kbits / 2.4 <= 600 * 1.25, kbits / 2.4


def test_a_subscriber_joining_gets_a_keyframe_at_the_next_picture() -> None:
    link = _Encoded()
    try:
        packets = [link.send(n, _picture(n)) for n in range(5)]
        link.encoder.keyframe()
        packets += [link.send(n, _picture(n)) for n in range(5, 8)]
    finally:
        link.close()
    assert [p.keyframe for p in packets] == [True, False, False, False, False, True, False, False]


def test_after_a_gap_nothing_is_decoded_until_the_next_keyframe() -> None:
    link, decoder = _Encoded(), LinkDecoder()
    try:
        packets = [link.send(n, _picture(n)) for n in range(30)]
    finally:
        link.close()
    pictures = []
    for packet in packets:
        if packet.sequence == 3:
            continue  # the subscriber's queue dropped it
        pictures += [m.video.sequence for m in decoded(decoder, packet)]
    # Packets 4-24 refer to the lost one: held back, not decoded into smeared pictures.
    assert pictures == [0, 1, 2, *range(25, 30)]
    assert decoder.discarded == 21


def test_a_damaged_packet_stops_decoding_until_a_keyframe() -> None:
    link, decoder = _Encoded(), LinkDecoder()
    try:
        packets = [link.send(n, _picture(n)) for n in range(28)]
    finally:
        link.close()
    for packet in packets[:5]:
        assert len(decoder.decode(packet)) == 1
    broken = media_pb2.VideoPacket()
    broken.CopyFrom(packets[5])
    broken.codec = media_pb2.VIDEO_CODEC_UNSPECIFIED
    assert decoder.decode(broken) == []
    assert [len(decoder.decode(p)) for p in packets[6:]] == [0] * 19 + [1] * 3


def test_a_new_subscription_starts_at_its_first_keyframe() -> None:
    link, decoder = _Encoded(), LinkDecoder()
    try:
        packets = [link.send(n, _picture(n)) for n in range(27)]
    finally:
        link.close()
    assert len(decoder.decode(packets[0])) == 1
    decoder.reset()  # resubscribed: sequences start again, mid-GOP
    late = packets[10:]
    for n, packet in enumerate(late):
        packet.sequence = n
    assert [len(decoder.decode(p)) for p in late] == [0] * 15 + [1] * 2


@pytest.mark.parametrize(
    ("compression", "problem"),
    [
        (media_pb2.Compression(codec=media_pb2.VIDEO_CODEC_H264), ""),
        (media_pb2.Compression(codec=media_pb2.VIDEO_CODEC_H264, bitrate_kbps=8000), ""),
        (media_pb2.Compression(), "the only compression served is VIDEO_CODEC_H264"),
        (
            media_pb2.Compression(codec=media_pb2.VIDEO_CODEC_H264, bitrate_kbps=100),
            "bitrate_kbps must be between 300 and 50000",
        ),
    ],
)
def test_compression_requests_are_checked(compression: media_pb2.Compression, problem: str) -> None:
    assert compression_problem(compression) == problem


def test_the_default_rate_scales_with_the_picture() -> None:
    h264 = media_pb2.Compression(codec=media_pb2.VIDEO_CODEC_H264)
    assert link_kbps(h264, 1920, 1080) == 8000
    assert link_kbps(h264, 1280, 720) == 3556
    assert link_kbps(h264, 160, 90) == 300
    asked = media_pb2.Compression(codec=media_pb2.VIDEO_CODEC_H264, bitrate_kbps=5000)
    assert link_kbps(asked, 1920, 1080) == 5000
