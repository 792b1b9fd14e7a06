"""The local show page at http://127.0.0.1:8080: program player, multiview, links.

The program plays from distribution's HLS (proxied here so the page has one origin); hls.js is
installed from the npm registry by `make setup` for browsers without native HLS. The multiview
is a JPEG of the mixer's `multiview` handle, refreshed by the page once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import string
from pathlib import Path

import aiohttp
from aiohttp import web
from PIL import Image

from services.common.gen.baycast.v1 import media_pb2
from services.common.handles import HandleDirectory
from services.common.media import proto_to_av
from services.common.rpc import ChannelCache
from services.common.tls import InternalTls, http_connector, server_context

HLS_JS = Path("build/web/node_modules/hls.js/dist/hls.min.js")
MULTIVIEW_SIZE = (960, 540)

PAGE = string.Template((Path(__file__).parent / "page.html").read_text(encoding="utf-8"))


class ShowPage:
    def __init__(
        self,
        directory: HandleDirectory,
        production: str,
        title: str,
        endpoints: dict[str, str],
        tls: InternalTls | None = None,
    ) -> None:
        self.directory = directory
        self.production = production
        self.title = title
        self.endpoints = endpoints  # service name -> http(s) base URL
        # Under --tls: the page is served over HTTPS and reaches the services with the CA.
        self.tls = tls
        self.channels = ChannelCache(tls.grpc_channel_credentials() if tls else None)
        self.latest_jpeg: bytes | None = None
        self.have_hls_js = HLS_JS.exists()
        self.app = web.Application()
        self.app.router.add_get("/", self.index)
        self.app.router.add_get("/hls.min.js", self.hls_js)
        self.app.router.add_get("/multiview.jpg", self.multiview)
        self.app.router.add_get("/hls/{path:.*}", self.hls)
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def index(self, _request: web.Request) -> web.Response:
        metrics = " · ".join(
            f'<a href="{url}/metrics">{name}</a>' for name, url in self.endpoints.items()
        )
        status = self.endpoints.get("monitoring", "") + "/status"
        body = PAGE.substitute(
            title=self.title, prod=self.production, status=status, metrics=metrics
        )
        return web.Response(text=body, content_type="text/html")

    async def hls_js(self, _request: web.Request) -> web.StreamResponse:
        if not self.have_hls_js:
            raise web.HTTPNotFound(text="hls.js is not installed: run `make setup`")
        return web.FileResponse(HLS_JS)

    async def hls(self, request: web.Request) -> web.Response:
        assert self._session is not None
        url = f"{self.endpoints['distribution']}/hls/{request.match_info['path']}"
        async with self._session.get(url) as resp:
            return web.Response(
                body=await resp.read(),
                status=resp.status,
                headers={
                    "Content-Type": resp.headers.get("Content-Type", "application/octet-stream"),
                    "Cache-Control": "no-cache",
                },
            )

    async def multiview(self, _request: web.Request) -> web.Response:
        if self.latest_jpeg is None:
            raise web.HTTPServiceUnavailable(text="no multiview frame yet")
        return web.Response(
            body=self.latest_jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"}
        )

    async def _follow_multiview(self) -> None:
        rendition = media_pb2.Rendition(
            width=MULTIVIEW_SIZE[0], height=MULTIVIEW_SIZE[1], fps=1, no_audio=True
        )
        name = f"prod/{self.production}/multiview"
        async for frame in self.directory.frames(
            self.channels, name, rendition, subscriber="show-page"
        ):
            if frame.HasField("video"):
                with contextlib.suppress(ValueError):  # malformed, or its shared slot reused
                    self.latest_jpeg = await asyncio.to_thread(_jpeg, frame.video)

    async def start(self, host: str, port: int) -> None:
        self._session = aiohttp.ClientSession(
            connector=http_connector(self.tls.ca_file if self.tls else "")
        )
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        context = server_context(self.tls.cert_file, self.tls.key_file) if self.tls else None
        await web.TCPSite(self._runner, host, port, ssl_context=context).start()
        self._task = asyncio.create_task(self._follow_multiview())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        await self.channels.close()


def _jpeg(frame: media_pb2.VideoFrame) -> bytes:
    image: Image.Image = proto_to_av(frame).to_image()
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()
