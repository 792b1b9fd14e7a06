"""What every answer of the control room gets: security headers, JSON errors, request metrics.

The headers go on through `on_response_prepare`, so streamed answers (the event stream) and the
shared endpoints (`/metrics`, `/healthz`) get them too. The Content-Security-Policy allows this
origin only, plus the exchange's (WHEP players of returns and feeds) and ingest's (the director's
talkback microphone over WHIP) for requests and media: no inline script, no framing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from services.common import errors
from services.control import metrics
from services.control.replies import error_reply
from services.control.settings import ControlSettings, origin_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STREAMING = "text/event-stream"

log = structlog.get_logger("control.http")


def content_security_policy(*remote_origins: str) -> str:
    remote = "".join(f" {o}" for o in remote_origins if o)
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        f"connect-src 'self'{remote}; media-src 'self' blob: mediastream:{remote}; "
        "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


class Middleware:
    """Security headers on every response, errors as JSON, a metric per request."""

    def __init__(self, settings: ControlSettings, is_secure: Callable[[web.Request], bool]) -> None:
        self.is_secure = is_secure
        self.headers = {
            "Content-Security-Policy": content_security_policy(
                settings.exchange_origin, origin_of(settings.ingest_url)
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Cross-Origin-Opener-Policy": "same-origin",
            "Cross-Origin-Resource-Policy": "same-origin",
            "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
        }

    def install(self, app: web.Application) -> None:
        app.middlewares.append(self.handle)
        app.on_response_prepare.append(self.add_headers)

    async def add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        for name, value in self.headers.items():
            response.headers.setdefault(name, value)
        if self.is_secure(request):
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")

    @web.middleware
    async def handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        began = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        try:
            response = await handler(request)
        except errors.BaycastError as exc:
            response = error_reply(exc)
        except web.HTTPException as exc:
            response = self._http_error(exc)
        except Exception:
            log.exception("request_failed", route=route, method=request.method)
            response = error_reply(errors.BaycastError("internal error"))
        metrics.API_REQUESTS.labels(route, str(response.status)).inc()
        if response.content_type != STREAMING:
            metrics.API_REQUEST_SECONDS.labels(route).observe(time.perf_counter() - began)
        return response

    @staticmethod
    def _http_error(exc: web.HTTPException) -> web.StreamResponse:
        """aiohttp's own refusals (no such path, method) answered like every other error."""
        if exc.status == 404:
            return error_reply(errors.NotFound("no such path"))
        if exc.status == 405:
            refusal = errors.InvalidArgument(f"{exc.reason}")
            refusal.http_status = 405
            response = error_reply(refusal)
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        if exc.status == 413:
            return error_reply(errors.PayloadTooLarge("the body is too large"))
        if exc.status < 400:
            raise exc  # a redirect: not an error
        generic = errors.InvalidArgument(exc.reason)
        generic.http_status = exc.status
        return error_reply(generic)
