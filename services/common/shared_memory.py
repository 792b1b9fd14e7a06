"""Video planes by reference between processes on one host: the media plane's fast path.

Raw frames through gRPC cost about 2 CPU-ms per MB between two processes (`make bench`, media
transport); a city wall moves ~80 MB/s each way. When the consumer of a `Subscribe` runs on the
same host (same kernel, same /dev/shm: `host_id()`), the producer writes each frame of the
rendition into the next slot of a ring in a /dev/shm segment, once for all such subscribers, and
sends only a `SharedPlanes` reference; the consumer copies the planes out and checks the slot's
stamp before and after (`SharedMemoryReader`). A frame whose slot was reused before it was read
is lost like a frame dropped by a slow subscriber's queue (`FrameGone`), never mixed up.

A slot's header also carries the frame's description (size, format, strides, pts, capture time,
sequence), and the segment's first page the stamp of the newest whole frame, so a consumer may
instead pull: read the newest frame at its own clock (`SharedMemoryReader.newest`), with no
message per frame at all.

Segments are files `baycast-<pid>-<random>` of mode 0600 under /dev/shm. The producer unlinks a
ring's file when the rendition ends; mappings go when the last reference does (a worker thread
may still be writing when a rendition ends, so nothing is unmapped by hand). An unlinked file's
memory stays allocated while any process maps it, so a consumer lets go of the segments whose
files have gone (each time it maps a new one, and at least every `SWEEP_EVERY_S` it reads):
a production whose layouts change makes new rings for its sources' boxes all the time. Files of
producers that died are removed by the next producer on the host.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import structlog

from services.common.gen.baycast.v1 import media_pb2

log = structlog.get_logger("media.shared")

SHM_DIR = Path("/dev/shm")
PREFIX = "baycast-"
PAGE = 4096
# A segment's first page: MAGIC, then the stamp of the newest whole frame (0: none yet), the
# number of slots and the size of a slot. The slots follow, each a HEADER and the planes.
MAGIC = b"baycast2"
RING_HEADER = np.dtype([("magic", "S8"), ("newest", "<u8"), ("slots", "<u8"), ("slot_size", "<u8")])
MAX_PLANES = 4
# A slot's header: the stamp (0 while the slot is written), then the frame's description.
SLOT_HEADER = np.dtype(
    [
        ("stamp", "<u8"),
        ("pts_us", "<i8"),
        ("capture_time_us", "<i8"),
        ("sequence", "<u8"),
        ("width", "<u4"),
        ("height", "<u4"),
        ("pixel_format", "<u4"),
        ("planes", "<u4"),
        ("strides", "<u4", (MAX_PLANES,)),
        ("lengths", "<u8", (MAX_PLANES,)),
    ]
)
HEADER = 128  # bytes before a slot's planes
READER_MAPS = 64  # segments a consumer process keeps mapped
# A consumer looks this often (at most) for mapped segments whose rings have ended.
SWEEP_EVERY_S = 1.0
# Ring slots beyond a subscriber's queue: a frame queued or in flight to its consumer does not
# have its slot reused under it unless the consumer falls this many frames further behind.
RING_SPARE_SLOTS = 8


class FrameGone(ValueError):
    """The shared slot holding a frame was reused for a newer one before the frame was read."""


_enabled = True


def configure(enabled: bool) -> None:
    """Turn the shared-memory path on or off for this process (BAYCAST_SHARED_MEMORY)."""
    global _enabled
    _enabled = enabled


@functools.cache
def _host_id() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        st = os.stat(SHM_DIR)
    except OSError:
        return ""
    if not os.access(SHM_DIR, os.W_OK | os.X_OK):
        return ""
    return f"{boot}:{st.st_dev}:{st.st_ino}"


def host_id() -> str:
    """This process's shared-memory host: the kernel's boot id and /dev/shm's identity.

    Two processes with the same id see the same /dev/shm files. Empty when the path is off or
    /dev/shm is not usable here.
    """
    return _host_id() if _enabled else ""


def accepts(request: media_pb2.SubscribeRequest) -> bool:
    """True when the subscriber of `request` can read planes from this process's segments."""
    mine = host_id()
    return bool(mine) and request.shared_memory_host == mine


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@functools.cache
def _remove_stale_segments() -> None:
    """Unlink segments left by producers of this host that are no longer running."""
    with contextlib.suppress(OSError):
        for path in SHM_DIR.glob(PREFIX + "*"):
            pid = path.name.removeprefix(PREFIX).split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    path.unlink()
                    log.info("stale_segment_removed", segment=path.name)


def create_segment(size: int) -> tuple[str, Path, mmap.mmap]:
    """A new segment of `size` bytes under /dev/shm (mode 0600), mapped read-write: its name,
    its path and the mapping. Segments of producers that died go first."""
    _remove_stale_segments()
    name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
    path = SHM_DIR / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        return name, path, mmap.mmap(fd, size)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    finally:
        os.close(fd)


