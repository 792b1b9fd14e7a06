"""The hub's fan-out with real PyAV frames: one scaler per rendition, bounded queues."""

from __future__ import annotations

import asyncio
import threading
from fractions import Fraction

import av
import numpy as np
import structlog.testing

from services.common.gen.baycast.v1 import media_pb2
from services.common.media import PulledVideo, decoded, proto_to_i420, proto_to_pcm
from services.common.shared_memory import SHM_DIR
from services.common.sound_ring import PulledSound
from services.common.video_link import LinkDecoder
from services.ingest.source_hub import SourceHub


def frame(n: int) -> av.VideoFrame:
    image = np.full((360 * 3 // 2, 640), 128, dtype=np.uint8)
    image[:360] = 60 + n % 100
    f = av.VideoFrame.from_ndarray(image, format="yuv420p")
    f.pts, f.time_base = n * 3600, Fraction(1, 90000)
    return f


def tone(n: int) -> av.AudioFrame:
    samples = np.full((1, 960 * 2), 1000, dtype=np.int16)
    f = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
    f.sample_rate, f.pts, f.time_base = 48000, n * 960, Fraction(1, 48000)
    return f


async def drain(sub, count: int) -> list[media_pb2.MediaFrame]:  # type: ignore[no-untyped-def]
    out = []
    while len(out) < count:
        item = await sub.queue.get(timeout=5)
        assert item is not None
        out.append(item)
    return out


async def test_renditions_are_shared_and_scaled() -> None:
    hub = SourceHub("t", queue_size=100)
    hub.start()
    small_a = hub.fanout.add(media_pb2.Rendition(width=160, height=90, no_audio=True))
    small_b = hub.fanout.add(media_pb2.Rendition(width=160, height=90, no_audio=True))
    native = hub.fanout.add(media_pb2.Rendition(no_audio=True))
    mono = hub.fanout.add(
        media_pb2.Rendition(no_video=True, audio_sample_rate=16000, audio_channels=1)
    )
    assert hub.fanout.video_renditions == 2 and hub.fanout.audio_renditions == 1
    for n in range(5):
        hub.offer_video(frame(n))
        hub.offer_audio(tone(n))
        await asyncio.sleep(0.02)
    a, b, c = await drain(small_a, 5), await drain(small_b, 5), await drain(native, 5)
    assert [x.video.sequence for x in a] == [1, 2, 3, 4, 5]
    assert a[2] is b[2]  # the same encoded frame object: scaled once for both
    assert (a[0].video.width, a[0].video.height) == (160, 90)
    assert (c[0].video.width, c[0].video.height) == (640, 360)
    assert int(proto_to_i420(a[3].video)[45, 80]) == 63
    assert c[1].video.pts_us == 40_000 and c[1].video.capture_time_us > 0
    audio = await drain(mono, 2)  # 100 ms offered: two messages of 40 ms, 20 ms pending
    assert {(x.audio.sample_rate, x.audio.channels) for x in audio} == {(16000, 1)}
    assert all(x.audio.samples >= 640 for x in audio)  # at least 40 ms at 16 kHz each
    assert [x.audio.sequence for x in audio] == [1, 2]
    assert abs(int(np.median(proto_to_pcm(audio[-1].audio))) - 1000) < 5
    hub.fanout.remove(small_a)
    hub.fanout.remove(small_b)
    assert hub.fanout.video_renditions == 1
    await hub.close()
    assert native.queue.closed and await native.queue.get(timeout=0.1) is None


async def test_fps_cap_and_drop_oldest() -> None:
    drops: list[tuple[str, int]] = []
    hub = SourceHub("t", queue_size=3, on_drop=lambda who, n: drops.append((who, n)))
    hub.start()
    capped = hub.fanout.add(
        media_pb2.Rendition(width=64, height=36, fps=5, no_audio=True), "mixer/show"
    )
    for n in range(25):  # one second at 25 fps
        hub.offer_video(frame(n))
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert len(capped.queue) == 3  # 5 frames passed the cap, the queue holds 3
    assert capped.dropped == 2 and drops == [("mixer/show", 1), ("mixer/show", 1)]
    await hub.close()


async def test_a_jump_in_the_source_clock_does_not_starve_a_capped_rendition() -> None:
    hub = SourceHub("t", queue_size=100)
    hub.start()
    capped = hub.fanout.add(media_pb2.Rendition(width=64, height=36, fps=25, no_audio=True))
    jumped = frame(10)
    jumped.pts = 10 * 3600 + 90000 * 600  # one damaged timestamp, ten minutes ahead
    frames = [frame(n) for n in range(10)] + [jumped] + [frame(n) for n in range(11, 31)]
    # Every frame passes a 25 fps cap on a 25 fps source, the jumped one included: each is
    # offered once the one before it reached the subscriber (the hub's input keeps 3 frames, so
    # offering faster than a busy host's worker takes them would drop some before the cap).
    received = []
    for f in frames:
        hub.offer_video(f)
        received.append(await asyncio.wait_for(capped.queue.get(), 5))
    assert len(received) == 31 and hub.input_dropped == 0
    await hub.close()


async def test_a_same_host_subscriber_gets_the_rendition_by_shared_memory() -> None:
    hub = SourceHub("t", queue_size=4)
    hub.start()
    r = media_pb2.Rendition(width=160, height=90, no_audio=True)
    inline = hub.fanout.add(r)
    shared = hub.fanout.add(r, shared=True)
    assert hub.fanout.video_renditions == 1
    for n in range(3):
        hub.offer_video(frame(n))
        await asyncio.sleep(0.02)
    a, b = await drain(inline, 3), await drain(shared, 3)
    assert [x.video.sequence for x in b] == [1, 2, 3]
    assert not any(x.video.HasField("shared") for x in a)
    assert all(x.video.HasField("shared") and not x.video.planes[0].data for x in b)
    np.testing.assert_array_equal(proto_to_i420(a[2].video), proto_to_i420(b[2].video))
    segment = SHM_DIR / b[0].video.shared.segment
    assert segment.exists()
    hub.fanout.remove(shared)  # the last same-host subscriber: the ring goes, the rendition stays
    assert not segment.exists() and hub.fanout.video_renditions == 1
    again = hub.fanout.add(r, shared=True)
    hub.offer_video(frame(3))
    (c,) = await drain(again, 1)
    assert c.video.HasField("shared") and int(proto_to_i420(c.video)[45, 80]) == 63
    await hub.close()
    assert not (SHM_DIR / c.video.shared.segment).exists()


async def test_a_pulling_subscriber_is_told_the_ring_once_and_reads_frames_from_it() -> None:
    hub = SourceHub("t", queue_size=4)
    hub.start()
    r = media_pb2.Rendition(width=160, height=90, no_audio=True)
    pushed = hub.fanout.add(r, shared=True)
    pulling = hub.fanout.add(r, shared=True, pull=True)
    remote = hub.fanout.add(r, pull=True)  # not on this host: pulling is not for it
    pulled = PulledVideo()
    for n in range(5):
        hub.offer_video(frame(n))
        await asyncio.sleep(0.02)
        if n == 2:
            (told,) = await drain(pulling, 1)
            assert told.WhichOneof("body") == "ring"
            pulled.follow(told.ring.segment)
            first = pulled.take()
            assert first is not None and first.sequence == 3
    assert [m.video.sequence for m in await drain(pushed, 4)] == [2, 3, 4, 5]
    assert [m.video.sequence for m in await drain(remote, 4)] == [2, 3, 4, 5]
    assert not remote.pull and len(pulling.queue) == 0  # no message per frame
    newest = pulled.take()
    assert newest is not None and newest.sequence == 5
    assert int(proto_to_i420(newest)[45, 80]) == 64  # frame 4's luma, scaled
    assert pulled.take() is None
    await hub.close()


async def test_a_subscriber_that_pulls_sound_is_told_its_ring_once_and_reads_every_chunk() -> None:
    hub = SourceHub("t", queue_size=8)
    hub.start()
    r = media_pb2.Rendition(no_video=True)
    pushed = hub.fanout.add(r, shared=True)
    pulling = hub.fanout.add(r, shared=True, pull_sound=True)
    remote = hub.fanout.add(r, pull_sound=True)  # not on this host: messages
    assert hub.fanout.audio_renditions == 1 and not remote.pull_sound
    pulled = PulledSound()
    for n in range(6):  # 120 ms in 20 ms frames: three chunks of 40 ms
        hub.offer_audio(tone(n))
        if n == 1:
            (told,) = await drain(pulling, 1)
            assert told.WhichOneof("body") == "sound_ring"
            assert told.sound_ring.first == 1
            pulled.follow(told.sound_ring.segment, told.sound_ring.first)
    messages = await drain(pushed, 3)
    assert [m.audio.sequence for m in await drain(remote, 3)] == [1, 2, 3]
    assert len(pulling.queue) == 0  # no message per chunk
    chunks = pulled.take()  # from the chunk it was told with
    assert [c.sequence for c in chunks] == [1, 2, 3] and pulled.lost == 0
    assert [c.pts_us for c in chunks] == [m.audio.pts_us for m in messages]
    for chunk, message in zip(chunks, messages, strict=True):
        np.testing.assert_array_equal(chunk.samples, proto_to_pcm(message.audio))
    segment = told.sound_ring.segment
    hub.fanout.remove(pulling)  # the last one pulling: the ring goes, the others go on
    assert not (SHM_DIR / segment).exists()
    hub.offer_audio(tone(6))
    hub.offer_audio(tone(7))
    assert [m.audio.sequence for m in await drain(pushed, 1)] == [4]
    await hub.close()


async def test_a_pulling_subscriber_is_told_the_new_ring_when_frames_grow() -> None:
    hub = SourceHub("t", queue_size=4)
    hub.start()
    pulling = hub.fanout.add(media_pb2.Rendition(no_audio=True), shared=True, pull=True)
    hub.offer_video(frame(0))
    (first,) = await drain(pulling, 1)
    bigger = av.VideoFrame.from_ndarray(
        np.full((720 * 3 // 2, 1280), 90, dtype=np.uint8), format="yuv420p"
    )
    bigger.pts, bigger.time_base = 3600, Fraction(1, 90000)
    hub.offer_video(bigger)
    (second,) = await drain(pulling, 1)
    assert second.ring.segment != first.ring.segment
    assert not (SHM_DIR / first.ring.segment).exists()
    pulled = PulledVideo()
    pulled.follow(second.ring.segment)
    newest = pulled.take()
    assert newest is not None and (newest.width, newest.height) == (1280, 720)
    await hub.close()


async def test_a_subscriber_on_another_host_can_take_a_box_compressed() -> None:
    hub = SourceHub("t", queue_size=8)
    hub.start()
    h264 = media_pb2.Compression(codec=media_pb2.VIDEO_CODEC_H264)
    box = hub.fanout.add(
        media_pb2.Rendition(width=160, height=90, fps=25, no_audio=True), compression=h264
    )
    own_size = hub.fanout.add(media_pb2.Rendition(fps=25, no_audio=True), compression=h264)
    assert box.link is not None and (box.link.width, box.link.height) == (160, 90)
    assert own_size.link is None  # its size is the source's, known only once it comes: raw
    decoder = LinkDecoder()
    lumas = []
    for n in range(3):
        hub.offer_video(frame(n))
        (message,) = await drain(box, 1)
        assert message.WhichOneof("body") == "packet" and message.packet.sequence == n
        lumas += [int(proto_to_i420(m.video)[45, 80]) for m in decoded(decoder, message.packet)]
    assert all(abs(got - 60 - n) <= 2 for n, got in enumerate(lumas)) and len(lumas) == 3
    assert [m.WhichOneof("body") for m in await drain(own_size, 3)] == ["video"] * 3
    await hub.close()
    assert not hub.fanout.encoders


async def test_pictures_wait_while_one_is_scaled_and_the_oldest_waiting_goes() -> None:
    hub = SourceHub("t", queue_size=100)
    hub.start()
    sub = hub.fanout.add(media_pb2.Rendition(width=64, height=36, no_audio=True))
    gate = threading.Event()
    render = hub.fanout.render

    def held(*args, **kwargs):  # type: ignore[no-untyped-def]
        gate.wait(5)
        return render(*args, **kwargs)

    hub.fanout.render = held  # type: ignore[method-assign]
    for n in range(5):  # the first is being scaled; of four waiting, three are kept
        hub.offer_video(frame(n))
    assert hub.input_dropped == 1
    gate.set()
    received = await drain(sub, 4)
    assert [m.video.pts_us for m in received] == [0, 80_000, 120_000, 160_000]
    await hub.close()


async def test_a_picture_that_fails_to_scale_is_logged_and_the_next_ones_flow() -> None:
    hub = SourceHub("t", queue_size=100)
    hub.start()
    sub = hub.fanout.add(media_pb2.Rendition(width=64, height=36, no_audio=True))
    render = hub.fanout.render
    calls = 0

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ValueError("scaler broke")
        return render(*args, **kwargs)

    hub.fanout.render = flaky  # type: ignore[method-assign]
    with structlog.testing.capture_logs() as logs:
        for n in range(4):
            hub.offer_video(frame(n))
            await asyncio.sleep(0.02)
        received = await drain(sub, 3)
    assert [m.video.pts_us for m in received] == [0, 80_000, 120_000]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["render_failed"]
    await hub.close()
    assert sub.queue.closed
