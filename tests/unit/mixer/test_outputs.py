"""A mixer output's fan-out: inline, shared-memory and compressed subscribers of one handle."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.common import errors
from services.common.fanout import LinkKey, Subscription
from services.common.gen.baycast.v1 import media_pb2
from services.common.media import PulledVideo, decoded, proto_to_i420, proto_to_pcm
from services.common.shared_memory import SHM_DIR
from services.common.video_link import LinkDecoder
from services.mixer.outputs import Output, OutputFeeds
from services.mixer.pictures import Picture


def _picture(luma: int) -> Picture:
    image = np.full((72 * 3 // 2, 128), 128, dtype=np.uint8)
    image[:72] = luma
    return Picture(128, 72, image)


def test_shared_and_inline_subscribers_see_the_same_pictures() -> None:
    out = Output("prod/p/program", 128, 72, 25, 4, "p")
    inline = out.add(media_pb2.Rendition(no_audio=True))
    shared = out.add(media_pb2.Rendition(no_audio=True), shared=True)
    small = out.add(media_pb2.Rendition(width=64, height=36, no_audio=True), shared=True)
    for n in range(3):
        out.publish_video(_picture(50 + n), n * 40_000, 0)
    a = [inline.queue._items[i] for i in range(3)]
    b = [shared.queue._items[i] for i in range(3)]
    c = [small.queue._items[i] for i in range(3)]
    assert not a[0].video.HasField("shared") and b[0].video.HasField("shared")
    assert b[0].video.shared.segment != c[0].video.shared.segment  # one ring per size
    for n in range(3):
        np.testing.assert_array_equal(proto_to_i420(a[n].video), proto_to_i420(b[n].video))
        assert int(proto_to_i420(c[n].video)[10, 10]) == 50 + n
    rings = [SHM_DIR / b[0].video.shared.segment, SHM_DIR / c[0].video.shared.segment]
    out.remove(small)
    assert rings[0].exists() and not rings[1].exists()
    out.close()
    assert not rings[0].exists() and not out.subscribers


def test_a_picture_is_wanted_only_on_the_frames_its_subscribers_take() -> None:
    out = Output("prod/p/multiview", 128, 72, 25, 4, "p")
    assert not any(out.wants_video(n * 40_000) for n in range(50))  # nobody watching
    listener = out.add(media_pb2.Rendition(no_video=True))
    assert not any(out.wants_video(n * 40_000) for n in range(50))  # audio only
    once_a_second = out.add(media_pb2.Rendition(fps=1, no_audio=True))
    wanted = []
    for n in range(50):  # two seconds at 25 fps: two pictures, the first at once
        if out.wants_video(n * 40_000):
            wanted.append(n)
            out.publish_video(_picture(n), n * 40_000, 0)
    assert wanted == [0, 25]
    out.add(media_pb2.Rendition(fps=25, no_audio=True))
    assert all(out.wants_video(n * 40_000) for n in range(50, 100))
    out.remove(listener)
    out.remove(once_a_second)
    out.close()


def test_the_video_rate_is_the_fastest_subscribers_capped_at_the_outputs() -> None:
    out = Output("prod/p/multiview", 128, 72, 25, 4, "p")
    assert out.video_fps() == 0  # nobody watching
    out.add(media_pb2.Rendition(no_video=True))
    assert out.video_fps() == 0  # audio only
    out.add(media_pb2.Rendition(fps=1, no_audio=True))
    assert out.video_fps() == 1
    out.add(media_pb2.Rendition(fps=10, no_audio=True))
    assert out.video_fps() == 10
    out.add(media_pb2.Rendition(fps=50, no_audio=True))
    assert out.video_fps() == 25
    out.add(media_pb2.Rendition(no_audio=True))  # uncapped: every frame
    assert out.video_fps() == 25
    out.close()


def test_a_pulling_subscriber_is_told_its_ring_once_and_pulls_the_newest_picture() -> None:
    out = Output("prod/p/program", 128, 72, 25, 4, "p")
    pushed = out.add(media_pb2.Rendition(no_audio=True), shared=True)
    pulling = out.add(media_pb2.Rendition(no_audio=True), shared=True, pull=True)
    remote = out.add(media_pb2.Rendition(no_audio=True), pull=True)  # another host: frames
    for n in range(3):
        out.publish_video(_picture(50 + n), n * 40_000, 0)
    assert len(pushed.queue) == 3 and len(remote.queue) == 3 and not remote.pull
    (told,) = list(pulling.queue._items)
    assert told.WhichOneof("body") == "ring"
    assert told.ring.segment == pushed.queue._items[0].video.shared.segment  # one ring, shared
    pulled = PulledVideo()
    pulled.follow(told.ring.segment)
    newest = pulled.take()
    assert newest is not None and newest.sequence == 3
    assert int(proto_to_i420(newest)[10, 10]) == 52
    out.close()


async def _packets(sub: Subscription, count: int) -> list[media_pb2.VideoPacket]:
    """The next `count` packets of a compressed subscriber (encoded in the encoder's thread)."""
    packets = []
    async with asyncio.timeout(10):
        while len(packets) < count:
            message = await sub.queue.get()
            assert message is not None and message.WhichOneof("body") == "packet", message
            packets.append(message.packet)
    return packets


async def test_subscribers_on_other_hosts_that_ask_for_compression_share_one_encoder() -> None:
    out = Output("prod/p/program", 128, 72, 25, 8, "p")
    h264 = media_pb2.Compression(codec=media_pb2.VIDEO_CODEC_H264, bitrate_kbps=500)
    first = out.add(media_pb2.Rendition(no_audio=True), compression=h264)
    local = out.add(media_pb2.Rendition(no_audio=True), shared=True, compression=h264)
    assert local.link is None  # on this host the ring serves it, compression or not
    for n in range(3):
        out.publish_video(_picture(50 + n), n * 40_000, 7)
        await _packets(first, 1)
    second = out.add(media_pb2.Rendition(no_audio=True), compression=h264)
    a, b = [], []
    for n in range(3, 6):  # a picture at a time, as the frame clock gives them
        out.publish_video(_picture(50 + n), n * 40_000, 7)
        a += await _packets(first, 1)
        b += await _packets(second, 1)
    assert len(out.fanout.encoders) == 1
    assert first.link == second.link == LinkKey(128, 72, 25, 500)
    # The newcomer starts on a keyframe made for it; each subscription counts its own packets.
    assert [p.keyframe for p in a] == [True, False, False] and b[0].keyframe
    assert [p.sequence for p in a] == [3, 4, 5] and [p.sequence for p in b] == [0, 1, 2]
    assert [p.pts_us for p in b] == [120_000, 160_000, 200_000]
    decoder = LinkDecoder()
    lumas = [int(proto_to_i420(m.video)[10, 10]) for p in b for m in decoded(decoder, p)]
    assert all(abs(luma - want) <= 2 for luma, want in zip(lumas, (53, 54, 55), strict=True)), lumas
    assert len(local.queue) == 6 and local.queue._items[0].video.HasField("shared")
    link = out.fanout.encoders[first.link]
    out.remove(first)
    assert out.fanout.encoders  # the second still takes it
    out.remove(second)
    assert not out.fanout.encoders
    link.join(10)
    out.close()


async def test_a_compressed_subscriber_at_another_size_and_rate_gets_its_own_encoder() -> None:
    out = Output("prod/p/program", 128, 72, 25, 8, "p")
    h264 = media_pb2.Compression(codec=media_pb2.VIDEO_CODEC_H264)
    full = out.add(media_pb2.Rendition(no_audio=True), compression=h264)
    small = out.add(
        media_pb2.Rendition(width=64, height=36, fps=5, no_audio=True), compression=h264
    )
    assert (full.link, small.link) == (LinkKey(128, 72, 25, 300), LinkKey(64, 36, 5, 300))
    for n in range(1, 11):
        out.publish_video(_picture(50 + n), n * 40_000, 0)
        await _packets(full, 1)  # a picture at a time, as the frame clock gives them
    # Ten frames at 25 fps: two at 5, the first at once and then every fifth.
    packets = await _packets(small, 2)
    assert [(p.width, p.height, p.pts_us) for p in packets] == [
        (64, 36, 40_000),
        (64, 36, 240_000),
    ]
    assert len(small.queue) == 0
    out.close()
    assert not out.fanout.encoders


async def test_a_return_at_another_sample_rate_and_channel_count_is_resampled_once() -> None:
    out = Output("prod/p/mixminus/gz", 128, 72, 25, 8, "p")
    feeds = OutputFeeds(lambda handle: out if handle == out.name else None)
    phone = media_pb2.Rendition(no_video=True, audio_sample_rate=16_000, audio_channels=1)
    a = await feeds.open(media_pb2.SubscribeRequest(handle=out.name, rendition=phone))
    b = await feeds.open(media_pb2.SubscribeRequest(handle=out.name, rendition=phone))
    samples = np.full((1920, 2), 1000, dtype=np.int16)
    for n in range(3):
        out.publish_audio(samples, 48_000, n * 40_000)
    sent = list(a.queue._items)
    assert all(x is y for x, y in zip(sent, b.queue._items, strict=True))
    assert {(m.audio.sample_rate, m.audio.channels) for m in sent} == {(16_000, 1)}
    got = np.concatenate([proto_to_pcm(m.audio) for m in sent]).reshape(-1)
    assert abs(len(got) - 3 * 640) <= 64 and abs(int(np.median(got)) - 1000) <= 2
    with pytest.raises(errors.InvalidArgument):
        await feeds.open(
            media_pb2.SubscribeRequest(
                handle=out.name,
                rendition=media_pb2.Rendition(no_video=True, audio_sample_rate=4000),
            )
        )
    a.close()
    b.close()
    assert not out.subscribers
