"""The sound ring: chunks in order, split over slots, lost ones counted, ended rings told."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.shared_memory import HEADER, PAGE, FrameGone, FrameRing, SharedMemoryReader
from services.common.sound_ring import SOUND_SLOT_SIZE, PulledSound, SoundRing, _read_slot


def ramp(start: int, count: int, channels: int = 2) -> np.ndarray:
    """Samples numbered from `start` (each channel its own sign), to tell every one apart."""
    n = np.arange(start, start + count, dtype=np.int16)
    return np.stack([n, -n][:channels], axis=1)


def reader(ring: SoundRing) -> PulledSound:
    pulled = PulledSound(SharedMemoryReader())
    pulled.follow(ring.name)
    return pulled


def test_a_reader_joins_at_the_newest_chunk_then_takes_every_one_in_order() -> None:
    ring = SoundRing(slots=8)
    try:
        for n in range(3):
            ring.write(ramp(n * 1920, 1920), 48_000, pts_us=n * 40_000, sequence=n + 1)
        pulled = reader(ring)
        (first,) = pulled.take()
        assert (first.sequence, first.pts_us, first.sample_rate) == (3, 80_000, 48_000)
        np.testing.assert_array_equal(first.samples, ramp(3840, 1920))
        assert pulled.take() == []
        for n in range(3, 6):
            ring.write(
                ramp(n * 1920, 1920), 48_000, pts_us=n * 40_000, capture_time_us=7, sequence=n + 1
            )
        chunks = pulled.take()
        assert [c.sequence for c in chunks] == [4, 5, 6]
        assert [c.capture_time_us for c in chunks] == [7, 7, 7]
        np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), ramp(5760, 5760))
        assert pulled.lost == 0
    finally:
        ring.close()


def test_a_chunk_longer_than_a_slot_takes_several_with_their_own_pts() -> None:
    ring = SoundRing(slots=8)
    per_slot = (SOUND_SLOT_SIZE - HEADER) // 4  # stereo int16
    try:
        pulled = reader(ring)
        ring.write(ramp(0, 10), 48_000, pts_us=0, sequence=1)
        pulled.take()
        long = ramp(100, per_slot * 2 + 5)
        ring.write(long, 48_000, pts_us=1_000_000, sequence=2)
        chunks = pulled.take()
        assert [c.samples.shape[0] for c in chunks] == [per_slot, per_slot, 5]
        assert [c.pts_us for c in chunks] == [
            1_000_000,
            1_000_000 + per_slot * 1_000_000 // 48_000,
            1_000_000 + 2 * per_slot * 1_000_000 // 48_000,
        ]
        np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), long)
        mono = ramp(0, per_slot * 2, channels=1)  # mono: twice the samples a slot
        ring.write(mono, 16_000, pts_us=0, sequence=3)
        (one,) = pulled.take()
        assert one.samples.shape == (per_slot * 2, 1) and one.sample_rate == 16_000
    finally:
        ring.close()


def test_a_reader_that_fell_a_ring_behind_counts_what_it_lost_and_takes_the_rest() -> None:
    ring = SoundRing(slots=8)
    try:
        pulled = reader(ring)
        ring.write(ramp(0, 960), 48_000, pts_us=0, sequence=1)
        assert [c.sequence for c in pulled.take()] == [1]
        for n in range(2, 22):  # 20 chunks, the ring holds 8 (7 readable: the 8th may be written)
            ring.write(ramp(n, 960), 48_000, pts_us=n, sequence=n)
        chunks = pulled.take()
        assert [c.sequence for c in chunks] == list(range(15, 22))
        assert pulled.lost == 13
    finally:
        ring.close()


def test_a_slot_being_written_or_rewritten_is_not_read() -> None:
    ring = SoundRing(slots=4)
    try:
        ring.write(ramp(0, 960), 48_000, pts_us=0, sequence=1)
        data = np.frombuffer(ring._map, dtype=np.uint8)  # the writer's own bytes
        assert _read_slot(data, PAGE, ring.slot_size, 1) is not None
        assert _read_slot(data, PAGE, ring.slot_size, 5) is None  # another chunk's stamp
        data[PAGE : PAGE + 8] = 0  # the writer has started on the slot again
        assert _read_slot(data, PAGE, ring.slot_size, 1) is None
    finally:
        ring.close()


def test_an_ended_ring_says_so_once_and_a_picture_ring_is_not_sound() -> None:
    ring = SoundRing(slots=4)
    pulled = PulledSound(SharedMemoryReader(sweep_every_s=0))
    pulled.follow(ring.name)
    ring.write(ramp(0, 960), 48_000, pts_us=0, sequence=1)
    assert len(pulled.take()) == 1
    ring.close()
    assert pulled.take() == []  # the look that finds its file gone lets go of the mapping
    with pytest.raises(FrameGone):
        pulled.take()
    assert pulled.segment == "" and pulled.take() == []
    pictures = FrameRing(1024, 2)
    try:
        pulled.follow(pictures.name)
        with pytest.raises(ValueError, match="not a sound ring"):
            pulled.take()
        # A reader that goes on whatever happens lets go of it, and of an ended ring quietly.
        assert pulled.chunks() == [] and pulled.segment == ""
    finally:
        pictures.close()
    ended = SoundRing(slots=4)
    pulled.follow(ended.name)
    ended.close()
    assert pulled.chunks() == [] and pulled.chunks() == [] and pulled.segment == ""


def test_only_int16_mono_or_stereo_is_written() -> None:
    ring = SoundRing(slots=2)
    try:
        with pytest.raises(ValueError):
            ring.write(np.zeros((960, 2), dtype=np.float32), 48_000, pts_us=0)
        with pytest.raises(ValueError):
            ring.write(np.zeros((960, 6), dtype=np.int16), 48_000, pts_us=0)
    finally:
        ring.close()
