"""Encoded packets and the bounded queue in front of each output.

The encoder hands every output the same `EncodedPacket` (immutable bytes plus timing); each output
makes its own `av.Packet` from it, since muxing takes ownership of a packet. A queue never blocks
the encoder: past its bound it empties and drops everything up to the next video keyframe, so the
receiver resumes on a decodable picture, and counts what it dropped.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

# The encoder adds a packet to its backlog before putting it into the queues: at most the newest
# few of a backlog can reach `put` again after `open` took them.
BACKLOG_OVERLAP = 8


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    video: bool
    data: bytes
    pts: int
    dts: int
    keyframe: bool
    time_base: Fraction
    rung: int = 0  # 0: the main encode; else the height of an HLS ladder rendition

    @property
    def seconds(self) -> float:
        return float(self.pts * self.time_base)

    @property
    def starts_picture(self) -> bool:
        """A packet a receiver can start decoding video from."""
        return self.video and self.keyframe and self.rung == 0


class PacketQueue:
    """Thread-safe, bounded by packets and bytes; drops to the next keyframe when full."""

    def __init__(
        self, max_packets: int, max_bytes: int, rungs: frozenset[int] = frozenset({0})
    ) -> None:
        self.max_packets = max_packets
        self.rungs = rungs
        self.max_bytes = max_bytes
        self.dropped = 0
        self._items: deque[EncodedPacket] = deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._open = False
        self._await_keyframe = True
        self._dropping = False  # waiting for a keyframe after an overflow: drops are counted
        self._backlog_tail: list[EncodedPacket] = []  # the newest packets `open` queued

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def open(self, recent: Callable[[], Sequence[EncodedPacket]] = tuple) -> None:
        """Start taking packets, from a keyframe on (a new connection): the first of `recent()`
        (the encoder's packets since its last keyframe, so the receiver starts at once), else
        the next one to come.

        `recent()` is read with the lock held: a packet the encoder adds to it meanwhile waits
        in `put` and is then recognised as already queued, so none is lost or sent twice. A
        backlog larger than the queue's bounds is not taken (it would only be dropped)."""
        with self._cond:
            self._items.clear()
            self._bytes = 0
            self._open = True
            self._await_keyframe = True
            self._dropping = False
            backlog = recent()
            taken = [p for p in backlog if p.rung in self.rungs]
            if len(taken) >= self.max_packets or sum(len(p.data) for p in taken) > self.max_bytes:
                return  # more than the queue holds: start on the next keyframe, as before
            for packet in backlog:
                self._put(packet)
            self._backlog_tail = list(backlog[-BACKLOG_OVERLAP:])

    def close(self) -> None:
        """Stop taking packets (not connected): what arrives now is discarded, not counted."""
        with self._cond:
            self._open = False
            self._items.clear()
            self._bytes = 0
            self._cond.notify_all()

    def put(self, packet: EncodedPacket) -> None:
        with self._cond:
            self._put(packet)

    def _put(self, packet: EncodedPacket) -> None:
        """`put` with the lock held."""
        if not self._open or packet.rung not in self.rungs:
            return
        if self._backlog_tail:
            if any(packet is queued for queued in self._backlog_tail):
                return  # in the backlog `open` queued
            self._backlog_tail = []
        if self._await_keyframe:
            if not packet.starts_picture:
                self.dropped += self._dropping
                return
            self._await_keyframe = self._dropping = False
        size = len(packet.data)
        if len(self._items) >= self.max_packets or self._bytes + size > self.max_bytes:
            # The receiver is too slow: drop what waits and everything up to the next keyframe.
            self.dropped += len(self._items)
            self._items.clear()
            self._bytes = 0
            if not packet.starts_picture:
                self.dropped += 1
                self._await_keyframe = self._dropping = True
                return
        self._items.append(packet)
        self._bytes += size
        self._cond.notify()

    def get(self, timeout: float) -> EncodedPacket | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            packet = self._items.popleft()
            self._bytes -= len(packet.data)
            return packet
