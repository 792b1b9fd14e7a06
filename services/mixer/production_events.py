"""What a production tells the bus about itself while its frame clock runs: its state, its tally,
its audio levels and its clips' transport.

The clock's tick only notes what changed (synchronous, no I/O); after the tick, `flush` sends it.
Tally and what each source shows are kept here, compared tick to tick, so an event goes out when
they change and not every frame.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from google.protobuf.message import Message

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import mixer_pb2
from services.common.media import now_us
from services.mixer import metrics

STATE = "state"


class ProductionEvents:
    def __init__(
        self,
        bus: Bus,
        production: str,
        tally: mixer_pb2.Tally,
        publish_state: Callable[[], Awaitable[None]],
    ) -> None:
        self.bus = bus
        self.production = production
        self.tally = tally
        self.showing: dict[str, str] = {}
        self._publish_state = publish_state
        self._pending: list[tuple[str, Message | None]] = []

    def state_changed(self) -> None:
        self._pending.append((STATE, None))

    def clips(self, states: mixer_pb2.ClipStates) -> None:
        self._pending.append((subject("prod", self.production, "mixer", "clips"), states))

    def levels(self, levels: mixer_pb2.AudioLevels) -> None:
        self._pending.append((subject("prod", self.production, "mixer", "levels"), levels))

    def update_tally(self, tally: mixer_pb2.Tally) -> None:
        """The switcher's tally for this tick's pictures: an event (and a state) if it moved."""
        if list(tally.sources) != list(self.tally.sources):
            tally.time_us = now_us()
            self.tally = tally
            self._pending.append((subject("prod", self.production, "tally"), tally))
            self.state_changed()

    def update_showing(self, showing: dict[str, str]) -> None:
        """What each source shows (live, held, slate, backup...): a state when it moves between
        live and not (held counts as live: a frame or two late is not news)."""
        coarse = {s: ("live" if v == "held" else v) for s, v in showing.items()}
        if coarse != {s: ("live" if v == "held" else v) for s, v in self.showing.items()}:
            self.state_changed()
            metrics.SLATED.labels(self.production).set(sum(v == "slate" for v in coarse.values()))
        self.showing = showing

    async def flush(self) -> None:
        """Send what the ticks noted, in order."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        for where, payload in pending:
            with contextlib.suppress(Exception):
                if payload is None:
                    await self._publish_state()
                else:
                    await self.bus.publish(where, payload)
