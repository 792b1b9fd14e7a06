"""The handlers of the control room's HTTP API (the routes are in `routes.py`).

Handlers read and check what the request carries (path, query, body as canonical JSON), then
either read the show's state or hand a command to the `CommandBridge`. Authentication, the CSRF
and origin checks and the role check happen before any of that, from the route table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from google.protobuf.message import Message

from services.common import errors
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import (
    control_pb2,
    distribution_pb2,
    exchange_pb2,
    graphics_pb2,
    mixer_pb2,
    monitoring_pb2,
    rundown_pb2,
)
from services.common.kv_mirror import KvMirror
from services.control import canonical_json, event_stream
from services.control.access import Caller, Gatekeeper
from services.control.asrun import AsRunLog
from services.control.command_bridge import CommandBridge
from services.control.event_stream import EventHub
from services.control.login import LoginApi
from services.control.media_grants import MediaGrants
from services.control.pages import Pages
from services.control.replies import (
    json_reply,
    message_reply,
    to_dict,
)
from services.control.request_input import (
    check_query,
    command_key,
    production_id,
    read_json_body,
)
from services.control.routes import (
    DEFAULT_ASRUN_LIMIT,
    MAX_ASRUN_LIMIT,
    OPERATOR,
    ROUTES,
    Route,
)
from services.control.sessions import SessionBook
from services.control.settings import ControlSettings
from services.control.show_state import Event, ShowState

MAX_COMMAND_BYTES = 64 * 1024

Handler = Callable[[web.Request, Caller | None, Route], Awaitable[web.StreamResponse]]


class ControlApi:
    def __init__(
        self,
        settings: ControlSettings,
        bus: Bus,
        gate: Gatekeeper,
        sessions: SessionBook,
        bridge: CommandBridge,
        state: ShowState,
        hub: EventHub,
        productions: KvMirror[mixer_pb2.Production],
        asrun: AsRunLog,
        document: dict[str, Any],
        pages: Pages,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.gate = gate
        self.sessions = sessions
        self.bridge = bridge
        self.state = state
        self.hub = hub
        self.productions = productions
        self.asrun = asrun
        self.document = document
        self.logins = LoginApi(settings, gate, sessions)
        # Handlers that live with their noun; the rest are this class's.
        self.owners: tuple[object, ...] = (self.logins, pages, MediaGrants(settings))

    def add_routes(self, app: web.Application) -> None:
        for route in ROUTES:
            app.router.add_route(route.method, route.path, self._bind(route))

    def _bind(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        owner = next((o for o in self.owners if hasattr(o, route.handler)), self)
        method: Handler = self.command if route.service else getattr(owner, route.handler)

        known = {p.name for p in route.params if p.where == "query"}

        async def handle(request: web.Request) -> web.StreamResponse:
            if route.document:
                check_query(request, known)
            caller = None
            if route.auth == OPERATOR:
                caller = self.gate.authenticate(request)
                if route.writes:
                    self.gate.check_write(request, caller)
            return await method(request, caller, route)

        return handle

    # -- the document ----------------------------------------------------------------------------

    async def openapi(self, _request: web.Request, _c: Caller | None, _r: Route) -> web.Response:
        return json_reply(self.document)

    # -- state ---------------------------------------------------------------------------------

    def _production(self, request: web.Request) -> str:
        prod = production_id(request.match_info["prod"], "prod")
        if self.productions.get(prod) is None:
            raise errors.NotFound(f"no production {prod!r}", field="prod")
        return prod

    async def list_productions(
        self, _r: web.Request, caller: Caller | None, _rt: Route
    ) -> web.Response:
        assert caller is not None
        command = mixer_pb2.ProductionCommand(list=mixer_pb2.ProductionCommand.List())
        reply = await self.bus.request(
            subject("mixer", "production", "cmd"),
            command,
            mixer_pb2.ProductionReply,
            timeout=self.settings.read_timeout_s,
            operator=caller.id,
        )
        return message_reply(reply)

    async def _part(self, caller: Caller, prod: str, service: str, command: Message) -> Message:
        try:
            async with asyncio.timeout(self.settings.read_timeout_s):
                return await self.bridge.send(caller, prod, service, command)
        except TimeoutError:
            raise errors.Unavailable(
                f"no answer within {self.settings.read_timeout_s:g} s"
            ) from None

    async def show_production(
        self, request: web.Request, caller: Caller | None, _r: Route
    ) -> web.Response:
        assert caller is not None
        prod = self._production(request)
        production = self.productions.get(prod)
        assert production is not None
        cached = self.state.productions.get(prod)
        parts: dict[str, tuple[str, Message]] = {
            "mixer": ("mixer", mixer_pb2.MixerCommand(get=mixer_pb2.MixerCommand.Get())),
            "rundown": (
                "rundown",
                rundown_pb2.RundownCommand(status=rundown_pb2.RundownCommand.Status()),
            ),
            "graphics": ("gfx", graphics_pb2.GfxCommand(list=graphics_pb2.GfxList())),
            "outputs": ("dist", distribution_pb2.DistCommand(list=distribution_pb2.ListOutputs())),
        }
        if cached is None or cached.exchange is None:
            cues = exchange_pb2.ExchangeCommand(cues=exchange_pb2.ExchangeCommand.ListCues())
            parts["exchange"] = ("exchange", cues)
        results = await asyncio.gather(
            *(self._part(caller, prod, service, command) for service, command in parts.values()),
            return_exceptions=True,
        )
        body: dict[str, Any] = {"production": to_dict(production), "unavailable": []}
        for name, result in zip(parts, results, strict=True):
            if isinstance(result, errors.BaycastError):
                body["unavailable"].append(
                    {"part": name, "code": result.code, "message": result.message}
                )
            elif isinstance(result, BaseException):
                raise result
            elif isinstance(result, exchange_pb2.ExchangeReply):
                state = exchange_pb2.ExchangeState(production=prod, cues=result.cues)
                body["exchange"] = to_dict(state)
            else:
                body[name] = to_dict(result)
        if cached is not None and cached.exchange is not None:
            body["exchange"] = to_dict(cached.exchange)
        if cached is not None and cached.levels is not None:
            body["levels"] = to_dict(cached.levels)
        if cached is not None and cached.loudness is not None:
            body["loudness"] = to_dict(cached.loudness)
        return json_reply(body)

    async def list_sources(
        self, _request: web.Request, _c: Caller | None, _r: Route
    ) -> web.Response:
        entries = []
        for _, state in sorted(self.state.sources.items().items()):
            entry: dict[str, Any] = {"state": to_dict(state)}
            stats = self.state.stats.get(state.source)
            if stats is not None and state.online:
                entry["stats"] = to_dict(stats)
            entries.append(entry)
        return json_reply({"sources": entries})

    async def list_alerts(
        self, _request: web.Request, caller: Caller | None, _r: Route
    ) -> web.Response:
        assert caller is not None
        reply = await self.bus.request(
            subject("monitoring", "alerts"),
            monitoring_pb2.AlertsRequest(),
            monitoring_pb2.AlertList,
            timeout=self.settings.read_timeout_s,
            operator=caller.id,
        )
        return message_reply(reply)

    async def list_templates(
        self, request: web.Request, caller: Caller | None, _r: Route
    ) -> web.Response:
        """Graphics lists templates on any production's subject: the library is the service's."""
        assert caller is not None
        wanted = request.query.get("production")
        if wanted is not None:
            prod = production_id(wanted, "production")
        else:
            prod = next(iter(sorted(self.productions.items())), "templates")
        command = graphics_pb2.GfxCommand(templates=graphics_pb2.GfxTemplates())
        return message_reply(await self.bridge.send(caller, prod, "gfx", command))

    async def read_asrun(self, request: web.Request, _c: Caller | None, _r: Route) -> web.Response:
        prod = production_id(request.match_info["prod"], "prod")
        raw = request.query.get("limit", str(DEFAULT_ASRUN_LIMIT))
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_ASRUN_LIMIT:
            raise errors.InvalidArgument(f"limit is 1 to {MAX_ASRUN_LIMIT}", field="limit")
        try:
            entries = await self.asrun.recent(prod, int(raw))
        except errors.BaycastError:
            raise
        except Exception as exc:  # JetStream away
            raise errors.Unavailable(
                f"the as-run log cannot be read: {type(exc).__name__}"
            ) from None
        return json_reply({"production": prod, "entries": [to_dict(e) for e in entries]})

    async def stream_events(
        self, request: web.Request, caller: Caller | None, _r: Route
    ) -> web.StreamResponse:
        assert caller is not None
        prod: str | None = request.query.get("production")
        if prod is not None:
            production_id(prod, "production")
            if self.productions.get(prod) is None:
                raise errors.NotFound(f"no production {prod!r}", field="production")
        client = self.hub.open(caller, prod)
        hello = {**self.logins.me_body(caller), "production": prod or ""}
        hello.pop("csrfToken", None)

        async def snapshot() -> list[Event]:
            if prod is not None:
                await self.state.fill(prod, self.bridge.read, self.settings.read_timeout_s)
            return self.state.snapshot(prod)

        return await event_stream.stream(request, self.hub, client, hello, snapshot)

    # -- commands ------------------------------------------------------------------------------

    async def command(
        self, request: web.Request, caller: Caller | None, route: Route
    ) -> web.Response:
        assert caller is not None and isinstance(route.body, type)
        prod = self._production(request)
        command = canonical_json.parse(await read_json_body(request, MAX_COMMAND_BYTES), route.body)
        if isinstance(command, distribution_pb2.DistCommand) and command.production not in (
            "",
            prod,
        ):
            raise errors.InvalidArgument("production differs from the path's", field="production")
        key = command_key(request)
        reply = await self.bridge.send(caller, prod, route.service, command, key)
        return message_reply(reply)


def source_names(
    productions: KvMirror[mixer_pb2.Production], sources: KvMirror[control_pb2.SourceState]
) -> Callable[[str], Mapping[str, str]]:
    """Names of a production's sources as people know them: the production's, else ingest's."""

    def names(prod: str) -> Mapping[str, str]:
        out = {s.source: s.name for s in sources.values() if s.name}
        production = productions.get(prod)
        if production is not None:
            out.update({s.id: s.name for s in production.sources if s.name})
        return out

    return names
