"""WHIP (RFC 9725): stations publish WebRTC by POSTing an SDP offer with their bearer token.

    POST    /whip/<station>            offer in, 201 + Location + answer out
    DELETE  /whip/<station>/<session>  ends the session (token checked again)
    PATCH   /whip/<station>/<session>  405: trickle ICE and ICE restart are not supported; the
                                       answer carries every candidate, and a station that loses
                                       its connection publishes anew (RFC 9725 §4.3.1)
    OPTIONS either path                CORS preflight, so browsers can publish

Refusals change nothing and never allocate a peer connection before the token is checked:
429 more offers from one client address than its token bucket allows (checked first, so a
flood costs no token check), 404 unknown station, 401 missing/wrong token (PATCH and DELETE
too), 413 offer over `max_sdp_bytes`, 400 not SDP (with the reason), 503 over `max_sessions`,
409 the station is already live (the live session keeps going; the station DELETEs it or
waits for it to time out, then publishes again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from services.common import errors, ice
from services.common.web import CORS_HEADERS, SDP_TYPE, bearer_token, error_response, read_sdp
from services.ingest import metrics
from services.ingest.rate_limiter import RateLimiter
from services.ingest.sources import SourceRegistry
from services.ingest.stations import StationRegistry
from services.ingest.webrtc_source import SdpError, WhipSource, check_offer

REVOCATION_CHECK_S = 2.0

log = structlog.get_logger("ingest.whip")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WhipEndpoint:
    def __init__(
        self,
        stations: StationRegistry,
        sources: SourceRegistry,
        *,
        max_sessions: int,
        max_sdp_bytes: int,
        public_ip: str = "",
        ice_policy: ice.IcePolicy | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.stations = stations
        self.sources = sources
        self.max_sessions = max_sessions
        self.max_sdp_bytes = max_sdp_bytes
        self.public_ip = public_ip
        self.ice_policy = ice_policy or ice.policy()
        self.rate_limiter = rate_limiter if rate_limiter is not None else RateLimiter()
        self.sessions: dict[str, WhipSource] = {}  # session id -> source
        self._pending: set[str] = set()  # stations between offer and answer
        self.accepting = True

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("POST", "/whip/{station}", self._counted(self.post))
        app.router.add_route("OPTIONS", "/whip/{station}", self._counted(self.options))
        app.router.add_route("DELETE", "/whip/{station}/{session}", self._counted(self.delete))
        app.router.add_route("PATCH", "/whip/{station}/{session}", self._counted(self.patch))
        app.router.add_route("OPTIONS", "/whip/{station}/{session}", self._counted(self.options))

    @staticmethod
    def _counted(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except errors.BaycastError as exc:
                response = error_response(exc)
            metrics.WHIP_REQUESTS.labels(request.method, str(response.status)).inc()
            return response

        return wrapped

    async def options(self, _request: web.Request) -> web.Response:
        return web.Response(status=204, headers={**CORS_HEADERS, "Accept-Post": SDP_TYPE})

    async def patch(self, request: web.Request) -> web.Response:
        await self.stations.authenticate(request.match_info["station"], bearer_token(request))
        return web.Response(
            status=405,
            text="trickle ICE and ICE restart are not supported: publish again instead\n",
            headers={**CORS_HEADERS, "Allow": "DELETE, OPTIONS"},
        )

    async def post(self, request: web.Request) -> web.Response:
        wait_s = self.rate_limiter.take(request.remote or "")
        if wait_s > 0:
            metrics.WHIP_RATE_LIMITED.inc()
            response = error_response(
                errors.ResourceExhausted("too many offers: slow down"), status=429
            )
            response.headers["Retry-After"] = str(max(1, round(wait_s)))
            return response
        station_id = request.match_info["station"]
        station = await self.stations.authenticate(station_id, bearer_token(request))
        if not self.accepting:
            raise errors.Unavailable("ingest is shutting down")
        offer = await read_sdp(request, self.max_sdp_bytes)
        try:
            check_offer(offer)
        except SdpError as exc:
            raise errors.InvalidArgument(str(exc)) from None
        if station_id in self.sources.live or station_id in self._pending:
            raise errors.Conflict(f"station {station_id!r} is already live")
        if len(self.sources.live) + len(self._pending) >= self.max_sessions:
            raise errors.Unavailable(f"this ingest serves at most {self.max_sessions} sessions")
        self._pending.add(station_id)
        try:
            source = WhipSource(station_id, station_id, station.name, public_ip=self.public_ip)
            try:
                with ice.applied(self.ice_policy):
                    answer = await source.answer(offer)
            except SdpError as exc:
                await source.close()
                raise errors.InvalidArgument(str(exc)) from None
            except Exception as exc:  # e.g. no free UDP port in the RTC range
                await source.close()
                log.warning("whip_setup_failed", station=station_id, error=repr(exc))
                raise errors.Unavailable("cannot set up the WebRTC session now") from None
            self.sessions[source.session_id] = source
            live = self.sources.start(source)
        finally:
            self._pending.discard(station_id)
        assert live.task is not None
        live.task.add_done_callback(lambda _t: self.sessions.pop(source.session_id, None))
        location = f"/whip/{station_id}/{source.session_id}"
        log.info("whip_session_started", station=station_id, session=source.session_id)
        return web.Response(
            status=201,
            body=answer.encode(),
            headers={
                **CORS_HEADERS,
                "Content-Type": SDP_TYPE,  # exactly, without "; charset": some encoders compare
                "Location": location,
                "ETag": f'"{source.session_id}"',
            },
        )

    async def enforce_revocations(self, interval_s: float = REVOCATION_CHECK_S) -> None:
        """End sessions of stations revoked (or deleted) meanwhile, by whichever instance."""
        while True:
            await asyncio.sleep(interval_s)
            for source in list(self.sessions.values()):
                try:
                    station = await self.stations.get(source.station)
                except Exception:  # the bus is down: check again next round
                    break
                if station is None or station.revoked:
                    await self.sources.stop(source.source_id, "station revoked")

    async def delete(self, request: web.Request) -> web.Response:
        station_id = request.match_info["station"]
        await self.stations.authenticate(station_id, bearer_token(request))
        source = self.sessions.get(request.match_info["session"])
        if source is None or source.station != station_id:
            raise errors.NotFound("no such session")
        # A publisher that gives up on a failed handshake DELETEs at once, often before the
        # connection's state change reaches us: the failure is the reason, not the DELETE.
        reason = source.dtls_failure() or "station ended the session"
        await self.sources.stop(source.source_id, reason)
        return web.Response(status=200, headers=CORS_HEADERS)
