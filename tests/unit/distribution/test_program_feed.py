from __future__ import annotations

import numpy as np

from services.common.gen.baycast.v1 import media_pb2
from services.common.media import (
    i420_shared_message,
    i420_to_proto,
    pcm_to_proto,
)
from services.common.shared_memory import RingHolder
from services.common.sound_ring import SoundRing
from services.distribution.encoder import (
    AUDIO_MAX_TICKS,
    AUDIO_PRIME_TICKS,
    AUDIO_TARGET_TICKS,
    ProgramFeed,
)

TICK = 1920  # 48 kHz at 25 fps


def audio(
    value: int, samples: int = TICK, rate: int = 48_000, channels: int = 2
) -> media_pb2.MediaFrame:
    pcm = np.full((samples, channels), value, dtype=np.int16)
    return media_pb2.MediaFrame(audio=pcm_to_proto(pcm, rate, pts_us=0))


def test_audio_waits_for_a_few_ticks_then_plays_in_order() -> None:
    feed = ProgramFeed(TICK)
    for n in range(1, AUDIO_PRIME_TICKS):
        feed.push(audio(n), 0.0)
        out, silent = feed.take_audio()
        assert silent == TICK and not out.any()  # priming: not enough yet
    feed.push(audio(AUDIO_PRIME_TICKS), 0.0)
    out, silent = feed.take_audio()
    assert silent == 0 and (out == 1).all()
    out, silent = feed.take_audio()
    assert silent == 0 and (out == 2).all()
    out, silent = feed.take_audio()
    assert silent == 0 and (out == 3).all()


def test_a_short_tick_is_padded_with_silence_and_counted() -> None:
    feed = ProgramFeed(TICK)
    feed.push(audio(5, samples=TICK * AUDIO_PRIME_TICKS + 100), 0.0)
    for _ in range(AUDIO_PRIME_TICKS):
        feed.take_audio()
    out, silent = feed.take_audio()
    assert silent == TICK - 100
    assert (out[:100] == 5).all() and not out[100:].any()


def test_piled_up_audio_is_trimmed_to_the_target_latency() -> None:
    feed = ProgramFeed(TICK)
    for n in range(AUDIO_MAX_TICKS + 1):
        feed.push(audio(n), 0.0)
    ticks = []
    while True:
        out, silent = feed.take_audio()
        if silent:
            break
        ticks.append(int(out[0, 0]))
    assert len(ticks) == AUDIO_TARGET_TICKS
    assert ticks == list(range(AUDIO_MAX_TICKS + 1 - AUDIO_TARGET_TICKS, AUDIO_MAX_TICKS + 1))


def test_audio_in_another_format_is_ignored() -> None:
    feed = ProgramFeed(TICK)
    feed.push(audio(3, rate=44_100), 0.0)
    feed.push(audio(3, channels=1), 0.0)
    assert not feed.present(0.0, 1.0)


def test_presence_follows_the_last_frame() -> None:
    feed = ProgramFeed(TICK)
    assert not feed.present(0.0, 1.0)
    image = np.zeros((12, 8), dtype=np.uint8)
    feed.push(media_pb2.MediaFrame(video=i420_to_proto(image, pts_us=0)), 10.0)
    assert feed.video is not None and feed.first_picture.is_set()
    assert feed.present(10.9, 1.0)
    assert not feed.present(11.1, 1.0)
    feed.clear()
    assert feed.video is None


def test_a_picture_is_read_on_arrival_and_a_bad_one_leaves_the_last_held() -> None:
    feed = ProgramFeed(TICK)
    image = np.full((12, 8), 99, dtype=np.uint8)
    feed.push(media_pb2.MediaFrame(video=i420_to_proto(image, pts_us=0)), 1.0)
    assert feed.video is not None
    np.testing.assert_array_equal(feed.video.to_ndarray(), image)
    broken = media_pb2.MediaFrame(video=i420_to_proto(image, pts_us=40_000))
    del broken.video.planes[2]
    feed.push(broken, 1.04)
    np.testing.assert_array_equal(feed.video.to_ndarray(), image)
    assert feed.last_frame_at == 1.0


def test_on_the_mixers_host_pictures_are_pulled_from_the_ring_at_the_tick() -> None:
    holder = RingHolder(slots=4)
    feed = ProgramFeed(TICK)

    def program(value: int, sequence: int) -> None:
        image = np.full((36 * 3 // 2, 64), value, dtype=np.uint8)
        i420_shared_message(holder, image, pts_us=sequence * 40_000, sequence=sequence)

    try:
        program(10, 1)
        feed.push(media_pb2.MediaFrame(ring=media_pb2.VideoRing(segment=holder.segment)), 1.0)
        # The ring's first picture is taken as it is named: the encoder can open on its size.
        assert feed.first_picture.is_set() and feed.video is not None
        assert int(feed.video.to_ndarray()[0, 0]) == 10 and feed.present(1.5, 1.0)
        held = feed.video
        feed.pull(2.0)  # nothing newer: the picture holds, and the program ages
        assert feed.video is held and not feed.present(2.5, 1.0)
        program(20, 2)
        program(30, 3)
        feed.pull(3.0)  # the newest at the tick, whatever came between
        assert int(feed.video.to_ndarray()[0, 0]) == 30 and feed.present(3.5, 1.0)
    finally:
        holder.close()
    feed.pull(4.0)  # the mixer's ring is gone: the last picture holds until the slate
    assert int(feed.video.to_ndarray()[0, 0]) == 30


def test_on_the_mixers_host_the_sound_is_pulled_from_its_ring_at_the_tick() -> None:
    ring = SoundRing(slots=8)
    feed = ProgramFeed(TICK)
    try:
        ring.write(np.full((TICK, 2), 1, dtype=np.int16), 48_000, pts_us=0, sequence=1)
        told = media_pb2.SoundRing(segment=ring.name, first=1)
        feed.push(media_pb2.MediaFrame(sound_ring=told), 1.0)
        for n in range(2, AUDIO_PRIME_TICKS + 1):
            ring.write(np.full((TICK, 2), n, dtype=np.int16), 48_000, pts_us=0, sequence=n)
        ring.write(np.full((TICK, 2), 9, dtype=np.int16), 44_100, pts_us=0, sequence=99)
        feed.pull(2.0)  # every chunk since it was told, from the first; 44.1 kHz is not ours
        assert feed.present(2.5, 1.0)
        for n in range(1, AUDIO_PRIME_TICKS + 1):
            out, silent = feed.take_audio()
            assert silent == 0 and (out == n).all()
        assert feed.sound.lost == 0
    finally:
        ring.close()
