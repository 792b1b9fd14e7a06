"""The OpenAPI 3.1 document of the control room, built from the route table and the protos.

Nothing here is written twice: paths, methods, parameters, security and status codes come from
`routes.ROUTES`; bodies and answers are the JSON Schemas of the proto messages (`json_schema.py`)
plus a few small envelopes defined below around them.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from services.common.gen.baycast.v1 import (
    control_pb2,
    distribution_pb2,
    exchange_pb2,
    graphics_pb2,
    mixer_pb2,
    monitoring_pb2,
    operators_pb2,
    rundown_pb2,
)
from services.control import roles
from services.control.access import CSRF_HEADER, SESSION_COOKIE
from services.control.json_schema import COMPONENTS, SchemaBook, descriptor_of, require_one
from services.control.routes import LOGIN, OPERATOR, ROUTES, Route
from services.control.show_state import EVENTS, SNAPSHOT_EVENTS

Schema = dict[str, Any]

STATUS_TEXT = {
    400: "malformed: the body, a parameter or a field is invalid (`field` names it)",
    401: "no valid credentials: a missing, wrong or revoked token, or no session",
    403: "refused: a station's token, a role that may not do this, or (with the session "
    "cookie) a missing or foreign CSRF token or Origin",
    404: "no such production (or instance, output, cue ...)",
    409: "conflicts with the current state (already exists, changed meanwhile)",
    413: "the body is too large",
    415: "the body is not application/json",
    429: "too many attempts from this address: wait Retry-After seconds",
    500: "the service that handles it failed",
    503: "the service that answers it is not running, or is full: try again",
}
SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "an operator's token (`baycast ctl operator add`), for controllers "
        "and scripts",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": "a browser session from POST /api/session; state-changing requests also "
        f"need its CSRF token in {CSRF_HEADER} and this origin's Origin",
    },
}


def _role_line(role: operators_pb2.Role.ValueType, name: str) -> str:
    writes = sorted(roles.ROLE_WRITES[role])
    if role == operators_pb2.ROLE_DIRECTOR:
        what = "every command"
    elif writes:
        what = ", ".join(writes) + ", and every read"
    else:
        what = "reads only"
    return f"* **{name}**: {what}"


ROLES_TEXT = "\n".join(
    _role_line(role, name)
    for role, name in (
        (operators_pb2.ROLE_DIRECTOR, "director"),
        (operators_pb2.ROLE_GRAPHICS, "graphics"),
        (operators_pb2.ROLE_AUDIO, "audio"),
        (operators_pb2.ROLE_VIEWER, "viewer"),
    )
)
DESCRIPTION = f"""The control room of baycast: run a show from web pages or hardware controllers.

