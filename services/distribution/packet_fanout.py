"""One encoded stream, many receivers: the fan-out between a live encoding and its viewers.

An encoding (a return's picture, a station's mix-minus in Opus) hands each `av.Packet` to
`Fanout.publish`, which puts the same packet into every receiver's `PacketInbox` and never
waits. An inbox is bounded: a viewer too slow for its video drops what waits and everything up
to the next keyframe (and the encoding is asked for one), so it resumes on a decodable picture;
audio just loses its oldest packets. An inbox may start paused: it counts as a receiver (the
encoding keeps running for it) but takes nothing until `resume()`, so a WebRTC viewer still
connecting does not collect a backlog it would then send in one burst. A receiver may also be
anything else with `put` and `close`: a WHEP viewer's `RtpStream` sends each packet at once, in
`publish` (`rtp_stream.py`). Everything here runs on the event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Protocol, TypeVar

import av

DEFAULT_MAX_PACKETS = 120  # ~2 s of 540p video, ~5 s of 40 ms audio


class PacketReceiver(Protocol):
    """What `Fanout.publish` hands packets to."""

    def put(self, packet: av.Packet) -> None: ...

    def close(self) -> None: ...


R = TypeVar("R", bound=PacketReceiver)


class PacketInbox:
    """One receiver's queue of packets of one stream."""

    def __init__(
        self,
        *,
        video: bool,
        max_packets: int = DEFAULT_MAX_PACKETS,
        on_overflow: Callable[[], None] | None = None,
        paused: bool = False,
    ) -> None:
        self.video = video
        self.max_packets = max_packets
        self.dropped = 0
        self.closed = False
        self.paused = paused
        self._items: deque[av.Packet] = deque()
        self._event = asyncio.Event()
        self._await_keyframe = video  # a video receiver starts on a keyframe
        self._on_overflow = on_overflow

    def __len__(self) -> int:
        return len(self._items)

    @property
    def waiting_for_keyframe(self) -> bool:
        return self._await_keyframe

    def resume(self) -> None:
        """Start taking packets (video: from the next keyframe), dropping any that wait."""
        self.paused = False
        self._items.clear()
        self._await_keyframe = self.video

    def put(self, packet: av.Packet) -> None:
        if self.closed or self.paused:
            return
        if self._await_keyframe:
            if not packet.is_keyframe:
                return
            self._await_keyframe = False
        if len(self._items) >= self.max_packets:
            if self.video:
                self.dropped += len(self._items)
                self._items.clear()
                if not packet.is_keyframe:
                    self.dropped += 1
                    self._await_keyframe = True
                    if self._on_overflow is not None:
                        self._on_overflow()
                    return
            else:
                self._items.popleft()
                self.dropped += 1
        self._items.append(packet)
        self._event.set()

    async def get(self) -> av.Packet | None:
        """The next packet; None once closed."""
        while not self._items:
            if self.closed:
                return None
            self._event.clear()
            await self._event.wait()
        return self._items.popleft()

    def close(self) -> None:
        self.closed = True
        self._items.clear()
        self._event.set()


class Fanout:
    """The receivers of one encoded stream."""

    def __init__(self) -> None:
        self.inboxes: list[PacketReceiver] = []
        self.packets = 0
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.inboxes)

    def add(self, inbox: R) -> R:
        if inbox not in self.inboxes:
            self.inboxes.append(inbox)
        return inbox

    def remove(self, inbox: PacketReceiver) -> None:
        if inbox in self.inboxes:
            self.inboxes.remove(inbox)
        inbox.close()

    def publish(self, packet: av.Packet) -> None:
        self.packets += 1
        self.bytes += packet.size
        for inbox in self.inboxes:
            inbox.put(packet)

    def close(self) -> None:
        for inbox in list(self.inboxes):
            self.remove(inbox)
