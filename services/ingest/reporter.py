"""The reporter page: a link a reporter opens on a phone to go live over WHIP from the browser.

    GET /contribute/<station>                 the page (camera preview, level meter, Go live/Stop)
    GET /contribute/assets/reporter.js|.css   its script and style

The page publishes to `/whip/<station>` with the station's token, typed in or carried in the
link's fragment (`/contribute/gz#token=...`): browsers never send a fragment to the server, so
the token stays out of access logs and proxies. The page is served only for an existing,
unrevoked station (404 otherwise) with a strict Content-Security-Policy (its own script, no
inline code, requests only to this origin). Browsers allow the camera on `http://localhost` or
over HTTPS only: put ingest behind TLS for phones.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from services.ingest.stations import StationRegistry

ASSETS = {"reporter.js": "text/javascript", "reporter.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "media-src 'self' blob: mediastream:; img-src 'self' data:; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Permissions-Policy": "camera=(self), microphone=(self)",
    "Cache-Control": "no-store",
}


def _static(name: str) -> str:
    return resources.files("services.ingest.static").joinpath(name).read_text(encoding="utf-8")


class ReporterPage:
    def __init__(self, stations: StationRegistry) -> None:
        self.stations = stations
        self._page = _static("contribute.html")
        self._assets = {name: _static(name) for name in ASSETS}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/contribute/assets/{name}", self.asset)
        app.router.add_get("/contribute/{station}", self.page)
        app.router.add_get("/station/{station}", self.page)

    async def page(self, request: web.Request) -> web.Response:
        station = await self.stations.get(request.match_info["station"])
        if station is None or station.revoked:
            return web.Response(status=404, text="no such station\n", headers=SECURITY_HEADERS)
        return web.Response(text=self._page, content_type="text/html", headers=SECURITY_HEADERS)

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.Response(
            text=self._assets[name], content_type=ASSETS[name], headers=SECURITY_HEADERS
        )
