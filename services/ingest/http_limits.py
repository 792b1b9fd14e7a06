"""Every unauthenticated HTTP route of ingest answers a client address at a bounded rate.

A request to any route but the probes takes a token from its client address's bucket first
(`RateLimiter`, `BAYCAST_INGEST_HTTP_RATE_PER_S`/`_BURST`), before a page, a configuration, a
token or a station is looked at; past it the answer is 429 with `Retry-After`, counted by route
in `baycast_ingest_http_rate_limited_total`. WHIP offers are left to their own, smaller bucket
(`whip.py`, `WHIP_RATE_*`): an offer costs a peer connection, a page costs a file. `/metrics`,
`/healthz` and `/readyz` are free: Prometheus and the kubelet poll them, and a flood must not
make a healthy pod look dead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from services.common.rate_limiter import RateLimiter
from services.common.web import rate_limited
from services.ingest import metrics

PROBES = frozenset({"/metrics", "/healthz", "/readyz"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_offer(request: web.Request) -> bool:
    """A WHIP offer (`POST /whip/...`): rate-limited by the WHIP endpoint itself."""
    return request.method == "POST" and request.path.startswith("/whip/")


class RouteRateLimit:
    """The middleware: a token per request, per client address."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    def install(self, app: web.Application) -> None:
        app.middlewares.append(self.handle)

    @web.middleware
    async def handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PROBES or is_offer(request):
            return await handler(request)
        wait_s = self.limiter.take(request.remote or "")
        if wait_s > 0:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            metrics.HTTP_RATE_LIMITED.labels(route).inc()
            return rate_limited(wait_s)
        return await handler(request)
