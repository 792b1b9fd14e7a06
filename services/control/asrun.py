"""The as-run log as the control room uses it: every command it bridges for an operator is
appended to the show's one log (services/common/asrun.py), and pages read its newest entries."""

from __future__ import annotations

from services.common.asrun import ensure_asrun_stream, recent_asrun, write_asrun
from services.common.bus import Bus
from services.common.gen.baycast.v1 import rundown_pb2
from services.control import metrics


class AsRunLog:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def ensure_stream(self) -> None:
        await ensure_asrun_stream(self.bus)

    async def append(self, entry: rundown_pb2.AsRunEntry) -> None:
        """Store one entry; a failure loses the entry, never the command (it is logged)."""
        if not await write_asrun(self.bus, entry):
            metrics.ASRUN_NOT_STORED.inc()

    async def recent(self, production: str, limit: int) -> list[rundown_pb2.AsRunEntry]:
        """The newest `limit` entries of `production`, oldest first."""
        return await recent_asrun(self.bus, production, limit)
