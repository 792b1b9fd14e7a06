"""Shared-memory frame rings: planes by reference, reused slots detected, segments cleaned up."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from services.common import shared_memory
from services.common.gen.baycast.v1 import media_pb2
from services.common.media import (
    PulledVideo,
    i420_shared_message,
    inline_video,
    proto_to_av_i420,
    proto_to_i420,
    video_planes,
)
from services.common.shared_memory import (
    SHM_DIR,
    FrameGone,
    FrameRing,
    RingHolder,
    SharedMemoryReader,
)

FRAME_BYTES = 4096


def _image(width: int, height: int, value: int) -> np.ndarray:
    image = np.full((height * 3 // 2, width), value, dtype=np.uint8)
    image[0, :4] = [1, 2, 3, 4]
    return image


def _message(holder: RingHolder, image: np.ndarray, sequence: int) -> media_pb2.MediaFrame:
    return i420_shared_message(holder, image, pts_us=sequence * 40_000, sequence=sequence)


def test_a_frame_travels_by_reference_and_reads_back_equal() -> None:
    holder = RingHolder(slots=4)
    try:
        image = _image(64, 36, 77)
        message = _message(holder, image, 1)
        video = message.video
        assert video.HasField("shared") and all(not p.data for p in video.planes)
        assert [p.stride for p in video.planes] == [64, 32, 32]
        assert list(video.shared.lengths) == [64 * 36, 32 * 18, 32 * 18]
        assert video.shared.offset % shared_memory.PAGE == 0 and video.shared.stamp == 1
        # The whole message is a few dozen bytes on the wire instead of the 3456 of the planes.
        assert message.ByteSize() < 100
        again = media_pb2.MediaFrame.FromString(message.SerializeToString())
        np.testing.assert_array_equal(proto_to_i420(again.video), image)
        mode = os.stat(SHM_DIR / video.shared.segment).st_mode & 0o777
        assert mode == 0o600
    finally:
        holder.close()


def test_a_packed_frame_reads_as_one_private_array() -> None:
    holder = RingHolder(slots=2)
    try:
        image = _image(32, 18, 50)
        first = _message(holder, image, 1)
        picture = proto_to_i420(first.video)
        assert picture.shape == (27, 32) and picture.flags.owndata is False
        assert picture.base is not None and picture.base.flags.owndata  # one copy, not a view
        _message(holder, _image(32, 18, 60), 2)
        _message(holder, _image(32, 18, 70), 3)  # the first one's slot, rewritten
        np.testing.assert_array_equal(picture, image)
    finally:
        holder.close()


def test_a_reused_slot_is_a_lost_frame_not_a_wrong_one() -> None:
    holder = RingHolder(slots=2)
    try:
        first = _message(holder, _image(32, 18, 10), 1)
        _message(holder, _image(32, 18, 20), 2)
        third = _message(holder, _image(32, 18, 30), 3)  # the first one's slot
        assert third.video.shared.offset == first.video.shared.offset
        with pytest.raises(FrameGone):
            video_planes(first.video)
        assert int(video_planes(third.video)[0][5]) == 30
    finally:
        holder.close()


def test_a_slot_goes_straight_into_an_encoders_frame_and_a_reused_one_is_lost() -> None:
    holder = RingHolder(slots=2)
    try:
        # 66 wide: the frame's lines are padded past the picture (line_size > width).
        image = _image(66, 18, 90)
        image[18:27] = 128  # chroma
        image[27 - 1, -1] = 5
        first = _message(holder, image, 1)
        frame = proto_to_av_i420(first.video)
        assert (frame.width, frame.height, frame.format.name) == (66, 18, "yuv420p")
        assert frame.planes[0].line_size > 66
        np.testing.assert_array_equal(frame.to_ndarray(), image)
        _message(holder, _image(66, 18, 60), 2)
        _message(holder, _image(66, 18, 70), 3)  # the first one's slot, rewritten
        np.testing.assert_array_equal(frame.to_ndarray(), image)  # the frame is its own
        with pytest.raises(FrameGone):
            proto_to_av_i420(first.video)
        inline = inline_video(_message(holder, image, 4).video)  # planes in the message
        assert not inline.HasField("shared")
        np.testing.assert_array_equal(proto_to_av_i420(inline).to_ndarray(), image)
    finally:
        holder.close()


def test_copy_into_wants_planes_of_the_frames_sizes() -> None:
    holder = RingHolder(slots=2)
    try:
        video = _message(holder, _image(32, 18, 10), 1).video
        with pytest.raises(ValueError, match="do not match"):
            shared_memory.READER.copy_into(video.shared, [np.empty(32 * 18, np.uint8)])
    finally:
        holder.close()


def test_a_bigger_frame_gets_a_new_ring_and_the_old_segment_goes() -> None:
    holder = RingHolder(slots=2)
    try:
        small = _message(holder, _image(32, 18, 1), 1)
        big = _message(holder, _image(64, 36, 2), 2)
        assert big.video.shared.segment != small.video.shared.segment
        assert not (SHM_DIR / small.video.shared.segment).exists()
        reader = SharedMemoryReader()
        with pytest.raises(FrameGone):
            reader.read(small.video.shared)
        assert int(reader.read(big.video.shared)[0][5]) == 2
    finally:
        holder.close()
    assert holder.ring is None


def test_references_outside_a_segment_or_to_other_files_are_refused() -> None:
    ring = FrameRing(1024, 2)
    try:
        reader = SharedMemoryReader()
        bad = media_pb2.SharedPlanes(segment=ring.name, offset=0, stamp=1, lengths=[10**9])
        with pytest.raises(ValueError, match="outside"):
            reader.read(bad)
        with pytest.raises(FrameGone):
            reader.read(media_pb2.SharedPlanes(segment="../etc/passwd", stamp=1, lengths=[1]))
    finally:
        ring.close()


def test_the_reader_keeps_a_bounded_number_of_mappings() -> None:
    rings = [FrameRing(100, 1) for _ in range(5)]
    try:
        reader = SharedMemoryReader(capacity=3)
        for ring in rings:
            reader.open(ring.name)
        assert reader.mapped == [ring.name for ring in rings[2:]]
    finally:
        for ring in rings:
            ring.close()


def _mapped_here(segment: str) -> bool:
    gc.collect()
    return segment in Path("/proc/self/maps").read_text()


def test_a_reader_lets_go_of_a_ring_that_ended_when_it_maps_the_next() -> None:
    """An ended ring's memory stays allocated while a reader maps it: the reader lets go."""
    ended, live = FrameRing(FRAME_BYTES, 2), FrameRing(FRAME_BYTES, 2)
    name = ended.name
    try:
        reader = SharedMemoryReader(sweep_every_s=3600)
        reader.open(name)
        ended.close()
        del ended  # the producer's own mapping goes with its ring
        assert _mapped_here(name)  # the reader still holds the unlinked file's memory
        reader.open(live.name)
        assert reader.mapped == [live.name]
        assert not _mapped_here(name)
    finally:
        live.close()


