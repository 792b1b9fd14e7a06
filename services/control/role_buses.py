"""One NATS connection per control-room role: the bus enforces the roles too.

An operator's command goes out through the connection of the operator's role, whose NATS user
(`role_director`, `role_graphics`, `role_audio`, `role_viewer`: services/common/nats_accounts.py)
may publish only the verbs services/common/roles.py gives that role. So the server refuses a
graphics operator's cut even if the control service's own check (roles.py) were bypassed, and
the control service's own user sends nothing but reads.

Without NATS users (a plain local server: the tests, a development box), every role shares the
service's connection and roles are enforced at the control room's edge only; with users, the
four role URLs are required (settings.py).
"""

from __future__ import annotations

import asyncio

import structlog

from services.common.bus import Bus
from services.common.credentials import ROLE_NAMES
from services.common.roles import ROLE_USERS, Role
from services.control.settings import ControlSettings

log = structlog.get_logger("control.roles")


class RoleBuses:
    def __init__(self, settings: ControlSettings, service_bus: Bus) -> None:
        self.service_bus = service_bus
        urls = settings.role_nats_urls()
        self._own = {
            role: Bus(
                urls[role],
                f"control-{settings.instance}-{ROLE_NAMES[role]}",
                tls=settings.internal_tls.nats_context(),
            )
            for role in ROLE_USERS
            if urls.get(role)
        }

    @property
    def enforced(self) -> bool:
        """Whether each role has a connection (and the bus's permissions) of its own."""
        return len(self._own) == len(ROLE_USERS)

    async def connect(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(bus.connect(stop=stop) for bus in self._own.values()))
        if not self.enforced:
            log.warning("roles_enforced_at_the_edge_only", reason="no NATS user for each role")

    def bus(self, role: Role) -> Bus:
        """The connection `role`'s commands go out on."""
        return self._own.get(role, self.service_bus)

    @property
    def connected(self) -> bool:
        return all(bus.connected for bus in self._own.values())

    async def drain(self) -> None:
        await asyncio.gather(*(bus.drain() for bus in self._own.values()))
