"""What a request carries, checked: JSON bodies, query parameters, production ids.

Bodies must be `application/json` (415 otherwise) and within a size (413), read whole within a
time; query parameters must be the documented ones, each once (a typo is refused, not ignored).
"""

from __future__ import annotations

import re

from aiohttp import web

from services.common import errors
from services.common.errors import UnsupportedMediaType
from services.common.web import read_body
from services.control.replies import JSON
from services.control.routes import COMMAND_ID, PRODUCTION_ID

BODY_TIMEOUT_S = 10.0
_PRODUCTION = re.compile(PRODUCTION_ID)
_COMMAND_ID = re.compile(COMMAND_ID)
COMMAND_ID_HEADERS = ("Baycast-Command-Id", "Idempotency-Key")


def production_id(value: str, field: str) -> str:
    if not _PRODUCTION.match(value):
        raise errors.InvalidArgument(f"not a production id: {value!r}", field=field)
    return value


async def read_json_body(request: web.Request, max_bytes: int) -> bytes:
    """The body of a JSON request, read whole: 415 for another type, 413 past `max_bytes`."""
    if request.content_type != JSON:
        raise UnsupportedMediaType(
            f"Content-Type must be {JSON}, not {request.content_type or 'missing'}"
        )
    return await read_body(request, max_bytes, BODY_TIMEOUT_S, "the body")


def check_query(request: web.Request, known: set[str]) -> None:
    """Only the documented query parameters, each at most once: a typo is not ignored."""
    for name in request.query:
        if name not in known:
            raise errors.InvalidArgument(f"unknown query parameter {name!r}", field=name)
        if len(request.query.getall(name)) > 1:
            raise errors.InvalidArgument(f"{name} is given more than once", field=name)


def command_key(request: web.Request) -> str:
    """The client's id for a command (Baycast-Command-Id first, then Idempotency-Key), or ""."""
    keys = []
    for header in COMMAND_ID_HEADERS:
        if header in request.headers:
            keys.append(request.headers[header])
            if not _COMMAND_ID.match(keys[-1]):
                raise errors.InvalidArgument(
                    f"{header} is 1 to 128 printable characters without spaces", field=header
                )
    return keys[0] if keys else ""
