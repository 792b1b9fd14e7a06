"""What every HTTP edge shares: bearer tokens, CORS for browser clients, error answers, SDP bodies.

WHIP (ingest), WHEP and the station event streams (distribution) and the control room's API take
requests from browsers and station encoders on other origins; they answer errors the same way
(`<CODE>: <message>` with the code's HTTP status) and read SDP bodies with the same limits.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from services.common import errors

SDP_TYPE = "application/sdp"
SDP_READ_TIMEOUT_S = 10.0
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, Link, ETag, Accept-Post",
    "Access-Control-Max-Age": "600",
}


def bearer_token(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def error_response(exc: errors.BaycastError, status: int | None = None) -> web.Response:
    headers = dict(CORS_HEADERS)
    if isinstance(exc, errors.Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="baycast"'
    return web.Response(
        status=status or exc.http_status,
        text=f"{exc.code}: {exc.message}\n",
        headers=headers,
    )


def rate_limited(wait_s: float, what: str = "requests") -> web.Response:
    """429 with `Retry-After`: one client over its rate (`RateLimiter.take` said wait)."""
    response = error_response(errors.TooManyRequests(f"too many {what}: slow down"))
    response.headers["Retry-After"] = str(max(1, round(wait_s)))
    return response


async def read_sdp(
    request: web.Request, max_bytes: int, timeout_s: float = SDP_READ_TIMEOUT_S
) -> str:
    """The request's SDP body, read to its end within `timeout_s`.

    PayloadTooLarge past `max_bytes` however it is sent (a Content-Length, or chunks), and
    InvalidArgument for a wrong Content-Type, a body that is not UTF-8, or one that does not
    arrive in time: never a truncated offer.
    """
    if request.content_length is not None and request.content_length > max_bytes:
        raise errors.PayloadTooLarge(f"the offer is over {max_bytes} bytes")
    if request.content_type != SDP_TYPE:
        raise errors.InvalidArgument(
            f"Content-Type must be {SDP_TYPE}, not {request.content_type or 'missing'}"
        )
    body = await read_body(request, max_bytes, timeout_s, "the offer")
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise errors.InvalidArgument("the offer is not UTF-8 text") from None


async def read_body(request: web.Request, max_bytes: int, timeout_s: float, what: str) -> bytes:
    """The request's body read to its end within `timeout_s`: PayloadTooLarge past `max_bytes`
    (with a Content-Length or in chunks), InvalidArgument when it does not arrive in time."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise errors.PayloadTooLarge(f"{what} is over {max_bytes} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await request.content.read(max_bytes + 1 - len(body)):
                body += chunk
                if len(body) > max_bytes:
                    raise errors.PayloadTooLarge(f"{what} is over {max_bytes} bytes")
    except TimeoutError:
        raise errors.InvalidArgument(f"{what} did not arrive within {timeout_s:g} s") from None
    return bytes(body)
