"""Tally duty: one distribution replica at a time sends the stations' TSL UMD tally.

A station's tally device takes one TCP connection and lights what each datagram says; two
replicas sending would fight over the connection and double the datagrams. So tally is a unit of
its own (docs/adr/0015), `tally`, held by one replica through a lease in `distribution-tally-leases`
(a bucket apart from the productions' leases, so it costs nothing of a replica's CPU budget for
productions). The replica holding it runs the senders (services/distribution/tally_out.py); when it
dies, another takes the duty within `lease_seconds` + `lease_renew_seconds` and sends the current
state at once; when it drains, it hands the duty over at once.
"""

from __future__ import annotations

from services.common.bus import Bus
from services.common.steward import Steward
from services.distribution.settings import DistributionSettings
from services.distribution.tally_out import TallyOut

SERVICE = "distribution-tally"
UNIT = "tally"


class TallyDuty:
    def __init__(self, bus: Bus, settings: DistributionSettings, tally_out: TallyOut) -> None:
        self.tally_out = tally_out
        self.steward = Steward(
            bus,
            SERVICE,
            settings.instance,
            start=self._take,
            stop=self._leave,
            wanted=self._wanted,
            lease_seconds=settings.lease_seconds,
            renew_seconds=settings.lease_renew_seconds,
        )

    async def open(self) -> None:
        await self.steward.open()

    async def close(self) -> None:
        """Hand the duty over (the senders stop, the lease is released)."""
        await self.steward.close()

    async def _wanted(self) -> set[str]:
        return {UNIT}

    async def _take(self, _unit: str) -> None:
        self.tally_out.send()

    async def _leave(self, _unit: str) -> None:
        await self.tally_out.stop_sending()
