"""Browser sessions: a random cookie id mapped, in this process, to an operator and a CSRF token.

A session remembers the hash of the token it was opened with: when the operator's token is
rotated or revoked the hash no longer matches and the session ends (the service also ends them
as soon as the `operators` bucket changes). Each session holds its own CSRF token, which every
state-changing request made with the cookie must repeat in `X-CSRF-Token`: a value another
session (or a forged page) holds is worthless here. Sessions expire after `ttl_s`, or after
`idle_s` without a request; past `max_sessions` the oldest go first.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from services.control import metrics

SESSION_ID_BYTES = 32
CSRF_BYTES = 32


@dataclass
class Session:
    id: str
    operator: str
    fingerprint: str  # the operator's token hash when the session opened
    csrf: str
    created: float
    expires: float
    last_seen: float

    def csrf_matches(self, presented: str) -> bool:
        return bool(presented) and hmac.compare_digest(presented.encode(), self.csrf.encode())


class SessionBook:
    def __init__(
        self,
        ttl_s: float,
        idle_s: float,
        max_sessions: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def open(self, operator: str, fingerprint: str) -> Session:
        now = self.clock()
        session = Session(
            id=secrets.token_urlsafe(SESSION_ID_BYTES),
            operator=operator,
            fingerprint=fingerprint,
            csrf=secrets.token_urlsafe(CSRF_BYTES),
            created=now,
            expires=now + self.ttl_s,
            last_seen=now,
        )
        self._sessions[session.id] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
            metrics.SESSIONS_ENDED.labels("expired").inc()
        metrics.SESSIONS.set(len(self._sessions))
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session with this id (its idle clock restarted), or None."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self.clock()
        if now >= session.expires or now - session.last_seen >= self.idle_s:
            self._end(session.id, "expired")
            return None
        session.last_seen = now
        return session

    def close(self, session_id: str) -> bool:
        return self._end(session_id, "logout")

    def end_where(self, stale: Callable[[Session], bool], reason: str = "credential") -> int:
        """End every session for which `stale(session)`; how many ended."""
        ended = [s.id for s in self._sessions.values() if stale(s)]
        for session_id in ended:
            self._end(session_id, reason)
        return len(ended)

    def sweep(self) -> int:
        """End expired and idle sessions; how many ended."""
        now = self.clock()
        return self.end_where(
            lambda s: now >= s.expires or now - s.last_seen >= self.idle_s, "expired"
        )

    def _end(self, session_id: str, reason: str) -> bool:
        if self._sessions.pop(session_id, None) is None:
            return False
        metrics.SESSIONS_ENDED.labels(reason).inc()
        metrics.SESSIONS.set(len(self._sessions))
        return True
