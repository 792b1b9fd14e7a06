"""HLS over the service's HTTP server, and who watches it.

`/hls/<prod>/index.m3u8` and its segments are served from `data_dir/hls/<prod>/`. A viewer is a
session: the `session` query parameter when the player sends one, else client address + user
agent. Viewers are the distinct sessions that fetched a playlist or segment within the sliding
window; segment and playlist requests are counted.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from services.distribution import metrics
from services.distribution.distributor import ID_PATTERN

FILE_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}\.(m3u8|ts|m4s|mp4)$")
CONTENT_TYPES = {
    "m3u8": "application/vnd.apple.mpegurl",
    "ts": "video/mp2t",
    "m4s": "video/iso.segment",
    "mp4": "video/mp4",
}
# A production with more sessions than this in one window is counted, but old ones go first.
MAX_SESSIONS_PER_PRODUCTION = 100_000


class Audience:
    """Distinct viewer sessions per production over a sliding window."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._seen: dict[str, dict[str, float]] = {}

    def touch(self, production: str, session: str) -> None:
        sessions = self._seen.setdefault(production, {})
        sessions.pop(session, None)  # re-insert: dicts keep insertion order, oldest first
        sessions[session] = self._clock()
        if len(sessions) > MAX_SESSIONS_PER_PRODUCTION:
            sessions.pop(next(iter(sessions)))

    def viewers(self, production: str) -> int:
        sessions = self._seen.get(production, {})
        horizon = self._clock() - self.window_s
        for session in [s for s, seen in sessions.items() if seen < horizon]:
            del sessions[session]
        return len(sessions)

    def refresh_metrics(self) -> None:
        for production in list(self._seen):
            metrics.HLS_VIEWERS.labels(production).set(self.viewers(production))


def session_of(request: web.Request) -> str:
    explicit = request.query.get("session", "")
    if explicit:
        return "s:" + explicit[:128]
    forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
    who = f"{forwarded or request.remote}|{request.headers.get('User-Agent', '')}"
    return "c:" + hashlib.blake2s(who.encode(), digest_size=12).hexdigest()


class HlsServer:
    """The aiohttp handler of `/hls/{production}/{name}`."""

    def __init__(self, hls_root: Path, audience: Audience) -> None:
        self.root = hls_root
        self.audience = audience

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/hls/{production}/{name}", self.serve)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        production = request.match_info["production"]
        name = request.match_info["name"]
        match = FILE_PATTERN.match(name)
        if not ID_PATTERN.match(production) or match is None:
            raise web.HTTPNotFound()
        path = self.root / production / name
        if not path.is_file():
            raise web.HTTPNotFound()
        ext = match.group(1)
        self.audience.touch(production, session_of(request))
        metrics.HLS_VIEWERS.labels(production).set(self.audience.viewers(production))
        if ext == "m3u8":
            metrics.HLS_PLAYLIST_REQUESTS.labels(production).inc()
            cache = "no-cache"
        else:
            metrics.HLS_SEGMENT_REQUESTS.labels(production).inc()
            cache = "max-age=60"
        return web.FileResponse(
            path,
            headers={
                "Content-Type": CONTENT_TYPES[ext],
                "Cache-Control": cache,
                "Access-Control-Allow-Origin": "*",
            },
        )
