"""One production's outputs, and the program encoder they share while any of them runs.

The production is what moves between replicas as a whole (owned_productions.py): its outputs
take the same encoded packets, so one replica runs all of them or none.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from services.distribution.encoder import ProgramEncoder, Templates
from services.distribution.outputs import Output
from services.distribution.packet_queue import EncodedPacket
from services.distribution.srt_return import Returns

STOP_JOIN_S = 5.0
# A keyframe interval's packets at most (10 s of 25 fps video, its ladder and audio).
MAX_GOP_PACKETS = 3000


class Production:
    """One production's outputs, and its encoder while any output runs."""

    def __init__(
        self,
        name: str,
        make_encoder: Callable[[Production], ProgramEncoder],
        returns: Returns | None = None,
    ) -> None:
        self.name = name
        self.outputs: dict[str, Output] = {}
        self.encoder: ProgramEncoder | None = None
        self._make_encoder = make_encoder
        self._returns = returns
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._gop: list[EncodedPacket] = []

    def fan_out(self, packet: EncodedPacket) -> None:
        """Called by the encoder's thread with every packet."""
        if packet.starts_picture:
            self._gop = [packet]  # rebinding: a reader's snapshot stays whole
        elif self._gop:
            if len(self._gop) < MAX_GOP_PACKETS:
                self._gop.append(packet)
            else:
                self._gop = []  # never a backlog with a hole: none until the next keyframe
        for output in list(self.outputs.values()):
            if not output.spec.station:  # a return is fed by its own encodings (srt_return.py)
                output.queue.put(packet)

    def recent(self) -> list[EncodedPacket]:
        """The packets since the encoder's last keyframe (all renditions and the audio): an
        output connecting starts from them, as a media server's GOP cache does."""
        return list(self._gop)

    def templates(self) -> Templates | None:
        encoder = self.encoder
        return encoder.templates() if encoder is not None else None

    def ladder(self) -> frozenset[int]:
        """The HLS ladder renditions some running output takes (read by the encoder thread)."""
        heights: set[int] = set()
        for output in list(self.outputs.values()):
            if output.running:
                heights |= output.ladder
        return frozenset(heights)

    async def reconcile(self) -> None:
        """Encode while some output runs; stop encoding (and subscribing) when none does."""
        async with self._lock:
            if self._returns is not None:
                await self._returns.reconcile(self.name, list(self.outputs.values()))
            wanted = any(o.running and not o.spec.station for o in self.outputs.values())
            if wanted and self._task is None:
                self._gop = []  # a new encoder: a new timeline
                self.encoder = self._make_encoder(self)
                self._task = asyncio.create_task(self.encoder.run(), name=f"encoder-{self.name}")
            elif not wanted and self._task is not None:
                task, self._task, self.encoder = self._task, None, None
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def stop(self) -> None:
        for output in self.outputs.values():
            output.request_stop()
        await asyncio.gather(
            *(asyncio.to_thread(o.join, STOP_JOIN_S) for o in self.outputs.values())
        )
        await self.reconcile()
