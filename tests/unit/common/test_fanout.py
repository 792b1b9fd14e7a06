"""The one fan-out: rate caps by timestamp, sound per format, drops, encoders fed a copy."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import av
import numpy as np

from services.common.fanout import Fanout, packed_pcm, pcm_frame
from services.common.gen.baycast.v1 import media_pb2
from services.common.media import decoded, proto_to_i420, proto_to_pcm
from services.common.video_link import LinkDecoder

W, H = 128, 72


def _frame(buffer: np.ndarray, luma: int) -> av.VideoFrame:
    buffer[:H] = luma
    buffer[H:] = 128
    return av.VideoFrame.from_numpy_buffer(buffer, format="yuv420p")


def test_a_rate_cap_follows_the_timestamps_and_starts_again_after_a_jump() -> None:
    fan = Fanout("t", 100)
    capped = fan.add(media_pb2.Rendition(width=64, height=36, fps=5, no_audio=True))
    buffer = np.empty((H * 3 // 2, W), dtype=np.uint8)
    taken = []
    # A jittery 25 fps source: each picture up to 8 ms off its slot.
    for n, jitter in zip(range(50), [0, 8_000, -8_000, 3_000, -3_000] * 10, strict=True):
        pts = 10_000_000 + n * 40_000 + jitter
        wanted = fan.wants_video(pts)
        before = len(capped.queue)
        fan.publish_video(_frame(buffer, n), pts, 0, owned=False)
        assert (len(capped.queue) > before) == wanted  # asking does not step the cap
        if wanted:
            taken.append(n)
    assert taken == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]  # five a second, evenly
    # The producer's clock goes back (a reconnect): the cap counts again from there.
    fan.publish_video(_frame(buffer, 60), 40_000, 0, owned=False)
    assert len(capped.queue) == 11
    assert int(proto_to_i420(capped.queue._items[-1].video)[10, 10]) == 60
    fan.close()


def test_sound_is_resampled_once_per_format_and_each_publish_is_a_message() -> None:
    fan = Fanout("t", 100)
    stereo_a = fan.add(media_pb2.Rendition(no_video=True))
    stereo_b = fan.add(media_pb2.Rendition(no_video=True, audio_channels=2))
    mono = fan.add(media_pb2.Rendition(no_video=True, audio_channels=1, audio_sample_rate=16_000))
    assert fan.audio_renditions == 2 and fan.video_renditions == 0
    samples = np.empty((1920, 2), dtype=np.int16)
    samples[:, 0], samples[:, 1] = 3000, 1000  # left and right differ
    for n in range(5):
        fan.publish_audio(pcm_frame(samples, 48_000, 1_000_000 + n * 40_000), 77)
    a, b = list(stereo_a.queue._items), list(stereo_b.queue._items)
    assert len(a) == 5 and all(x is y for x, y in zip(a, b, strict=True))  # one message each
    assert [m.audio.pts_us for m in a] == [1_000_000 + n * 40_000 for n in range(5)]
    assert all(m.audio.capture_time_us == 77 for m in a)
    np.testing.assert_array_equal(proto_to_pcm(a[0].audio), samples)
    m = list(mono.queue._items)
    assert {(x.audio.sample_rate, x.audio.channels) for x in m} == {(16_000, 1)}
    got = np.concatenate([proto_to_pcm(x.audio) for x in m]).reshape(-1)
    assert abs(len(got) - 5 * 640) <= 64  # 200 ms at 16 kHz (the resampler keeps a few back)
    assert abs(int(np.median(got)) - 2000) <= 2  # the two channels' mean
    fan.close()
    assert stereo_a.queue.closed and mono.queue.closed


def test_sound_is_gathered_into_messages_of_the_producers_length() -> None:
    fan = Fanout("t", 100, audio_message_ms=40)
    sub = fan.add(media_pb2.Rendition(no_video=True))
    samples = np.full((960, 2), 500, dtype=np.int16)  # 20 ms frames
    for n in range(5):
        fan.publish_audio(pcm_frame(samples, 48_000, n * 20_000), 0)
    sent = list(sub.queue._items)
    assert [(m.audio.samples, m.audio.pts_us, m.audio.sequence) for m in sent] == [
        (1920, 0, 1),
        (1920, 40_000, 2),
    ]  # the fifth 20 ms waits for the sixth
    fan.close()


def test_sound_in_the_renditions_format_goes_as_it_is_and_other_formats_are_resampled() -> None:
    fan = Fanout("t", 100, audio_message_ms=40)
    same = fan.add(media_pb2.Rendition(no_video=True))
    mono = fan.add(media_pb2.Rendition(no_video=True, audio_channels=1, audio_sample_rate=16_000))
    frames = [np.full((960, 2), 100 * (n + 1), dtype=np.int16) for n in range(4)]
    decoded = [av.AudioFrame.from_ndarray(f.reshape(1, -1), "s16", "stereo") for f in frames]
    for n, frame in enumerate(decoded):
        frame.sample_rate, frame.pts, frame.time_base = 48_000, 960 * n, Fraction(1, 48_000)
        samples = packed_pcm(frame)
        assert samples is not None and np.shares_memory(samples, np.asarray(frame.planes[0]))
        # a timestamp between samples stays as it is: nothing went through a resampler
        fan.publish_pcm(samples, 48_000, 7 + n * 20_000, 55, frame=frame)
    sent = list(same.queue._items)
    assert [(m.audio.pts_us, m.audio.samples, m.audio.capture_time_us) for m in sent] == [
        (7, 1920, 55),
        (40_007, 1920, 55),
    ]
    np.testing.assert_array_equal(
        np.concatenate([proto_to_pcm(m.audio) for m in sent]), np.concatenate(frames)
    )
    heard = np.concatenate([proto_to_pcm(m.audio) for m in mono.queue._items]).reshape(-1)
    assert mono.queue._items[0].audio.sample_rate == 16_000
    # 16 kHz mono out of the same frames (the resampler keeps a few samples back)
    assert len(heard) >= 2 * 320 and int(heard[0]) == 100 and 300 in heard
    fan.close()


def test_a_subscriber_that_stops_reading_loses_its_oldest_and_the_producer_hears_of_it() -> None:
    drops: list[tuple[str, int]] = []
    fan = Fanout("t", 3, on_drop=lambda who, n: drops.append((who, n)))
    slow = fan.add(media_pb2.Rendition(no_audio=True), "mixer/show")
    buffer = np.empty((H * 3 // 2, W), dtype=np.uint8)
    for n in range(5):
        fan.publish_video(_frame(buffer, 50 + n), n * 40_000, 0, owned=False)
    assert [m.video.sequence for m in slow.queue._items] == [3, 4, 5]
    assert slow.dropped == 2 and drops == [("mixer/show", 1), ("mixer/show", 1)]
    fan.close()


async def test_an_encoder_gets_a_copy_of_a_picture_whose_buffer_is_reused() -> None:
    fan = Fanout("t", 8, size=(W, H), fps=25, compress=True)
    h264 = media_pb2.Compression(codec=media_pb2.VIDEO_CODEC_H264, bitrate_kbps=500)
    remote = fan.add(media_pb2.Rendition(no_audio=True), compression=h264)
    buffer = np.empty((H * 3 // 2, W), dtype=np.uint8)
    lumas = []
    decoder = LinkDecoder()
    for n in range(3):
        fan.publish_video(_frame(buffer, 60 + 40 * n), n * 40_000, 0, owned=False)
        buffer[:] = 0  # the producer draws its next picture into the same memory at once
        async with asyncio.timeout(10):
            message = await remote.queue.get()
        assert message is not None and message.WhichOneof("body") == "packet"
        lumas += [int(proto_to_i420(m.video)[10, 10]) for m in decoded(decoder, message.packet)]
    assert all(abs(got - want) <= 2 for got, want in zip(lumas, (60, 100, 140), strict=True)), lumas
    encoder = fan.encoders[remote.link]  # type: ignore[index]
    fan.close()
    assert not fan.encoders
    encoder.join(10)
