"""The control room's HTTP API as data: one table drives the router and the OpenAPI document.

Each `Route` names its handler (a method of `ControlApi`), who may call it, what its body and
answer are (a proto message, by its canonical JSON, or a schema named in `openapi.py`), and the
status codes it answers with. `service.py` registers exactly these routes and `openapi.py`
documents exactly these, so the document cannot drift from the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from services.common.gen.baycast.v1 import (
    distribution_pb2,
    exchange_pb2,
    graphics_pb2,
    mixer_pb2,
    monitoring_pb2,
    rundown_pb2,
)

# Production ids as the services take them in subjects (graphics' and the mixer's rules).
PRODUCTION_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# A client's command id: printable ASCII without spaces.
COMMAND_ID = r"^[!-~]{1,128}$"
MAX_ASRUN_LIMIT = 1000
DEFAULT_ASRUN_LIMIT = 50

PUBLIC = "public"  # no credentials
LOGIN = "login"  # the token in the body
OPERATOR = "operator"  # a bearer token or a session cookie


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # path, query, header
    schema: dict[str, Any]
    description: str
    required: bool = False


PROD = Param(
    "prod", "path", {"type": "string", "pattern": PRODUCTION_ID}, "production id", required=True
)
COMMAND_ID_PARAMS = (
    Param(
        "Baycast-Command-Id",
        "header",
        {"type": "string", "pattern": COMMAND_ID},
        "your id for this command: a retried request with the same id is applied once",
    ),
    Param(
        "Idempotency-Key",
        "header",
        {"type": "string", "pattern": COMMAND_ID},
        "the same as Baycast-Command-Id (the first of the two present counts)",
    ),
)
CSRF = Param(
    "X-CSRF-Token",
    "header",
    {"type": "string"},
    "with the session cookie: the csrfToken of the session (POST /api/session, GET /api/me)",
)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: str
    summary: str
    auth: str = OPERATOR
    body: type[Message] | str | None = None
    reply: type[Message] | str | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    params: tuple[Param, ...] = ()
    # Commands: the body must set exactly one field of this oneof.
    oneof: str = ""
    # The service a command goes to (its as-run kind's prefix).
    service: str = ""
    content_type: str = "application/json"
    document: bool = True
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def writes(self) -> bool:
        """State-changing: a cookie-authenticated call needs the CSRF token and our origin."""
        return self.method not in ("GET", "HEAD")

    @property
    def operation_id(self) -> str:
        return self.handler

    @property
    def error_statuses(self) -> tuple[int, ...]:
        """Every error status it may answer: 400 always (an unknown query parameter)."""
        return tuple(sorted({400, *self.errors})) if self.document else self.errors


COMMAND_ERRORS = (400, 401, 403, 404, 409, 413, 415, 500, 503)
COMMAND_HELP = (
    "The body is the command message's canonical JSON with exactly one verb set; the answer is "
    "the service's reply. Reads are open to every operator; each write to the roles the role "
    "table names (GET /api/me lists the caller's). A refused command changes nothing and is "
    "answered {code, message, field} with the code's status. Writes are added to the "
    "production's as-run log with the operator's id."
)


def command(
    path: str, handler: str, service: str, body: type[Message], reply: type[Message], summary: str
) -> Route:
    return Route(
        "POST",
        path,
        handler,
        summary,
        body=body,
        reply=reply,
        errors=COMMAND_ERRORS,
        params=(PROD, *COMMAND_ID_PARAMS, CSRF),
        oneof="command",
        service=service,
        description=COMMAND_HELP,
        tags=("commands",),
    )


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/",
        "index",
        "the control room's page",
        auth=PUBLIC,
        content_type="text/html",
        document=False,
    ),
    Route(
        "GET",
        "/login",
        "login_page",
        "the login page",
        auth=PUBLIC,
        content_type="text/html",
        document=False,
    ),
    Route(
        "GET",
        "/static/{name}",
        "asset",
        "the pages' scripts and style",
        auth=PUBLIC,
        content_type="text/plain",
        document=False,
    ),
    Route(
        "GET",
        "/static/vendor/{name}",
        "web_module",
        "the pages' front-end library (Preact, htm) as ES modules",
        auth=PUBLIC,
        content_type="text/javascript",
        document=False,
    ),
    Route(
        "GET",
        "/api/openapi.json",
        "openapi",
        "this document",
        auth=PUBLIC,
        reply="OpenApiDocument",
        tags=("meta",),
    ),
    Route(
        "POST",
        "/api/session",
        "login",
        "log a browser in with an operator token: sets the session cookie",
        auth=LOGIN,
        body="LoginRequest",
        reply="Session",
        errors=(400, 401, 403, 413, 415, 429),
        description=(
            "Sets an HttpOnly, SameSite=Strict cookie (Secure over HTTPS) and answers the "
            "session's CSRF token, which every state-changing request made with the cookie must "
            "carry in X-CSRF-Token, from a page of this origin. A station's token is 403. "
            "Attempts are limited per client address (429 with Retry-After)."
        ),
        tags=("session",),
    ),
    Route(
        "DELETE",
        "/api/session",
        "logout",
        "log out: the session ends and its cookie is cleared",
        status=204,
        errors=(401, 403),
        params=(CSRF,),
        tags=("session",),
    ),
    Route(
        "GET",
        "/api/me",
        "me",
        "who is calling, with which role and permissions",
        reply="Me",
        errors=(401, 403),
        tags=("session",),
    ),
    Route(
        "POST",
        "/api/media-grant",
        "media_grant",
        "a short-lived stand-in for your token, for a WebRTC offer to ingest or distribution",
        reply="MediaGrant",
        errors=(401, 403, 429, 503),
        params=(CSRF,),
        description=(
            "A page holds a session cookie, not its operator's token, yet WHEP (distribution: "
            "the multiview, program, returns) and WHIP (ingest: the director's microphone) take "
            "a bearer. The grant is that bearer for about a minute, for the calling operator "
            "only, and void as soon as the operator's token is rotated or revoked; ask for a "
            "fresh one before each offer and each DELETE. It opens no route of this service. "
            "Limited per operator (429 with Retry-After); 503 when the platform shares no "
            "BAYCAST_MEDIA_GRANT_SECRET."
        ),
        tags=("session",),
    ),
    Route(
        "GET",
        "/api/productions",
        "list_productions",
        "every production and the mixer instance running it",
        reply=mixer_pb2.ProductionReply,
        errors=(401, 403, 503),
        tags=("state",),
    ),
    Route(
        "GET",
        "/api/productions/{prod}",
        "show_production",
        "one production: switcher, rundown, graphics, outputs, exchange",
        reply="ProductionView",
        errors=(400, 401, 403, 404),
        params=(PROD,),
        description=(
            "Each part is asked of its service at once; a part whose service does not answer "
            "is left out and named in `unavailable`."
        ),
        tags=("state",),
    ),
    command(
        "/api/productions/{prod}/mixer",
        "mixer_command",
        "mixer",
        mixer_pb2.MixerCommand,
        mixer_pb2.MixerState,
        "a switcher command: cut, auto, preview, layout, audio, ftb, take, talk, get",
    ),
    command(
        "/api/productions/{prod}/rundown",
        "rundown_command",
        "rundown",
        rundown_pb2.RundownCommand,
        rundown_pb2.RundownStatus,
        "a rundown command: load, start, next, prev, stop, status",
    ),
    command(
        "/api/productions/{prod}/graphics",
        "graphics_command",
        "gfx",
        graphics_pb2.GfxCommand,
        graphics_pb2.GfxReply,
        "a graphics command: show, hide, update, ticker_add, list, templates",
    ),
    command(
        "/api/productions/{prod}/outputs",
        "outputs_command",
        "dist",
        distribution_pb2.DistCommand,
        distribution_pb2.DistReply,
        "an output command: add, remove, start, stop, list",
    ),
    command(
        "/api/productions/{prod}/exchange",
        "exchange_command",
        "exchange",
        exchange_pb2.ExchangeCommand,
        exchange_pb2.ExchangeReply,
        "an exchange command: cue, clear, cues, viewers, feeds",
    ),
    Route(
        "GET",
        "/api/sources",
        "list_sources",
        "every source (contribution) with its latest stats",
        reply="Sources",
        errors=(401, 403),
        tags=("state",),
    ),
    Route(
        "GET",
        "/api/alerts",
        "list_alerts",
        "the alerts raised now (monitoring)",
        reply=monitoring_pb2.AlertList,
        errors=(401, 403, 503),
        tags=("state",),
    ),
    Route(
        "GET",
        "/api/graphics/templates",
        "list_templates",
        "the graphics templates and their fields",
        reply=graphics_pb2.GfxReply,
        errors=(400, 401, 403, 404, 503),
        params=(
            Param(
                "production",
                "query",
                {"type": "string", "pattern": PRODUCTION_ID},
                "ask on this production's subject (default: any production)",
            ),
        ),
        tags=("state",),
    ),
    Route(
        "GET",
        "/api/asrun/{prod}",
        "read_asrun",
        "the newest entries of a production's as-run log, oldest first",
        reply="AsRunLog",
        errors=(400, 401, 403, 503),
        params=(
            PROD,
            Param(
                "limit",
                "query",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_ASRUN_LIMIT,
                    "default": DEFAULT_ASRUN_LIMIT,
                },
                "how many entries",
            ),
        ),
        tags=("state",),
    ),
    Route(
        "GET",
        "/api/events",
        "stream_events",
        "the event stream (Server-Sent Events): a snapshot, then every change",
        reply="EventStream",
        content_type="text/event-stream",
        errors=(400, 401, 403, 404, 503),
        params=(
            Param(
                "production",
                "query",
                {"type": "string", "pattern": PRODUCTION_ID},
                "only this production's events (and the platform's: sources, alerts)",
            ),
        ),
        description=(
            "`hello` (the operator and the production), the current state as events, "
            "`snapshot`, then each change as `event: <name>` / `data: <canonical JSON>`. "
            "`x-events` names each event's message. A client that reads too slowly is "
            "dropped; EventSource reconnects and gets a fresh snapshot."
        ),
        tags=("state",),
    ),
)