**Credentials.** Controllers and scripts send `Authorization: Bearer <operator token>`. Browsers
log in with `POST /api/session` (the token in the body, or from a login link's `#token=`) and then
use the session cookie; every state-changing request made with the cookie carries the session's
CSRF token in `{CSRF_HEADER}` and comes from this origin. A station's token is refused (403).

**Roles** (enforced here, for every command):
{ROLES_TEXT}

**Bodies** are the canonical proto3 JSON of the `baycast.v1` messages named in each operation:
lowerCamelCase fields, enums by name, 64-bit integers as strings; answers leave out fields at
their default (false, 0, "", empty lists). Errors are `{{code, message,
field}}` with the HTTP status of the code. Commands may carry `Baycast-Command-Id` (or
`Idempotency-Key`): a retried request is applied once.

**Events.** `GET /api/events` streams the show as Server-Sent Events (see its `x-events`)."""


def _proto(book: SchemaBook, message: type[Message]) -> Schema:
    return book.ref(descriptor_of(message))


def envelopes(book: SchemaBook) -> dict[str, Schema]:
    """The answers that wrap proto messages (and the login body)."""
    operator = _proto(book, operators_pb2.OperatorInfo)
    part_error = {
        "type": "object",
        "properties": {
            "part": {"type": "string"},
            "code": {"type": "string"},
            "message": {"type": "string"},
        },
        "required": ["part", "code", "message"],
        "additionalProperties": False,
    }
    me = {
        "operator": operator,
        "role": {"type": "string", "enum": ["director", "graphics", "audio", "viewer"]},
        "permissions": {"type": "array", "items": {"type": "string"}},
        "via": {"type": "string", "enum": ["bearer", "cookie"]},
        "exchangeUrl": {"type": "string", "description": "where WHEP feeds play from"},
        "ingestUrl": {
            "type": "string",
            "description": "where the director's microphone goes (WHIP /whip/talk/<operator>)",
        },
        "mediaGrants": {
            "type": "boolean",
            "description": "whether POST /api/media-grant gives grants (WHEP and WHIP work)",
        },
    }
    me_required = [
        "operator",
        "role",
        "permissions",
        "via",
        "exchangeUrl",
        "ingestUrl",
        "mediaGrants",
    ]
    return {
        "LoginRequest": {
            "type": "object",
            "properties": {"token": {"type": "string", "minLength": 1, "maxLength": 512}},
            "required": ["token"],
            "additionalProperties": False,
        },
        "Session": {
            "type": "object",
            "properties": {
                "operator": operator,
                "csrfToken": {"type": "string"},
                "expiresInS": {"type": "number"},
            },
            "required": ["operator", "csrfToken", "expiresInS"],
            "additionalProperties": False,
        },
        "Me": {
            "type": "object",
            "properties": {
                **me,
                "csrfToken": {"type": "string", "description": "with the session cookie only"},
            },
            "required": me_required,
            "additionalProperties": False,
        },
        "Hello": {
            "type": "object",
            "description": "the first event of a stream: who is connected, to which production",
            "properties": {
                **me,
                "production": {"type": "string", "description": "empty: every production"},
            },
            "required": [*me_required, "production"],
            "additionalProperties": False,
        },
        "ProductionView": {
            "type": "object",
            "properties": {
                "production": _proto(book, mixer_pb2.Production),
                "mixer": _proto(book, mixer_pb2.MixerState),
                "levels": _proto(book, mixer_pb2.AudioLevels),
                "loudness": _proto(book, monitoring_pb2.ProgramLoudness),
                "rundown": _proto(book, rundown_pb2.RundownStatus),
                "graphics": _proto(book, graphics_pb2.GfxReply),
                "outputs": _proto(book, distribution_pb2.DistReply),
                "exchange": _proto(book, exchange_pb2.ExchangeState),
                "unavailable": {"type": "array", "items": part_error},
            },
            "required": ["production", "unavailable"],
            "additionalProperties": False,
        },
        "Sources": {
            "type": "object",
            "properties": {
                "sources": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "state": _proto(book, control_pb2.SourceState),
                            "stats": _proto(book, control_pb2.SourceStats),
                        },
                        "required": ["state"],
                        "additionalProperties": False,
                    },
                }
            },
            "required": ["sources"],
            "additionalProperties": False,
        },
        "AsRunLog": {
            "type": "object",
            "properties": {
                "production": {"type": "string"},
                "entries": {"type": "array", "items": _proto(book, rundown_pb2.AsRunEntry)},
            },
            "required": ["production", "entries"],
            "additionalProperties": False,
        },
        "MediaGrant": {
            "type": "object",
            "properties": {
                "grant": {
                    "type": "string",
                    "description": "send it as `Authorization: Bearer <grant>` to WHEP or WHIP",
                },
                "expiresUs": {"type": "integer", "description": "its expiry, Unix microseconds"},
            },
            "required": ["grant", "expiresUs"],
            "additionalProperties": False,
        },
        "OpenApiDocument": {"type": "object"},
        "EventStream": {"type": "string", "description": "text/event-stream"},
        "Error": _proto(book, control_pb2.ErrorReply),
    }


def _schema(book: SchemaBook, what: type[Message] | str) -> Schema:
    if isinstance(what, str):
        return {"$ref": COMPONENTS + what}
    return _proto(book, what)


def _body_schema(book: SchemaBook, route: Route) -> Schema:
    assert route.body is not None
    schema = _schema(book, route.body)
    if route.oneof and not isinstance(route.body, str):
        return {"allOf": [schema, require_one(descriptor_of(route.body), route.oneof)]}
    return schema


def _responses(book: SchemaBook, route: Route) -> dict[str, Any]:
    error = {"application/json": {"schema": {"$ref": COMPONENTS + "Error"}}}
    ok: dict[str, Any] = {"description": "done" if route.status == 204 else "the answer"}
    if route.reply is not None and route.status != 204:
        ok["content"] = {route.content_type: {"schema": _schema(book, route.reply)}}
    out: dict[str, Any] = {str(route.status): ok}
    for status in route.error_statuses:
        response: dict[str, Any] = {"description": STATUS_TEXT[status], "content": error}
        if status == 429:
            response["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}
            }
        if status == 401:
            response["headers"] = {
                "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}
            }
        out[str(status)] = response
    return out


def _operation(book: SchemaBook, route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": list(route.tags),
        "responses": _responses(book, route),
    }
    if route.description:
        op["description"] = route.description
    op["security"] = [{"bearer": []}, {"session": []}] if route.auth == OPERATOR else []
    params = [
        {
            "name": p.name,
            "in": p.where,
            "required": p.required,
            "description": p.description,
            "schema": p.schema,
        }
        for p in route.params
    ]
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _body_schema(book, route)}},
        }
    if route.content_type == "text/event-stream":
        events = {name: _proto(book, message) for name, (_, message) in EVENTS.items()}
        events.update({name: _proto(book, m) for name, m in SNAPSHOT_EVENTS.items()})
        events["hello"] = {"$ref": COMPONENTS + "Hello"}
        events["snapshot"] = {"type": "object", "description": "the snapshot is complete"}
        op["x-events"] = events
    if route.auth == LOGIN:
        op["description"] = route.description
    return op


def document(version: str, routes: tuple[Route, ...] = ROUTES) -> dict[str, Any]:
    book = SchemaBook()
    hand = envelopes(book)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if route.document:
            paths.setdefault(route.path, {})[route.method.lower()] = _operation(book, route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "baycast control room",
            "version": version,
            "description": DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "tags": [
            {"name": "session", "description": "logging in and who you are"},
            {"name": "state", "description": "what the show looks like now"},
            {"name": "commands", "description": "changing the show"},
            {"name": "meta", "description": "this document"},
        ],
        "paths": paths,
        "components": {
            "schemas": {**book.schemas, **hand},
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
