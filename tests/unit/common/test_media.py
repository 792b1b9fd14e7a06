from __future__ import annotations

import asyncio
from fractions import Fraction

import av
import numpy as np

from services.common.gen.baycast.v1 import media_pb2
from services.common.media import (
    DropOldestQueue,
    av_to_proto,
    i420_planes,
    i420_to_proto,
    pcm_to_proto,
    proto_to_av,
    proto_to_av_audio,
    proto_to_i420,
    proto_to_pcm,
    pts_us,
    queue_stream,
)


def test_pts_in_microseconds_truncates_as_fraction_arithmetic_does() -> None:
    rng = np.random.default_rng(3)
    bases = [Fraction(1, 90000), Fraction(1, 48000), Fraction(1001, 30000), Fraction(1, 1000)]
    for base in bases:
        for pts in [0, 1, -1, 7, -7, *rng.integers(-(2**40), 2**40, 50).tolist()]:
            assert pts_us(pts, base) == int(pts * base * 1_000_000), (pts, base)
    assert pts_us(3, Fraction(1, 90000)) == 33  # 33.3 µs
    assert pts_us(-3, Fraction(1, 90000)) == -33


def test_i420_round_trip_keeps_every_pixel() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(360 * 3 // 2, 640), dtype=np.uint8)
    frame = i420_to_proto(image, pts_us=40_000, capture_time_us=123, sequence=9)
    assert (frame.width, frame.height, len(frame.planes)) == (640, 360, 3)
    assert np.array_equal(proto_to_i420(frame), image)
    assert (frame.pts_us, frame.capture_time_us, frame.sequence) == (40_000, 123, 9)


def test_pyav_frames_with_row_padding_convert_exactly() -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(180 * 3 // 2, 318), dtype=np.uint8)  # odd width pads rows
    av_frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
    proto = av_to_proto(av_frame, pts_us=0)
    assert proto.planes[0].stride >= 318
    assert np.array_equal(proto_to_i420(proto), image)
    back = proto_to_av(proto)
    assert np.array_equal(back.to_ndarray(), image)


def test_planes_are_views() -> None:
    image = np.zeros((12, 8), dtype=np.uint8)
    y, u, v = i420_planes(image)
    y[:] = 1
    u[:] = 2
    v[:] = 3
    assert y.shape == (8, 8) and u.shape == (4, 4) and v.shape == (4, 4)
    assert image.sum() == 64 * 1 + 16 * 2 + 16 * 3


def test_audio_round_trip() -> None:
    t = np.arange(960)
    tone = (np.sin(2 * np.pi * 1000 * t / 48_000) * 10_000).astype(np.int16)
    stereo = np.stack([tone, -tone], axis=1)
    frame = pcm_to_proto(stereo, 48_000, pts_us=20_000)
    assert (frame.samples, frame.channels) == (960, 2)
    assert np.array_equal(proto_to_pcm(frame), stereo)
    av_frame = proto_to_av_audio(frame)
    assert av_frame.samples == 960 and av_frame.sample_rate == 48_000
    assert np.array_equal(av_frame.to_ndarray().reshape(-1, 2), stereo)
    assert media_pb2.AudioFrame.FromString(frame.SerializeToString()) == frame


async def test_drop_oldest_queue_bounds_memory_and_counts() -> None:
    q: DropOldestQueue[int] = DropOldestQueue(3)
    for i in range(10):
        q.put(i)
    assert len(q) == 3 and q.dropped == 7
    assert [await q.get(), await q.get(), await q.get()] == [7, 8, 9]
    assert await q.get(timeout=0.01) is None
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.put(42)
    assert await waiter == 42
    q.close()
    assert await q.get() is None


async def test_queue_stream_sends_keepalives_when_quiet_and_ends_when_closed() -> None:
    q: DropOldestQueue[media_pb2.MediaFrame] = DropOldestQueue(4)
    stream = queue_stream(q, keepalive_s=0.05)
    quiet = await anext(stream)
    assert quiet.WhichOneof("body") == "keepalive" and quiet.keepalive.dropped == 0
    for seq in range(6):
        q.put(media_pb2.MediaFrame(audio=media_pb2.AudioFrame(sequence=seq)))
    got = [(await anext(stream)).audio.sequence for _ in range(4)]
    assert got == [2, 3, 4, 5]
    assert (await anext(stream)).keepalive.dropped == 2
    q.close()
    assert [m async for m in stream] == []
