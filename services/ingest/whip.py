"""WHIP (RFC 9725): stations publish WebRTC by POSTing an SDP offer with their bearer token.

    POST    /whip/<station>            offer in, 201 + Location + answer out
    DELETE  /whip/<station>/<session>  ends the session (token checked again)
    PATCH   /whip/<station>/<session>  405: trickle ICE and ICE restart are not supported; the
                                       answer carries every candidate, and a station that loses
                                       its connection publishes anew (RFC 9725 §4.3.1)
    OPTIONS either path                CORS preflight, so browsers can publish

The director's microphone comes the same way (talkback, docs/adr/0012), with an operator's token:

    POST    /whip/talk/<operator>            audio (video is answered inactive) -> source
                                             `talk_<operator>`, named after the operator
    DELETE  /whip/talk/<operator>/<session>  PATCH and OPTIONS as above

Both go through one path; only who may publish, and as which source, differ (`Publisher`).
Refusals change nothing and never allocate a peer connection before the token is checked:
429 more offers from one client address than its token bucket allows (checked first, so a
flood costs no token check; DELETE, PATCH and OPTIONS take from the bucket every unauthenticated
route of ingest shares, `http_limits.py`), 401 missing/wrong token or a station that does not
exist (the same answer, so no one learns which stations exist; PATCH and DELETE too; for talk
whether or not the operator exists), 403 a valid token that may not publish there
(a station's, another operator's, an operator who is not a director), 413 offer over
`max_sdp_bytes`, 400 not SDP (with the reason), 503 over `max_sessions`, 409 the source is
already live, on this ingest instance or on another one (live_claims.py; the live session keeps
going; the publisher DELETEs it or waits for it to time out, then publishes again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from services.common import errors, ice
from services.common.credentials import CredentialBook
from services.common.gen.baycast.v1 import operators_pb2
from services.common.handles import talk_source_id
from services.common.rate_limiter import RateLimiter
from services.common.web import (
    CORS_HEADERS,
    SDP_TYPE,
    bearer_token,
    error_response,
    rate_limited,
    read_sdp,
)
from services.ingest import metrics
from services.ingest.live_claims import Claim
from services.ingest.sources import SourceRegistry
from services.ingest.stations import StationRegistry
from services.ingest.webrtc_source import MEDIA_KINDS, SdpError, WhipSource, check_offer

REVOCATION_CHECK_S = 2.0
TALK_KINDS = frozenset({"audio"})

log = structlog.get_logger("ingest.whip")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Publisher:
    """Who publishes on a WHIP resource, and as which source."""

    source_id: str
    station: str  # the station contributing; "" for a talk source
    name: str  # the source's display name
    resource: str  # the path sessions live under: /whip/gz, /whip/talk/zhang
    kinds: frozenset[str] = MEDIA_KINDS  # the media taken from the offer
    operator: str = ""  # the director talking, for a talk source

    def busy(self, claim: Claim) -> str:
        """Why a second session is refused: `claim` says whether the first is here or not."""
        elsewhere = " on another ingest instance" if claim is Claim.LIVE_ELSEWHERE else ""
        if self.operator:
            return f"operator {self.operator!r} is already talking from another session{elsewhere}"
        return f"station {self.station!r} is {claim.value}"


Identify = Callable[[web.Request], Awaitable[Publisher]]


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
        credentials: CredentialBook | None = None,
    ) -> None:
        self.stations = stations
        self.sources = sources
        self.credentials = credentials  # operators' tokens, for talkback; None: no talk routes
        self.max_sessions = max_sessions
        self.max_sdp_bytes = max_sdp_bytes
        self.public_ip = public_ip
        self.ice_policy = ice_policy or ice.policy()
        self.rate_limiter = rate_limiter if rate_limiter is not None else RateLimiter()
        self.sessions: dict[str, WhipSource] = {}  # session id -> source
        self.publishers: dict[str, Publisher] = {}  # session id -> who publishes it
        self._pending: set[str] = set()  # source ids between offer and answer
        self.accepting = True

    def add_routes(self, app: web.Application) -> None:
        resources: list[tuple[str, Identify]] = []
        if self.credentials is not None:
            # Before the stations' routes: `/whip/talk/<x>` must not be taken for a session of a
            # station named "talk" (DELETE still reaches it: talk has no route of that shape).
            resources.append(("/whip/talk/{operator}", self._director))
        resources.append(("/whip/{station}", self._station))
        for path, identify in resources:
            session = path + "/{session}"
            app.router.add_route("POST", path, self._counted(self._post, identify))
            app.router.add_route("OPTIONS", path, self._counted(self._options, identify))
            app.router.add_route("DELETE", session, self._counted(self._delete, identify))
            app.router.add_route("PATCH", session, self._counted(self._patch, identify))
            app.router.add_route("OPTIONS", session, self._counted(self._options, identify))

    @staticmethod
    def _counted(
        handler: Callable[[web.Request, Identify], Awaitable[web.StreamResponse]],
        identify: Identify,
    ) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request, identify)
            except errors.BaycastError as exc:
                response = error_response(exc)
            metrics.WHIP_REQUESTS.labels(request.method, str(response.status)).inc()
            return response

        return wrapped

    # -- who publishes ---------------------------------------------------------------------------

    async def _station(self, request: web.Request) -> Publisher:
        station_id = request.match_info["station"]
        station = await self.stations.authenticate(station_id, bearer_token(request))
        return Publisher(station_id, station_id, station.name, f"/whip/{station_id}")

    async def _director(self, request: web.Request) -> Publisher:
        operator_id = request.match_info["operator"]
        assert self.credentials is not None
        principal = self.credentials.identify(bearer_token(request))
        if principal is None:
            raise errors.Unauthenticated("missing, wrong or revoked token")
        if not principal.is_operator or principal.id != operator_id:
            raise errors.PermissionDenied(f"only operator {operator_id!r} talks as themselves")
        if principal.role != operators_pb2.ROLE_DIRECTOR:
            raise errors.PermissionDenied("talkback is for directors")
        return Publisher(
            talk_source_id(operator_id),
            "",
            principal.name,
            f"/whip/talk/{operator_id}",
            kinds=TALK_KINDS,
            operator=operator_id,
        )

    async def _still_allowed(self, publisher: Publisher) -> tuple[bool, str]:
        """Whether the publisher may still publish; raises when the bus cannot tell now."""
        if publisher.operator:
            assert self.credentials is not None
            operator = self.credentials.operators.get(publisher.operator)
            allowed = (
                operator is not None
                and not operator.revoked
                and operator.role == operators_pb2.ROLE_DIRECTOR
            )
            return allowed, "operator revoked"
        station = await self.stations.get(publisher.station)
        return station is not None and not station.revoked, "station revoked"

    # -- the one path -------------------------------------------------------------------------

    async def _options(self, _request: web.Request, _identify: Identify) -> web.Response:
        return web.Response(status=204, headers={**CORS_HEADERS, "Accept-Post": SDP_TYPE})

    async def _patch(self, request: web.Request, identify: Identify) -> web.Response:
        await identify(request)
        return web.Response(
            status=405,
            text="trickle ICE and ICE restart are not supported: publish again instead\n",
            headers={**CORS_HEADERS, "Allow": "DELETE, OPTIONS"},
        )

    async def _post(self, request: web.Request, identify: Identify) -> web.Response:
        wait_s = self.rate_limiter.take(request.remote or "")
        if wait_s > 0:
            metrics.WHIP_RATE_LIMITED.inc()
            return rate_limited(wait_s, "offers")
        publisher = await identify(request)
        if not self.accepting:
            raise errors.Unavailable("ingest is shutting down")
        offer = await read_sdp(request, self.max_sdp_bytes)
        try:
            parsed = check_offer(offer)
        except SdpError as exc:
            raise errors.InvalidArgument(str(exc)) from None
        if not any(m.kind in publisher.kinds for m in parsed.media):
            wanted = " or ".join(sorted(publisher.kinds))
            raise errors.InvalidArgument(f"the offer has no {wanted} section")
        source_id = publisher.source_id
        if source_id in self.sources.live or source_id in self._pending:
            raise errors.Conflict(publisher.busy(Claim.LIVE_HERE))
        if len(self.sources.live) + len(self._pending) >= self.max_sessions:
            raise errors.Unavailable(f"this ingest serves at most {self.max_sessions} sessions")
        self._pending.add(source_id)
        claim: Claim | None = None
        started = False
        try:
            claim = await self.sources.claim(source_id)
            if claim is not Claim.TAKEN:
                raise errors.Conflict(publisher.busy(claim))
            source = WhipSource(
                source_id,
                publisher.station,
                publisher.name,
                public_ip=self.public_ip,
                kinds=publisher.kinds,
            )
            try:
                with ice.applied(self.ice_policy):
                    answer = await source.answer(offer)
            except SdpError as exc:
                await source.close()
                raise errors.InvalidArgument(str(exc)) from None
            except Exception as exc:  # e.g. no free UDP port in the RTC range
                await source.close()
                log.warning("whip_setup_failed", source=source_id, error=repr(exc))
                raise errors.Unavailable("cannot set up the WebRTC session now") from None
            self.sessions[source.session_id] = source
            self.publishers[source.session_id] = publisher
            live = self.sources.start(source)
            started = True
        finally:
            self._pending.discard(source_id)
            if not started and claim is Claim.TAKEN:
                await self.sources.unclaim(source_id)
        assert live.task is not None
        live.task.add_done_callback(lambda _t: self._forget(source.session_id))
        log.info("whip_session_started", source=source_id, session=source.session_id)
        return web.Response(
            status=201,
            body=answer.encode(),
            headers={
                **CORS_HEADERS,
                "Content-Type": SDP_TYPE,  # exactly, without "; charset": some encoders compare
                "Location": f"{publisher.resource}/{source.session_id}",
                "ETag": f'"{source.session_id}"',
            },
        )

    def _forget(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)
        self.publishers.pop(session_id, None)

    async def _delete(self, request: web.Request, identify: Identify) -> web.Response:
        publisher = await identify(request)
        session_id = request.match_info["session"]
        source = self.sessions.get(session_id)
        owner = self.publishers.get(session_id)
        if source is None or owner is None or owner.source_id != publisher.source_id:
            raise errors.NotFound("no such session")
        # A publisher that gives up on a failed handshake DELETEs at once, often before the
        # connection's state change reaches us: the failure is the reason, not the DELETE.
        ended = "director ended the talk" if publisher.operator else "station ended the session"
        reason = source.dtls_failure() or ended
        await self.sources.stop(source.source_id, reason)
        return web.Response(status=200, headers=CORS_HEADERS)

    async def enforce_revocations(self, interval_s: float = REVOCATION_CHECK_S) -> None:
        """End sessions of stations revoked (or deleted) meanwhile, by whichever instance, and
        talk of operators revoked or no longer directors."""
        while True:
            await asyncio.sleep(interval_s)
            for session_id, source in list(self.sessions.items()):
                publisher = self.publishers.get(session_id)
                if publisher is None:
                    continue
                try:
                    allowed, reason = await self._still_allowed(publisher)
                except Exception:  # the bus is down: check again next round
                    break
                if not allowed:
                    await self.sources.stop(source.source_id, reason)
