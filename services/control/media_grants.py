"""Media grants: what a page shows ingest (WHIP) and distribution (WHEP) instead of a token.

A browser page holds a session cookie, not its operator's token, yet a WebRTC offer to another
service needs a bearer. `POST /api/media-grant` signs a short-lived grant for the calling
operator (`services.common.credentials.media_grant`, bound to the operator's current token, so a
rotation or a revocation voids it); the page asks for a fresh one before each offer and each
hang-up. Grants are limited per operator, and are off (503) unless the platform shares
`BAYCAST_MEDIA_GRANT_SECRET` with ingest and distribution. The grant itself never reaches a log.
"""

from __future__ import annotations

import math

from aiohttp import web

from services.common import errors
from services.common.credentials import media_grant
from services.common.rate_limiter import RateLimiter
from services.control import metrics
from services.control.access import Caller
from services.control.replies import error_reply, json_reply
from services.control.routes import Route
from services.control.settings import ControlSettings


def grant_expiry_us(grant: str) -> int:
    """When a grant `g1.<operator>.<expires_us>.<mac>` expires (Unix µs)."""
    return int(grant.split(".")[2])


class MediaGrants:
    def __init__(self, settings: ControlSettings) -> None:
        self.secret = settings.media_grant_secret
        self.limiter = RateLimiter(settings.grant_rate_per_s, settings.grant_burst)

    async def media_grant(
        self, _request: web.Request, caller: Caller | None, _r: Route
    ) -> web.Response:
        assert caller is not None
        if not self.secret:
            metrics.MEDIA_GRANTS.labels("unavailable").inc()
            raise errors.Unavailable(
                "media grants are off: the platform has no BAYCAST_MEDIA_GRANT_SECRET"
            )
        wait = self.limiter.take(caller.id)
        if wait > 0:
            metrics.MEDIA_GRANTS.labels("throttled").inc()
            refusal = errors.TooManyRequests(f"too many media grants: wait {wait:.0f} s")
            return error_reply(refusal, {"Retry-After": str(math.ceil(wait))})
        grant = media_grant(self.secret, caller.operator)
        metrics.MEDIA_GRANTS.labels("ok").inc()
        return json_reply({"grant": grant, "expiresUs": grant_expiry_us(grant)})
