"""The station's page: one link for a station or a reporter, opened on a phone or a desktop.

    GET /station/<station>                    the page: contribute (camera, level, Go live/Stop),
    GET /contribute/<station>                 the return player, tally and cues (docs/adr/0012)
    GET /station/<station>/config.json        {"station", "whip_url", "exchange_url"}, and
                                              "name" with the station's bearer token
    GET /contribute/assets/<name>             its scripts (JS modules, no build step) and style

The page publishes to `/whip/<station>` with the station's token, typed in or carried in the
link's fragment (`/station/gz#token=...`): browsers never send a fragment to the server, so the
token stays out of access logs and proxies. The return, the event stream (tally, cues, talkback)
and cue acknowledgements come from distribution, at `exchange_url` (another origin unless a
reverse proxy joins them; empty means this one).

No one learns here which stations exist: the page is the same for every well-formed station id
(404 only for an id no station can have), and the configuration without the station's token,
or with a wrong one, is the same for a station that exists, one revoked and one that does not
(200, built from the id alone, with no lookup when no token comes; a token is checked with
`StationRegistry.authenticate`, which takes as long for a station that does not exist). Only
the station's own token adds its name. Every request takes a token of its client address's
bucket first (`http_limits.py`). The page's Content-Security-Policy allows its own scripts only,
no inline code, and requests to this origin and the exchange's only. Browsers allow the camera
on `http://localhost` or over HTTPS only: put ingest behind TLS for phones.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from aiohttp import web

from services.common import errors
from services.common.web import bearer_token
from services.ingest.stations import STATION_ID, StationRegistry

ASSETS = {
    "reporter.js": "text/javascript",
    "reporter.css": "text/css",
    "station.js": "text/javascript",
    "sse.js": "text/javascript",
    "whep.js": "text/javascript",
    "cues.js": "text/javascript",
}


def content_security_policy(exchange_origin: str = "") -> str:
    """The page's policy: requests and media from this origin and the exchange's only."""
    remote = f" {exchange_origin}" if exchange_origin else ""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"connect-src 'self'{remote}; media-src 'self'{remote} blob: mediastream:; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def security_headers(exchange_origin: str = "") -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(exchange_origin),
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Permissions-Policy": "camera=(self), microphone=(self)",
        "Cache-Control": "no-store",
    }


def _static(name: str) -> str:
    return resources.files("services.ingest.static").joinpath(name).read_text(encoding="utf-8")


class ReporterPage:
    def __init__(
        self, stations: StationRegistry, exchange_url: str = "", exchange_origin: str = ""
    ) -> None:
        self.stations = stations
        self.exchange_url = exchange_url.rstrip("/")
        self.headers = security_headers(exchange_origin)
        self._page = _static("contribute.html")
        self._assets = {name: _static(name) for name in ASSETS}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/contribute/assets/{name}", self.asset)
        app.router.add_get("/contribute/{station}", self.page)
        app.router.add_get("/station/{station}", self.page)
        app.router.add_get("/station/{station}/config.json", self.config)

    async def page(self, request: web.Request) -> web.Response:
        if not STATION_ID.match(request.match_info["station"]):
            return web.Response(status=404, text="no such station\n", headers=self.headers)
        return web.Response(text=self._page, content_type="text/html", headers=self.headers)

    async def config(self, request: web.Request) -> web.Response:
        """What the page and the station client need before they hold a token (the same for
        every station id), and with the station's token its name."""
        station_id = request.match_info["station"]
        if not STATION_ID.match(station_id):
            return web.json_response({"error": "no such station"}, status=404, headers=self.headers)
        body: dict[str, Any] = {
            "station": station_id,
            "whip_url": f"{self.stations.whip_base_url()}/whip/{station_id}",
            "exchange_url": self.exchange_url,
        }
        token = bearer_token(request)
        if token:
            try:
                station = await self.stations.authenticate(station_id, token)
            except errors.Unauthenticated:
                pass  # answered as without a token
            else:
                body["name"] = station.name
        return web.json_response(body, headers=self.headers)

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.Response(
            text=self._assets[name], content_type=ASSETS[name], headers=self.headers
        )