class FrameRing:
    """A producer's ring of `slots` frame slots of up to `frame_bytes` each, in one segment."""

    def __init__(self, frame_bytes: int, slots: int) -> None:
        self.frame_bytes = frame_bytes
        self.slots = slots
        self.slot_size = -(-(HEADER + frame_bytes) // PAGE) * PAGE
        self.name, self.path, self._map = create_segment(PAGE + self.slot_size * slots)
        self._bytes = np.frombuffer(self._map, dtype=np.uint8)
        self._ring = np.ndarray((), dtype=RING_HEADER, buffer=self._map)
        self._ring["magic"], self._ring["slots"], self._ring["slot_size"] = (
            MAGIC,
            slots,
            self.slot_size,
        )
        self._headers = np.ndarray(
            (slots,), dtype=SLOT_HEADER, buffer=self._map, offset=PAGE, strides=(self.slot_size,)
        )
        self._next = 0
        self._stamp = 0

    def write(self, planes: Sequence[np.ndarray], video: media_pb2.VideoFrame) -> None:
        """Copy `planes` (flat uint8 arrays) into the next slot with `video`'s description (its
        size, format, planes' strides, times and sequence), and fill in `video.shared`."""
        total = sum(p.size for p in planes)
        if total > self.frame_bytes:
            raise ValueError(f"a {total}-byte frame does not fit {self.frame_bytes}-byte slots")
        if len(planes) > MAX_PLANES or len(video.planes) != len(planes):
            raise ValueError("one stride per plane, at most four planes")
        slot = self._next
        self._next = (slot + 1) % self.slots
        offset = PAGE + slot * self.slot_size
        header = self._headers[slot]
        header["stamp"] = 0  # being written
        pos = offset + HEADER
        for plane in planes:
            self._bytes[pos : pos + plane.size] = plane
            pos += plane.size
        header["pts_us"], header["capture_time_us"], header["sequence"] = (
            video.pts_us,
            video.capture_time_us,
            video.sequence,
        )
        header["width"], header["height"], header["pixel_format"] = (
            video.width,
            video.height,
            video.pixel_format,
        )
        count = len(planes)
        header["planes"] = count
        header["strides"][:count] = [p.stride for p in video.planes]
        header["lengths"][:count] = [p.size for p in planes]
        self._stamp += 1
        header["stamp"] = self._stamp
        self._ring["newest"] = self._stamp  # after the slot's stamp: a puller finds it whole
        shared = video.shared
        shared.segment, shared.offset, shared.stamp = self.name, offset, self._stamp
        shared.lengths[:] = [p.size for p in planes]

    def close(self) -> None:
        """Unlink the segment: no new reader can open it; mappings end with their last user."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class RingHolder:
    """The ring of one producer rendition, made on the first frame and remade when frames grow.

    Written from a worker thread and closed from the event loop: a lock orders the two, and a
    closed holder makes no new ring (a frame written after the close is refused with FrameGone).
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.ring: FrameRing | None = None
        self.closed = False
        self._lock = threading.Lock()

    @property
    def segment(self) -> str:
        """The current ring's segment ('' before the first frame)."""
        ring = self.ring
        return ring.name if ring is not None else ""

    def write(self, planes: Sequence[np.ndarray], video: media_pb2.VideoFrame) -> None:
        total = sum(p.size for p in planes)
        with self._lock:
            if self.closed:
                raise FrameGone("the rendition has ended")
            if self.ring is None or total > self.ring.frame_bytes:
                if self.ring is not None:
                    self.ring.close()
                self.ring = FrameRing(total, self.slots)
                log.debug("ring_created", segment=self.ring.name, bytes=total, slots=self.slots)
            self.ring.write(planes, video)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            if self.ring is not None:
                self.ring.close()
                self.ring = None


class SharedMemoryReader:
    """A consumer's mappings of producers' segments: those whose rings live, at most `capacity`
    (the most recently used). Used from the event loop and from worker threads alike."""

    def __init__(self, capacity: int = READER_MAPS, sweep_every_s: float = SWEEP_EVERY_S) -> None:
        self.capacity = capacity
        self.sweep_every_s = sweep_every_s
        self._maps: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._swept = time.monotonic()

    @property
    def mapped(self) -> list[str]:
        """The segments mapped, least recently used first."""
        with self._lock:
            return list(self._maps)

    def open(self, segment: str) -> np.ndarray:
        """The bytes of `segment`, mapped read-only. OSError when it cannot be opened."""
        with self._lock:
            data = self._maps.get(segment)
            if data is not None:
                self._maps.move_to_end(segment)
                if time.monotonic() - self._swept >= self.sweep_every_s:
                    self._let_go_of_ended()
                return data
        if "/" in segment or not segment.startswith(PREFIX):
            raise FileNotFoundError(f"not a media segment: {segment!r}")
        fd = os.open(SHM_DIR / segment, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            mapping = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        data = np.frombuffer(mapping, dtype=np.uint8)
        with self._lock:
            self._maps[segment] = data
            self._let_go_of_ended()
            while len(self._maps) > self.capacity:
                self._maps.popitem(last=False)
        return data

    def _let_go_of_ended(self) -> None:
        """Drop the mappings of segments whose files are gone: their rings have ended, and their
        memory is freed once nothing maps it (a read under way keeps its own reference). Called
        with the lock held; one stat per mapping."""
        self._swept = time.monotonic()
        for name in [name for name in self._maps if not (SHM_DIR / name).exists()]:
            del self._maps[name]
            log.debug("segment_let_go", segment=name)

    def read(self, shared: media_pb2.SharedPlanes) -> list[np.ndarray]:
        """A private copy of each plane. FrameGone if the slot was reused or the segment ended."""
        copy = self.read_all(shared)
        planes, pos = [], 0
        for length in shared.lengths:
            planes.append(copy[pos : pos + length])
            pos += length
        return planes

    def read_all(self, shared: media_pb2.SharedPlanes) -> np.ndarray:
        """A private copy of the planes one after the other, in one flat array (see `read`)."""
        data, start, stamp = self._slot(shared)
        copy = data[start : start + sum(shared.lengths)].copy()
        _check(stamp, shared, "while")
        return copy

    def copy_into(self, shared: media_pb2.SharedPlanes, planes: Sequence[np.ndarray]) -> None:
        """Copies the slot's planes into `planes`, writable arrays of `lengths` elements each in
        whatever shape (the rows of a frame's plane, its line padding left out): the one copy
        from a ring straight into a consumer's own frame. FrameGone as `read`."""
        if len(planes) != len(shared.lengths) or any(
            plane.size != length for plane, length in zip(planes, shared.lengths, strict=False)
        ):
            raise ValueError("the planes given do not match the shared frame's")
        data, pos, stamp = self._slot(shared)
        for plane, length in zip(planes, shared.lengths, strict=True):
            plane[...] = data[pos : pos + length].reshape(plane.shape)
            pos += length
        _check(stamp, shared, "while")

    def newest(self, segment: str, after: int = 0) -> media_pb2.VideoFrame | None:
        """The newest whole frame of the ring in `segment` if its stamp is not `after` (None:
        no frame yet, or none since `after`), described as a shared VideoFrame from its slot's
        header: read its planes like any shared frame's (`media.video_planes`), before the
        producer comes round to the slot again. FrameGone when the segment has ended or the slot
        is being rewritten; ValueError when the segment is not a ring."""
        try:
            data = self.open(segment)
        except FileNotFoundError:
            raise FrameGone(f"segment {segment} has ended") from None
        if data.size < PAGE:
            raise ValueError(f"{segment} is not a frame ring")
        ring = data[: RING_HEADER.itemsize].view(RING_HEADER)[0]
        if bytes(ring["magic"]) != MAGIC:
            raise ValueError(f"{segment} is not a frame ring")
        stamp, slots, slot_size = int(ring["newest"]), int(ring["slots"]), int(ring["slot_size"])
        if stamp == 0 or stamp == after:
            return None
        offset = PAGE + (stamp - 1) % slots * slot_size
        if slot_size % PAGE or offset + slot_size > data.size:
            raise ValueError(f"{segment} is not a frame ring")
        header = data[offset : offset + SLOT_HEADER.itemsize].view(SLOT_HEADER)[0].copy()
        count = int(header["planes"])
        if int(data[offset : offset + 8].view("<u8")[0]) != stamp or int(header["stamp"]) != stamp:
            raise FrameGone("the newest frame's slot is being rewritten")
        if not 0 < count <= MAX_PLANES:
            raise ValueError(f"{segment}: a slot of {count} planes")
        video = media_pb2.VideoFrame(
            width=int(header["width"]),
            height=int(header["height"]),
            pixel_format=media_pb2.PixelFormat.ValueType(int(header["pixel_format"])),
            pts_us=int(header["pts_us"]),
            capture_time_us=int(header["capture_time_us"]),
            sequence=int(header["sequence"]),
        )
        for stride in header["strides"][:count]:
            video.planes.add(stride=int(stride))
        video.shared.segment, video.shared.offset, video.shared.stamp = segment, offset, stamp
        video.shared.lengths[:] = [int(n) for n in header["lengths"][:count]]
        return video

    def _slot(self, shared: media_pb2.SharedPlanes) -> tuple[np.ndarray, int, np.ndarray]:
        """The segment's bytes, where the planes start in them, and the slot's stamp (checked)."""
        try:
            data = self.open(shared.segment)
        except FileNotFoundError:
            raise FrameGone(f"segment {shared.segment} has ended") from None
        start = shared.offset + HEADER
        if shared.offset < PAGE or shared.offset % PAGE or start + sum(shared.lengths) > data.size:
            raise ValueError("shared planes lie outside their segment")
        stamp = data[shared.offset : shared.offset + 8].view("<u8")
        _check(stamp, shared, "before")
        return data, start, stamp


def _check(stamp: np.ndarray, shared: media_pb2.SharedPlanes, when: str) -> None:
    if int(stamp[0]) != shared.stamp:
        raise FrameGone(f"the slot was reused {when} the frame was read")


READER = SharedMemoryReader()
