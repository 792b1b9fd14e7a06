"""Sound by reference between processes on one host: a rendition's chunks of samples in a ring.

A subscriber that pulls sound (`SubscribeRequest.pull_sound`, on the producer's host) is told the
rendition's ring once and reads, at its own clock, every chunk written since its last look: no
message per chunk (ADR 0029). The producer writes each chunk once for all such subscribers; a
chunk longer than a slot takes several, in order. A slot's header carries the chunk's stamp (0
while it is written), pts, capture time, sequence, rate, channels and length; the segment's first
page the stamp of the newest whole chunk. A reader copies a slot's samples out and checks its
stamp before and after; a chunk whose slot was reused first (the reader fell `slots` chunks
behind) is counted lost, never mixed up with a newer one.

The segments live beside the picture rings (shared_memory.py: same names, same clean-up, same
reader's mappings); a sound ring's magic tells them apart.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import structlog

from services.common.shared_memory import (
    HEADER,
    PAGE,
    READER,
    RING_HEADER,
    FrameGone,
    SharedMemoryReader,
    create_segment,
)

SOUND_MAGIC = b"baycastS"
SOUND_SLOT_HEADER = np.dtype(
    [
        ("stamp", "<u8"),
        ("pts_us", "<i8"),
        ("capture_time_us", "<i8"),
        ("sequence", "<u8"),
        ("sample_rate", "<u4"),
        ("channels", "<u4"),
        ("samples", "<u4"),
    ]
)
# Three pages a slot: 63 ms of 48 kHz stereo (a 40 ms message of ingest's, a 1024-sample AAC frame
# pair, fits one); 64 slots: 2.5 s of 40 ms chunks before a reader that stopped looking loses any.
SOUND_SLOT_SIZE = 3 * PAGE
SOUND_SLOTS = 64
SAMPLE_BYTES = 2  # signed 16-bit, interleaved

log = structlog.get_logger("media.sound_ring")


@dataclass(frozen=True)
class SoundChunk:
    """Samples read out of a sound ring: int16 of shape (samples, channels), the reader's own."""

    samples: np.ndarray
    sample_rate: int
    pts_us: int
    capture_time_us: int
    sequence: int