def test_a_reader_looks_for_ended_rings_while_it_reads_the_same_ones() -> None:
    first, second = FrameRing(FRAME_BYTES, 2), FrameRing(FRAME_BYTES, 2)
    try:
        reader = SharedMemoryReader(sweep_every_s=0.0)
        reader.open(first.name)
        reader.open(second.name)
        second.close()
        assert reader.mapped == [first.name, second.name]
        reader.open(first.name)  # no new mapping, but the time to look has come
        assert reader.mapped == [first.name]
    finally:
        first.close()


def test_host_id_is_empty_when_turned_off() -> None:
    assert shared_memory.host_id()
    request = media_pb2.SubscribeRequest(shared_memory_host=shared_memory.host_id())
    assert shared_memory.accepts(request)
    shared_memory.configure(False)
    try:
        assert shared_memory.host_id() == "" and not shared_memory.accepts(request)
    finally:
        shared_memory.configure(True)
    assert not shared_memory.accepts(media_pb2.SubscribeRequest(shared_memory_host="elsewhere"))


def test_segments_of_a_dead_producer_are_removed_by_the_next_one() -> None:
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os\n"
            "from services.common.shared_memory import FrameRing\n"
            "print(FrameRing(100, 1).name)\n"
            "os._exit(0)\n",  # dies without unlinking, as a killed producer would
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    left = SHM_DIR / child.stdout.strip()
    assert left.exists()
    shared_memory._remove_stale_segments.cache_clear()
    ring = FrameRing(100, 1)
    ring.close()
    assert not left.exists()


def test_a_puller_reads_the_newest_whole_frame_from_the_slot_header() -> None:
    holder = RingHolder(slots=3)
    try:
        reader = SharedMemoryReader()
        _message(holder, _image(64, 36, 10), 1)
        segment = holder.segment
        pulled = PulledVideo()
        pulled.follow(segment)
        assert pulled.take() is not None and pulled.take() is None  # nothing new since
        for n in (2, 3, 4, 5):
            _message(holder, _image(64, 36, 10 * n), n)
        newest = reader.newest(segment)
        assert newest is not None
        # Frames 2-4 were never looked at: a puller takes the newest only.
        assert (newest.width, newest.height, newest.sequence) == (64, 36, 5)
        assert (newest.pts_us, newest.pixel_format) == (200_000, media_pb2.PIXEL_FORMAT_I420)
        assert [p.stride for p in newest.planes] == [64, 32, 32]
        assert newest.shared.stamp == 5 and reader.newest(segment, after=5) is None
        np.testing.assert_array_equal(proto_to_i420(newest), _image(64, 36, 50))
        taken = pulled.take()
        assert taken is not None and taken.sequence == 5
    finally:
        holder.close()


def test_a_pulled_frame_whose_slot_comes_round_again_is_gone_not_torn() -> None:
    holder = RingHolder(slots=2)
    try:
        reader = SharedMemoryReader()
        _message(holder, _image(32, 18, 1), 1)
        newest = reader.newest(holder.segment)
        assert newest is not None
        _message(holder, _image(32, 18, 2), 2)
        _message(holder, _image(32, 18, 3), 3)  # the producer came round to its slot
        with pytest.raises(FrameGone):
            video_planes(newest)
        # A slot caught while it is rewritten (its stamp zeroed) is refused as well.
        ring = holder.ring
        assert ring is not None
        ring._headers[(3 - 1) % 2]["stamp"] = 0
        with pytest.raises(FrameGone, match="rewritten"):
            reader.newest(holder.segment)
    finally:
        holder.close()
    with pytest.raises(FrameGone):
        SharedMemoryReader().newest(holder.ring.name if holder.ring else "baycast-0-gone")


def test_a_file_that_is_not_a_ring_is_refused() -> None:
    path = SHM_DIR / f"{shared_memory.PREFIX}{os.getpid()}-notaring"
    path.write_bytes(bytes(2 * shared_memory.PAGE))
    try:
        with pytest.raises(ValueError, match="not a frame ring"):
            SharedMemoryReader().newest(path.name)
    finally:
        path.unlink()
