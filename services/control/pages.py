"""The control room's pages and the files they load: HTML, the app's modules and style, and the
front-end library (`web_modules.py`), all from memory, all under the service's strict CSP."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from services.common import errors
from services.control.access import Caller
from services.control.routes import Route
from services.control.web_modules import WebModule

CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css"}
# The pages change with the service: a browser asks again (and gets 304 for the library).
REVALIDATE = {"Cache-Control": "no-cache"}


def _static_files() -> dict[str, tuple[str, str]]:
    """name -> (text, content type) of the app's scripts and style."""
    out = {}
    for entry in resources.files("services.control.static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in CONTENT_TYPES:
            out[entry.name] = (entry.read_text(encoding="utf-8"), CONTENT_TYPES[suffix])
    return out


def _page(name: str) -> str:
    return resources.files("services.control.static").joinpath(name).read_text(encoding="utf-8")


class Pages:
    def __init__(self, modules: dict[str, WebModule]) -> None:
        self.modules = modules
        self.pages = {"/": _page("index.html"), "/login": _page("login.html")}
        self.assets = _static_files()

    async def index(self, _request: web.Request, _c: Caller | None, _r: Route) -> web.Response:
        return web.Response(text=self.pages["/"], content_type="text/html", headers=REVALIDATE)

    async def login_page(self, _request: web.Request, _c: Caller | None, _r: Route) -> web.Response:
        return web.Response(text=self.pages["/login"], content_type="text/html", headers=REVALIDATE)

    async def asset(self, request: web.Request, _c: Caller | None, _r: Route) -> web.Response:
        name = request.match_info["name"]
        if name not in self.assets:
            raise errors.NotFound(f"no asset {name!r}")
        text, content_type = self.assets[name]
        return web.Response(text=text, content_type=content_type, headers=REVALIDATE)

    async def web_module(self, request: web.Request, _c: Caller | None, _r: Route) -> web.Response:
        module = self.modules.get(request.match_info["name"])
        if module is None:
            raise errors.NotFound(f"no module {request.match_info['name']!r}")
        headers = {**REVALIDATE, "ETag": module.etag}
        if request.headers.get("If-None-Match") == module.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(text=module.text, content_type="text/javascript", headers=headers)
