"""Wiring of the control service: operators, the HTTP API, the event stream, the as-run log."""

from __future__ import annotations

import asyncio
import sys

from services.common.bus import PRODUCTIONS_BUCKET, subject
from services.common.credentials import CredentialBook
from services.common.gen.baycast.v1 import control_pb2, mixer_pb2, operators_pb2
from services.common.kv_mirror import KvMirror
from services.common.lifecycle import VERSION, BaseService, run
from services.common.settings import SettingsError, load_settings
from services.common.telemetry import configure_logging
from services.control import openapi
from services.control.access import Gatekeeper
from services.control.api import ControlApi, source_names
from services.control.asrun import AsRunLog
from services.control.command_bridge import CommandBridge
from services.control.event_stream import EventHub
from services.control.middleware import Middleware
from services.control.operators import OperatorRegistry
from services.control.pages import Pages
from services.control.role_buses import RoleBuses
from services.control.sessions import SessionBook
from services.control.settings import ControlSettings
from services.control.show_state import ShowState
from services.control.web_modules import load_web_modules

SOURCES_BUCKET = "sources"
OPERATOR_COMMANDS = subject("operator", "cmd")


class ControlService(BaseService[ControlSettings]):
    name = "control"

    def __init__(self, settings: ControlSettings) -> None:
        # The pages cannot load without their library: refuse before connecting to anything.
        self.web_modules = load_web_modules(settings.web_modules)
        super().__init__(settings)

    async def setup(self) -> None:
        s = self.settings
        # Media grants are signed here but never taken here (no grant secret in the book): they
        # open WebRTC sessions at ingest and distribution, not the control room.
        self.credentials = await CredentialBook.open(self.bus)
        self.productions = await KvMirror.open(self.bus, PRODUCTIONS_BUCKET, mixer_pb2.Production)
        self.sources = await KvMirror.open(self.bus, SOURCES_BUCKET, control_pb2.SourceState)
        self.registry = OperatorRegistry(self.credentials.operators)
        await self.bus.serve(
            OPERATOR_COMMANDS, operators_pb2.OperatorCommand, self.registry.handle, queue="control"
        )
        self.asrun = AsRunLog(self.bus)
        await self.asrun.ensure_stream()
        self.sessions = SessionBook(s.session_ttl_s, s.session_idle_s, s.max_sessions)
        self.gate = Gatekeeper(self.credentials, self.sessions, s)
        self.hub = EventHub(s.event_queue, s.max_event_clients)
        self.state = ShowState(
            self.bus, self.sources, self.hub.publish, lambda: bool(self.hub.clients)
        )
        await self.state.start()
        self.role_buses = RoleBuses(s, self.bus)
        await self.role_buses.connect(self.stopping)
        self.http.add_check(
            "nats-roles", lambda: (self.role_buses.connected, "a role's NATS user is not connected")
        )
        self.bridge = CommandBridge(
            self.role_buses,
            self.asrun,
            source_names(self.productions, self.sources),
            s.command_timeout_s,
        )
        self.api = ControlApi(
            s,
            self.bus,
            self.gate,
            self.sessions,
            self.bridge,
            self.state,
            self.hub,
            self.productions,
            self.asrun,
            openapi.document(VERSION),
            Pages(self.web_modules),
        )
        Middleware(s, self.gate.is_secure).install(self.http.app)
        self.api.add_routes(self.http.app)
        # A rotated or revoked token ends its sessions and streams as soon as the bucket says so.
        self.credentials.operators.on_change(lambda _key, _value: self.end_stale())
        self.productions.on_change(self._production_changed)
        self.spawn(self._credential_loop(), "credential-check")
        self.spawn(self.state.load_alerts(), "alerts-load")

    def _production_changed(self, key: str, value: mixer_pb2.Production | None) -> None:
        if value is None:
            self.state.forget(key)

    def end_stale(self) -> None:
        """End sessions and event streams whose operator's token changed, expired sessions too."""
        self.sessions.sweep()
        self.sessions.end_where(lambda s: self.gate.current(s.operator, s.fingerprint) is None)
        self.hub.drop_where(lambda c: not self.gate.still_valid(c.caller), "credential")

    async def _credential_loop(self) -> None:
        # The bucket's watch may lag or break (NATS away): look again on a clock as well.
        while True:
            await asyncio.sleep(self.settings.credential_check_s)
            self.end_stale()

    async def before_drain(self) -> None:
        self.hub.close()

    async def teardown(self) -> None:
        await self.role_buses.drain()
        await self.productions.close()
        await self.sources.close()
        await self.credentials.close()


def main() -> None:
    try:
        settings = load_settings(ControlSettings, "control")
        service = ControlService(settings)
    except SettingsError as exc:
        sys.exit(f"baycast control: {exc}")
    configure_logging(settings.log_format, settings.log_level)
    run(service)
