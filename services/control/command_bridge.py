"""Operators' commands onto the bus: the same proto commands `baycast ctl` sends, one code path.

`send` checks the operator's role for the command's kind (`roles.py`), sends it on the service's
subject through the NATS user of the operator's role (`role_buses.py`: the bus checks the role
again) with the operator's id in `Baycast-Operator` (the service applying it may log who asked),
and maps the service's error reply back to its code. Every state-changing command, applied or
refused by its service, is appended to the production's as-run log with a sentence for people.
A command id from the client (`Baycast-Command-Id` or `Idempotency-Key`) is passed on as the NATS
command id, prefixed with the operator's id so two operators' keys never meet: a retried HTTP
request gets the first reply again and is applied, and logged, once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping

import structlog
from google.protobuf.message import Message

from services.common import errors
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import (
    distribution_pb2,
    exchange_pb2,
    graphics_pb2,
    mixer_pb2,
    rundown_pb2,
)
from services.common.media import now_us
from services.control import metrics, narrator, roles
from services.control.access import Caller
from services.control.asrun import AsRunLog
from services.control.role_buses import RoleBuses

# service -> (command, reply, subject after prod.<prod>.)
TARGETS: dict[str, tuple[type[Message], type[Message], tuple[str, ...]]] = {
    "mixer": (mixer_pb2.MixerCommand, mixer_pb2.MixerState, ("mixer", "cmd")),
    "rundown": (rundown_pb2.RundownCommand, rundown_pb2.RundownStatus, ("rundown", "cmd")),
    "gfx": (graphics_pb2.GfxCommand, graphics_pb2.GfxReply, ("gfx", "cmd")),
    "dist": (distribution_pb2.DistCommand, distribution_pb2.DistReply, ("dist", "cmd")),
    "exchange": (exchange_pb2.ExchangeCommand, exchange_pb2.ExchangeReply, ("exchange", "cmd")),
}
LOGGED_IDS = 4096

log = structlog.get_logger("control.commands")


def worth_logging(command: Message) -> bool:
    """Not every T-bar position: only where the hand lets go (complete, or all the way back)."""
    if isinstance(command, mixer_pb2.MixerCommand) and command.WhichOneof("command") == "manual":
        return not 0 < command.manual.position < 1
    return True


class CommandBridge:
    def __init__(
        self,
        buses: RoleBuses,
        asrun: AsRunLog,
        source_names: Callable[[str], Mapping[str, str]],
        timeout_s: float,
    ) -> None:
        self.buses = buses
        self.asrun = asrun
        self.source_names = source_names
        self.timeout_s = timeout_s
        self._logged: OrderedDict[str, None] = OrderedDict()

    async def send(
        self, caller: Caller, production: str, service: str, command: Message, key: str = ""
    ) -> Message:
        """Send `command` for `caller`; the service's reply, or its error raised."""
        kind = roles.command_kind(service, command)
        try:
            roles.authorize(caller.role, kind)
        except errors.PermissionDenied:
            metrics.COMMANDS.labels(kind, "PERMISSION_DENIED").inc()
            log.info("command_refused", operator=caller.id, production=production, kind=kind)
            raise
        command_id = f"{caller.id}:{key}" if key else None
        try:
            reply = await self.request(
                production, service, command, caller.id, command_id, self.buses.bus(caller.role)
            )
        except errors.BaycastError as exc:
            metrics.COMMANDS.labels(kind, exc.code).inc()
            if roles.is_write(kind):
                await self._log(caller, production, kind, command, None, exc, command_id)
            raise
        metrics.COMMANDS.labels(kind, "ok").inc()
        if roles.is_write(kind) and worth_logging(command):
            await self._log(caller, production, kind, command, reply, None, command_id)
        return reply

    async def request(
        self,
        production: str,
        service: str,
        command: Message,
        operator: str = "",
        command_id: str | None = None,
        bus: Bus | None = None,
    ) -> Message:
        """The bare request (no role check, no log): also the service's own reads (on the
        service's own connection unless `bus` is given)."""
        _command_type, reply_type, suffix = TARGETS[service]
        return await (bus or self.buses.service_bus).request(
            subject("prod", production, *suffix),
            command,
            reply_type,
            timeout=self.timeout_s,
            command_id=command_id,
            operator=operator,
        )

    async def read(
        self, production: str, service: str, command: Message, _reply_type: type[Message]
    ) -> Message:
        return await self.request(production, service, command)

    async def _log(
        self,
        caller: Caller,
        production: str,
        kind: str,
        command: Message,
        reply: Message | None,
        error: errors.BaycastError | None,
        command_id: str | None,
    ) -> None:
        # A retry of a command already answered is not logged again; one the service never
        # answered (unavailable) may still be applied by the retry.
        if command_id is not None and not isinstance(error, errors.Unavailable):
            if command_id in self._logged:
                return
            self._logged[command_id] = None
            while len(self._logged) > LOGGED_IDS:
                self._logged.popitem(last=False)
        names = self.source_names(production)
        entry = rundown_pb2.AsRunEntry(
            production=production,
            time_us=now_us(),
            segment=-1,  # not a rundown cue
            cue=kind,
            detail=narrator.describe(kind, caller.name or caller.id, command, reply, names),
            ok=error is None,
            error=f"{error.code}: {error.message}" if error else "",
            operator=caller.id,
        )
        log.info(
            "command",
            operator=caller.id,
            production=production,
            kind=kind,
            ok=entry.ok,
            error=entry.error,
        )
        await self.asrun.append(entry)
