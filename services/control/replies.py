"""The control room's JSON answers: messages in canonical proto3 JSON, errors as ErrorReply.

Every error is `{"code", "message", "field"}` (the JSON of `ErrorReply`) with the HTTP status of
its code (services/common/errors.py), so a page reads the same word a `baycast ctl` user sees.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from services.common import errors
from services.common.bus import encode

JSON = "application/json"
# Answers hold show state and credentials' effects: never cached by a browser or a proxy.
NO_STORE = {"Cache-Control": "no-store"}


def to_dict(message: Message) -> dict[str, Any]:
    """A message as the dict of its canonical JSON (the same bytes `bus.encode` writes)."""
    out: dict[str, Any] = json_format.MessageToDict(message)
    return out


def message_reply(message: Message, status: int = 200) -> web.Response:
    return web.Response(
        body=encode(message), status=status, content_type=JSON, charset="utf-8", headers=NO_STORE
    )


def json_reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(body, ensure_ascii=False),
        status=status,
        content_type=JSON,
        charset="utf-8",
        headers={**NO_STORE, **(headers or {})},
    )


def error_reply(exc: errors.BaycastError, headers: dict[str, str] | None = None) -> web.Response:
    extra = dict(headers or {})
    if isinstance(exc, errors.Unauthenticated):
        extra["WWW-Authenticate"] = 'Bearer realm="baycast-control"'
    body = {"code": exc.code, "message": exc.message, "field": exc.field}
    return json_reply(body, exc.http_status, extra)