class SoundRing:
    """A producer's ring of `slots` sound slots of `slot_size` bytes each, in one segment.
    Written from one thread."""

    def __init__(self, slots: int = SOUND_SLOTS, slot_size: int = SOUND_SLOT_SIZE) -> None:
        if slot_size % PAGE or slot_size <= HEADER:
            raise ValueError(f"a sound slot is whole pages: {slot_size}")
        self.slots, self.slot_size = slots, slot_size
        self.name, self.path, self._map = create_segment(PAGE + slot_size * slots)
        self._bytes = np.frombuffer(self._map, dtype=np.uint8)
        self._ring = np.ndarray((), dtype=RING_HEADER, buffer=self._map)
        self._ring["magic"], self._ring["slots"], self._ring["slot_size"] = (
            SOUND_MAGIC,
            slots,
            slot_size,
        )
        self._headers = np.ndarray(
            (slots,), dtype=SOUND_SLOT_HEADER, buffer=self._map, offset=PAGE, strides=(slot_size,)
        )
        self._stamp = 0

    @property
    def stamp(self) -> int:
        """The newest chunk's stamp (0: none written yet)."""
        return self._stamp

    def write(
        self,
        samples: np.ndarray,
        sample_rate: int,
        *,
        pts_us: int,
        capture_time_us: int = 0,
        sequence: int = 0,
    ) -> None:
        """Write int16 `samples` of shape (samples, channels) into the next slots (as many as
        they take; each piece's pts follows from the samples before it)."""
        if samples.ndim != 2 or samples.shape[1] not in (1, 2) or samples.dtype != np.int16:
            raise ValueError(f"sound is int16 (samples, 1 or 2 channels): {samples.shape}")
        channels = samples.shape[1]
        per_slot = (self.slot_size - HEADER) // (SAMPLE_BYTES * channels)
        flat = np.ascontiguousarray(samples).reshape(-1).view(np.uint8)
        for start in range(0, samples.shape[0], per_slot):
            count = min(per_slot, samples.shape[0] - start)
            slot = self._stamp % self.slots
            header = self._headers[slot]
            header["stamp"] = 0  # being written
            pos = PAGE + slot * self.slot_size + HEADER
            first = start * channels * SAMPLE_BYTES
            size = count * channels * SAMPLE_BYTES
            self._bytes[pos : pos + size] = flat[first : first + size]
            header["pts_us"] = pts_us + start * 1_000_000 // sample_rate
            header["capture_time_us"] = capture_time_us
            header["sequence"] = sequence
            header["sample_rate"], header["channels"], header["samples"] = (
                sample_rate,
                channels,
                count,
            )
            self._stamp += 1
            header["stamp"] = self._stamp
            self._ring["newest"] = self._stamp  # after the slot's stamp: a reader finds it whole

    def close(self) -> None:
        """Unlink the segment: no new reader can open it; mappings end with their last user."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class PulledSound:
    """A subscriber's view of a rendition's sound ring: every chunk written since its last look.

    `sound_ring` messages of the subscription set the segment and the first chunk (`follow`;
    without a first chunk the first look starts at the ring's newest).
    """

    def __init__(self, reader: SharedMemoryReader = READER) -> None:
        self.reader = reader
        self.segment = ""
        self.next = 0  # the stamp of the next chunk to read (0: the newest at the next look)
        self.lost = 0  # chunks whose slots were reused before they were read

    def follow(self, segment: str, first: int = 0) -> None:
        if segment != self.segment:
            self.segment, self.next = segment, first

    def take(self) -> list[SoundChunk]:
        """The chunks written since the last look, oldest first. FrameGone when the ring has
        ended (nothing more will come from it); ValueError when the segment is not a sound ring
        or a slot is malformed."""
        if not self.segment:
            return []
        try:
            data = self.reader.open(self.segment)
        except FileNotFoundError:
            self.segment = ""
            raise FrameGone("the sound ring has ended") from None
        if data.size < PAGE:
            raise ValueError(f"{self.segment} is not a sound ring")
        ring = data[: RING_HEADER.itemsize].view(RING_HEADER)[0]
        newest, slots, slot_size = int(ring["newest"]), int(ring["slots"]), int(ring["slot_size"])
        if (
            bytes(ring["magic"]) != SOUND_MAGIC
            or slot_size % PAGE
            or slot_size <= HEADER
            or PAGE + slots * slot_size > data.size
        ):
            raise ValueError(f"{self.segment} is not a sound ring")
        first = self.next or newest
        if newest < first:
            return []
        # The slot after the newest may be being written: the oldest readable is slots - 1 back.
        oldest = max(1, newest - slots + 2)
        if first < oldest:
            self.lost += oldest - first
            first = oldest
        chunks = []
        for stamp in range(first, newest + 1):
            chunk = _read_slot(data, PAGE + (stamp - 1) % slots * slot_size, slot_size, stamp)
            if chunk is None:
                self.lost += 1
            else:
                chunks.append(chunk)
        self.next = newest + 1
        return chunks

    def chunks(self) -> list[SoundChunk]:
        """`take` for a reader that goes on whatever happens: nothing while the ring has ended
        (its subscription names the next one, or ends), and a ring that is not sound is let go
        of (logged)."""
        try:
            return self.take()
        except FrameGone:
            return []
        except ValueError as exc:
            log.warning("sound_ring_unreadable", segment=self.segment, error=str(exc))
            self.follow("")
            return []


def _read_slot(data: np.ndarray, offset: int, slot_size: int, stamp: int) -> SoundChunk | None:
    """The chunk of `stamp` in the slot at `offset` (None: the slot holds another by now)."""
    header = data[offset : offset + SOUND_SLOT_HEADER.itemsize].view(SOUND_SLOT_HEADER)[0].copy()
    if int(header["stamp"]) != stamp:
        return None
    channels, count = int(header["channels"]), int(header["samples"])
    size = count * channels * SAMPLE_BYTES
    if channels not in (1, 2) or HEADER + size > slot_size or not header["sample_rate"]:
        raise ValueError(f"a sound slot of {count} samples of {channels} channels")
    start = offset + HEADER
    samples = data[start : start + size].copy().view("<i2").reshape(count, channels)
    if int(data[offset : offset + 8].view("<u8")[0]) != stamp:
        return None  # rewritten while it was copied
    return SoundChunk(
        samples,
        int(header["sample_rate"]),
        int(header["pts_us"]),
        int(header["capture_time_us"]),
        int(header["sequence"]),
    )
