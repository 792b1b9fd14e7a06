"""Who is calling the control room, and whether a request may change anything.

Two ways in, both ending at an operator of the `operators` bucket:

* `Authorization: Bearer <operator token>`: hardware controllers and scripts (Companion, Stream
  Deck). No CSRF token is needed: a browser never adds this header to a request on its own.
* The session cookie a browser gets from `POST /api/session` (HttpOnly, SameSite=Strict, Secure
  over HTTPS). A state-changing request made with it must also carry its session's CSRF token in
  `X-CSRF-Token` and an `Origin` equal to the control room's own origin.

A wrong, unknown or revoked token is 401 whatever id it names, and so is a media grant (it is for
ingest and distribution); a station's token is 403 (stations have pages of their own). Tokens are
checked in memory (`CredentialBook`), and a caller is valid only while its operator's token hash
is the one it authenticated with: a rotation or a revocation ends sessions and event streams as
soon as the bucket's change arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from services.common import errors
from services.common.credentials import GRANT_PREFIX, CredentialBook
from services.common.gen.baycast.v1 import operators_pb2
from services.common.web import bearer_token
from services.control.sessions import Session, SessionBook
from services.control.settings import ControlSettings

SESSION_COOKIE = "baycast_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Caller:
    """An authenticated operator, as of the request."""

    operator: operators_pb2.Operator
    fingerprint: str  # the token hash it authenticated with
    session: Session | None = None  # None: a bearer token

    @property
    def id(self) -> str:
        return self.operator.id

    @property
    def name(self) -> str:
        return self.operator.name

    @property
    def role(self) -> operators_pb2.Role.ValueType:
        return self.operator.role


class Gatekeeper:
    def __init__(
        self, credentials: CredentialBook, sessions: SessionBook, settings: ControlSettings
    ) -> None:
        self.credentials = credentials
        self.sessions = sessions
        self.settings = settings

    # -- who -----------------------------------------------------------------------------------

    def authenticate(self, request: web.Request) -> Caller:
        """The caller of `request`: by its bearer token if it has one, else by its cookie."""
        if "Authorization" in request.headers:
            return self.by_token(bearer_token(request))
        session_id = request.cookies.get(SESSION_COOKIE, "")
        session = self.sessions.get(session_id) if session_id else None
        if session is not None:
            operator = self.current(session.operator, session.fingerprint)
            if operator is not None:
                return Caller(operator, session.fingerprint, session)
            self.sessions.end_where(lambda s: s.id == session.id)
        raise errors.Unauthenticated("log in first: a bearer token or a session cookie")

    def by_token(self, token: str) -> Caller:
        # A media grant opens WebRTC sessions at ingest and distribution, nothing here: a grant
        # seen in a WHEP request must not drive the show, nor buy itself a successor.
        if token.startswith(GRANT_PREFIX + "."):
            raise errors.Unauthenticated("a media grant is not a token of the control room")
        principal = self.credentials.identify(token)
        if principal is None:
            raise errors.Unauthenticated("missing, wrong or revoked token")
        if not principal.is_operator:
            raise errors.PermissionDenied("a station's token does not open the control room")
        operator = self.credentials.operators.get(principal.id)
        if operator is None:  # removed between the two reads
            raise errors.Unauthenticated("missing, wrong or revoked token")
        return Caller(operator, operator.token_sha256)

    def current(self, operator_id: str, fingerprint: str) -> operators_pb2.Operator | None:
        """The operator, while its token is still the one with hash `fingerprint`."""
        operator = self.credentials.operators.get(operator_id)
        if operator is None or operator.revoked or not fingerprint:
            return None
        return operator if operator.token_sha256 == fingerprint else None

    def still_valid(self, caller: Caller) -> bool:
        """Whether `caller` may go on (its token unchanged, its session not ended)."""
        if self.current(caller.id, caller.fingerprint) is None:
            return False
        return caller.session is None or caller.session.id in self.sessions

    # -- may it change anything ------------------------------------------------------------------

    def check_write(self, request: web.Request, caller: Caller) -> None:
        """A cookie-authenticated state-changing request: its session's CSRF token, our origin."""
        if caller.session is None or request.method in SAFE_METHODS:
            return
        self.check_origin(request, required=True)
        if not caller.session.csrf_matches(request.headers.get(CSRF_HEADER, "")):
            raise errors.PermissionDenied(
                f"{CSRF_HEADER} is missing or is not this session's", field=CSRF_HEADER
            )

    def check_origin(self, request: web.Request, *, required: bool) -> None:
        origin = request.headers.get("Origin")
        if origin is None and not required:
            return
        if (origin or "").lower() != self.own_origin(request).lower():
            raise errors.PermissionDenied(
                "the request does not come from the control room's own origin", field="Origin"
            )

    # -- where ---------------------------------------------------------------------------------

    def forwarded(self, request: web.Request, header: str) -> str:
        """The first value of a proxy's X-Forwarded-* header, when proxies are trusted."""
        if not self.settings.trust_proxy:
            return ""
        return request.headers.get(header, "").split(",")[0].strip()

    def is_secure(self, request: web.Request) -> bool:
        proto = self.forwarded(request, "X-Forwarded-Proto")
        return (proto or request.scheme).lower() == "https"

    def own_origin(self, request: web.Request) -> str:
        if self.settings.public_origin:
            return self.settings.public_origin
        host = self.forwarded(request, "X-Forwarded-Host") or request.host
        return f"{'https' if self.is_secure(request) else 'http'}://{host}"

    def client_address(self, request: web.Request) -> str:
        """The client's address; behind a trusted proxy, the one it appended last."""
        if self.settings.trust_proxy:
            chain = request.headers.get("X-Forwarded-For", "")
            last = chain.split(",")[-1].strip()
            if last:
                return last
        return request.remote or ""
