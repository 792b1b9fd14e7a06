"""Logging browsers in and out, and telling a caller who it is.

`POST /api/session` takes an operator token in a JSON body (rate-limited per client address),
opens a session and sets its cookie: HttpOnly, SameSite=Strict, Secure over HTTPS (as a trusted
proxy reports it), never readable by a page's scripts. The answer carries the session's CSRF
token, which the page repeats on every state-changing request; `GET /api/me` gives it again to a
page that reloads. A login that names another origin is refused (login CSRF).
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from services.common import errors
from services.common.credentials import ROLE_NAMES
from services.common.errors import TooManyRequests
from services.common.rate_limiter import RateLimiter
from services.control import canonical_json, metrics, roles
from services.control.access import SESSION_COOKIE, Caller, Gatekeeper
from services.control.operators import info
from services.control.replies import error_reply, json_reply, to_dict
from services.control.request_input import read_json_body
from services.control.routes import Route
from services.control.sessions import SessionBook
from services.control.settings import ControlSettings

MAX_LOGIN_BYTES = 4 * 1024
MAX_TOKEN_CHARS = 512


class LoginApi:
    def __init__(self, settings: ControlSettings, gate: Gatekeeper, sessions: SessionBook) -> None:
        self.settings = settings
        self.gate = gate
        self.sessions = sessions
        self.limiter = RateLimiter(settings.login_rate_per_s, settings.login_burst)

    async def login(self, request: web.Request, _c: Caller | None, _r: Route) -> web.Response:
        self.gate.check_origin(request, required=False)
        wait = self.limiter.take(self.gate.client_address(request))
        if wait > 0:
            metrics.LOGINS.labels("throttled").inc()
            refusal = TooManyRequests(f"too many logins from this address: wait {wait:.0f} s")
            return error_reply(refusal, {"Retry-After": str(math.ceil(wait))})
        data = canonical_json.load(await read_json_body(request, MAX_LOGIN_BYTES))
        if not isinstance(data, dict) or set(data) != {"token"}:
            raise errors.InvalidArgument('the body is {"token": "<operator token>"}', field="token")
        token = data["token"]
        if not isinstance(token, str) or not 1 <= len(token) <= MAX_TOKEN_CHARS:
            raise errors.InvalidArgument("token must be a non-empty string", field="token")
        try:
            caller = self.gate.by_token(token)
        except errors.PermissionDenied:
            metrics.LOGINS.labels("forbidden").inc()
            raise
        except errors.Unauthenticated:
            metrics.LOGINS.labels("unauthenticated").inc()
            raise
        session = self.sessions.open(caller.id, caller.fingerprint)
        metrics.LOGINS.labels("ok").inc()
        response = json_reply(
            {
                "operator": to_dict(info(caller.operator)),
                "csrfToken": session.csrf,
                "expiresInS": self.settings.session_ttl_s,
            }
        )
        response.set_cookie(
            SESSION_COOKIE,
            session.id,
            path="/",
            max_age=int(self.settings.session_ttl_s),
            httponly=True,
            secure=self.gate.is_secure(request),
            samesite="Strict",
        )
        return response

    async def logout(self, request: web.Request, caller: Caller | None, _r: Route) -> web.Response:
        assert caller is not None
        if caller.session is not None:
            self.sessions.close(caller.session.id)
        response = web.Response(status=204, headers={"Cache-Control": "no-store"})
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    def me_body(self, caller: Caller) -> dict[str, Any]:
        body: dict[str, Any] = {
            "operator": to_dict(info(caller.operator)),
            "role": ROLE_NAMES.get(caller.role, "viewer"),
            "permissions": roles.permissions(caller.role),
            "via": "cookie" if caller.session else "bearer",
            "exchangeUrl": self.settings.exchange_url.rstrip("/"),
            "ingestUrl": self.settings.ingest_url.rstrip("/"),
            "mediaGrants": bool(self.settings.media_grant_secret),
        }
        if caller.session is not None:
            body["csrfToken"] = caller.session.csrf
        return body

    async def me(self, _request: web.Request, caller: Caller | None, _r: Route) -> web.Response:
        assert caller is not None
        return json_reply(self.me_body(caller))
