"""WHEP (draft-ietf-wish-whep): stations and operators watch a production's feeds over WebRTC.

    POST    /whep/<prod>/<handle>   offer in, 201 + Location + answer out (every candidate in
                                    it: no trickle). Handles: return/<station>, program, clean,
                                    multiview, source/<id>. Query: picture=program|clean
                                    (returns), height=360|540|720 (width follows 16:9)
    DELETE  /whep/session/<id>      ends the session (the token of whoever opened it, else 404)
    PATCH   /whep/session/<id>      405: no trickle ICE, no ICE restart; a viewer whose
                                    connection broke asks again (the draft allows refusing)
    OPTIONS either path             CORS preflight, so browsers can watch

An offer is refused in this order, and nothing (no encoding, no peer connection) is made before
all of it passed: 429 too many offers from one client address (checked first, so a flood costs
no token check), 401 missing or wrong token (the same answer whether or not the production or
station exists), 404 unknown production or feed, 403 a feed the principal may not read
(`access.py`), 413 an offer over `max_sdp_bytes`, 400 not an offer we can answer (with the
reason), 503 over `max_viewers` or draining. A viewer ends on DELETE, when its connection fails,
when its principal is revoked or its token rotated, when its production is deleted or no longer
lets it read the feed (checked every `REVOCATION_CHECK_S`), and on drain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from services.common import errors, ice
from services.common.credentials import CredentialBook, Principal
from services.common.gen.baycast.v1 import mixer_pb2
from services.common.kv_mirror import KvMirror
from services.common.rate_limiter import RateLimiter
from services.common.web import (
    CORS_HEADERS,
    SDP_TYPE,
    bearer_token,
    error_response,
    rate_limited,
    read_sdp,
)
from services.distribution import metrics
from services.distribution.access import PICTURES, check_access, parse_feed
from services.distribution.settings import DEFAULT_FPS, EXCHANGE_HEIGHTS
from services.distribution.viewers import Viewer, ViewerRegistry
from services.distribution.whep_offer import OfferError, check_offer

REVOCATION_CHECK_S = 2.0
SESSION_PATH = "/whep/session/"

log = structlog.get_logger("distribution.whep")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def width_for(height: int) -> int:
    """The even width of a 16:9 picture `height` lines tall."""
    return round(height * 16 / 9 / 2) * 2


class WhepEndpoint:
    def __init__(
        self,
        viewers: ViewerRegistry,
        credentials: CredentialBook,
        productions: KvMirror[mixer_pb2.Production],
        *,
        max_sdp_bytes: int,
        default_height: int,
        return_height: int,
        rate_limiter: RateLimiter,
        ice_policy: ice.IcePolicy | None = None,
    ) -> None:
        self.viewers = viewers
        self.credentials = credentials
        self.productions = productions
        self.max_sdp_bytes = max_sdp_bytes
        self.default_height = default_height
        self.return_height = return_height
        self.rate_limiter = rate_limiter
        self.ice_policy = ice_policy or ice.policy()
        # The token salt each viewer's principal had when it connected: a rotation ends it.
        self._salts: dict[str, str] = {}

    def add_routes(self, app: web.Application) -> None:
        # The session routes first: /whep/session/<id> is not a production's feed.
        app.router.add_route("DELETE", SESSION_PATH + "{session}", self._answered(self.delete))
        app.router.add_route("PATCH", SESSION_PATH + "{session}", self._answered(self.patch))
        app.router.add_route("OPTIONS", SESSION_PATH + "{session}", self._answered(self.options))
        app.router.add_route("POST", "/whep/{production}/{handle:.+}", self._counted(self.post))
        app.router.add_route("OPTIONS", "/whep/{production}/{handle:.+}", self.options)

    @staticmethod
    def _answered(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except errors.BaycastError as exc:
                return error_response(exc)

        return wrapped

    @staticmethod
    def _counted(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except errors.BaycastError as exc:
                response = error_response(exc)
                log.info(
                    "whep_refused",
                    status=response.status,
                    path=request.path[:120],
                    client=request.remote,
                    reason=exc.message,
                )
            metrics.WHEP_SESSIONS.labels(str(response.status)).inc()
            return response

        return wrapped

    async def options(self, _request: web.Request) -> web.Response:
        return web.Response(status=204, headers={**CORS_HEADERS, "Accept-Post": SDP_TYPE})

    def _identify(self, request: web.Request) -> Principal:
        principal = self.credentials.identify(bearer_token(request))
        if principal is None:
            raise errors.Unauthenticated("a valid bearer token is required")
        return principal

    async def post(self, request: web.Request) -> web.Response:
        wait_s = self.rate_limiter.take(request.remote or "")
        if wait_s > 0:
            return rate_limited(wait_s, "offers")
        principal = self._identify(request)
        production_id = request.match_info["production"]
        production = self.productions.get(production_id)
        if production is None:
            raise errors.NotFound(f"no production {production_id!r}")
        picture = request.query.get("picture", "program")
        # A bad picture is a 400, which comes after the 404 and 403 of the feed itself.
        feed = parse_feed(
            production_id,
            request.match_info["handle"],
            picture if picture in PICTURES else "program",
        )
        check_access(principal, production, feed)
        if picture not in PICTURES:
            raise errors.InvalidArgument(f"picture must be one of {', '.join(PICTURES)}")
        height = self._height(
            request.query.get("height", ""),
            self.return_height if feed.kind == "return" else self.default_height,
        )
        offer = await read_sdp(request, self.max_sdp_bytes)
        try:
            check_offer(offer)
        except OfferError as exc:
            raise errors.InvalidArgument(str(exc)) from None
        with ice.applied(self.ice_policy):
            viewer, answer = await self.viewers.open(
                feed,
                principal,
                offer,
                width=width_for(height),
                height=height,
                fps=production.fps or DEFAULT_FPS,
            )
        self._salts[viewer.id] = self._salt(principal)
        log.info(
            "whep_session_started",
            session=viewer.id,
            production=feed.production,
            handle=feed.handle,
            principal=principal.label,
            rendition=viewer.rendition,
        )
        return web.Response(
            status=201,
            body=answer.encode(),
            headers={
                **CORS_HEADERS,
                "Content-Type": SDP_TYPE,  # exactly, without "; charset": some clients compare
                "Location": SESSION_PATH + viewer.id,
            },
        )

    def _height(self, value: str, default: int) -> int:
        if not value:
            return default
        if not value.isdigit() or int(value) not in EXCHANGE_HEIGHTS:
            raise errors.InvalidArgument(
                f"height must be one of {', '.join(map(str, EXCHANGE_HEIGHTS))}"
            )
        return int(value)

    async def delete(self, request: web.Request) -> web.Response:
        principal = self._identify(request)
        viewer = self.viewers.get(request.match_info["session"])
        if viewer is None or viewer.principal.label != principal.label:
            raise errors.NotFound("no such session")
        await self.viewers.stop(viewer.id, "viewer ended the session")
        self._salts.pop(viewer.id, None)
        return web.Response(status=200, headers=CORS_HEADERS)

    async def patch(self, request: web.Request) -> web.Response:
        self._identify(request)
        return web.Response(
            status=405,
            text="trickle ICE and ICE restart are not supported: send a new offer instead\n",
            headers={**CORS_HEADERS, "Allow": "DELETE, OPTIONS"},
        )

    # -- who may still watch -----------------------------------------------------------------

    def _salt(self, principal: Principal) -> str:
        """The token salt of the principal's current record ("" if revoked or gone)."""
        if principal.kind == "station":
            station = self.credentials.station(principal.id)
            return station.token_salt if station is not None else ""
        operator = self.credentials.operator(principal.id)
        return operator.token_salt if operator is not None else ""

    def refusal(self, viewer: Viewer) -> str:
        """Why `viewer` may not watch any more, or "" while it may."""
        salt = self._salt(viewer.principal)
        if not salt:
            return f"{viewer.principal.kind} revoked"
        if salt != self._salts.get(viewer.id, salt):
            return f"{viewer.principal.kind}'s token rotated"
        production = self.productions.get(viewer.feed.production)
        if production is None:
            return "production deleted"
        try:
            check_access(viewer.principal, production, viewer.feed)
        except errors.BaycastError as exc:
            return f"no longer allowed: {exc.message}"
        return ""

    async def enforce_access(self, interval_s: float = REVOCATION_CHECK_S) -> None:
        """End the viewers who may no longer watch, every `interval_s`."""
        while True:
            await asyncio.sleep(interval_s)
            await self.enforce_once()

    async def enforce_once(self) -> None:
        for viewer in self.viewers.all():
            reason = self.refusal(viewer)
            if reason:
                await self.viewers.stop(viewer.id, reason)
        live = {viewer.id for viewer in self.viewers.all()}
        for viewer_id in set(self._salts) - live:
            del self._salts[viewer_id]
        for production in {p for p, _kind in self.viewers.exported()} - set(
            self.productions.items()
        ):
            self.viewers.forget(production)
