"""Encoded packets and the bounded queue in front of each output.

The encoder hands every output the same `EncodedPacket` (immutable bytes plus timing); each output
makes its own `av.Packet` from it, since muxing takes ownership of a packet. A queue never blocks
the encoder: past its bound it empties and drops everything up to the next video keyframe, so the
receiver resumes on a decodable picture, and counts what it dropped.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction


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

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def open(self) -> None:
        """Start taking packets, from the next keyframe on (a new connection)."""
        with self._cond:
            self._items.clear()
            self._bytes = 0
            self._open = True
            self._await_keyframe = True
            self._dropping = False

    def close(self) -> None:
        """Stop taking packets (not connected): what arrives now is discarded, not counted."""
        with self._cond:
            self._open = False
            self._items.clear()
            self._bytes = 0
            self._cond.notify_all()

    def put(self, packet: EncodedPacket) -> None:
        with self._cond:
            if not self._open or packet.rung not in self.rungs:
                return
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
