"""What a binding may read: the data policy against a real graphics service, real HTTP servers on
127.0.0.1 and real files. A refused source gets a clear error (in the command's reply when the
command names it, as a `binding_refused` state event when it turns out refused while watched),
is counted, and never reaches the layer; an allowed one does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from services.common import errors
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import graphics_pb2
from services.graphics.service import GraphicsService
from services.graphics.settings import GraphicsSettings
from tests.integration.graphics.receiver import LayerReceiver, at_rest, shipped
from tests.support.nats import NatsServer
from tests.support.services import running_service

SECRET = "s3cret-口令"
FEED = {"name": "王芳", "title": "佛山台记者", "station": "佛山台"}


async def command(bus: Bus, production: str, cmd: graphics_pb2.GfxCommand) -> graphics_pb2.GfxReply:
    return await bus.request(
        subject("prod", production, "gfx", "cmd"), cmd, graphics_pb2.GfxReply, timeout=10
    )


def lower_third(*bindings: graphics_pb2.GfxBinding, **fields: str) -> graphics_pb2.GfxCommand:
    return graphics_pb2.GfxCommand(
        show=graphics_pb2.GfxShow(
            template="lower_third", instance="lt", cut=True, fields=fields, bindings=bindings
        )
    )


def bind(field: str, *, url: str = "", file: str = "") -> graphics_pb2.GfxBinding:
    return graphics_pb2.GfxBinding(field=field, url=url, file=file, path=field, interval_ms=100)


def redirect(status: int, location: str) -> web.Response:
    return web.Response(status=status, headers={"Location": location})


def refusals(source: str, rule: str) -> float:
    labels = {"source": source, "rule": rule}
    return REGISTRY.get_sample_value("baycast_graphics_binding_refusals_total", labels) or 0.0


class Site:
    """A real HTTP server on 127.0.0.1 that counts the requests it answered."""

    def __init__(self, routes: dict[str, Callable[[web.Request], web.StreamResponse]]) -> None:
        self.routes = routes
        self.hits: list[str] = []
        self.port = 0

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Site]:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.hits.append(request.path)
            return self.routes[request.path](request)

        app = web.Application()
        for path in self.routes:
            app.router.add_get(path, handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            yield self
        finally:
            await runner.cleanup()


class StateLog:
    """The production's gfx.state events, to wait on."""

    def __init__(self) -> None:
        self.events: list[graphics_pb2.GfxState] = []
        self._arrived = asyncio.Event()

    async def on_state(self, state: graphics_pb2.GfxState, _subject: str) -> None:
        self.events.append(state)
        self._arrived.set()

    async def until(
        self, check: Callable[[graphics_pb2.GfxState], bool], timeout: float = 10.0
    ) -> graphics_pb2.GfxState:
        async with asyncio.timeout(timeout):
            while True:
                for state in self.events:
                    if check(state):
                        return state
                self._arrived.clear()
                await self._arrived.wait()

    def refused(self, field: str, rule: str) -> Callable[[graphics_pb2.GfxState], bool]:
        return lambda s: (
            s.event == "binding_refused" and s.refusal.field == field and s.refusal.rule == rule
        )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A data folder with one good document, beside the platform's secrets."""
    data = tmp_path / "graphics-data"
    data.mkdir()
    (tmp_path / "endpoints.json").write_text(
        json.dumps({"name": SECRET, "operator_password": SECRET}), encoding="utf-8"
    )
    (data / "reporter.json").write_text(json.dumps(FEED, ensure_ascii=False), encoding="utf-8")
    (data / "leak.json").symlink_to(tmp_path / "endpoints.json")
    return data


async def test_refused_sources_never_air_and_an_allowed_file_does(
    nats_server: NatsServer, production: str, files: Path
) -> None:
    feed = Site({"/feed.json": lambda _r: web.json_response(FEED)})
    bus = Bus(nats_server.url, "test-ctl")
    await bus.connect()
    states = StateLog()
    await bus.subscribe(
        subject("prod", production, "gfx", "state"), graphics_pb2.GfxState, states.on_state
    )
    try:
        async with (
            feed.running(),
            running_service(
                GraphicsService,
                GraphicsSettings,
                nats_server.url,
                # Loopback names and addresses are on the list, but no network opens them.
                binding_hosts=(
                    f"127.0.0.1:{feed.port}",
                    f"localhost:{feed.port}",
                    "169.254.169.254",
                ),
                binding_data_dir=str(files),
            ) as svc,
            LayerReceiver(f"127.0.0.1:{svc.grpc.port}", production, 1280, 720) as rx,
        ):
            secret = str(files.parent / "endpoints.json")
            refused = [
                (
                    bind("name", url=f"http://127.0.0.1:{feed.port}/feed.json"),
                    "url",
                    "address_loopback",
                ),
                (
                    bind("name", url="http://169.254.169.254/latest/meta-data/"),
                    "url",
                    "address_metadata",
                ),
                (
                    bind("name", url="https://scores.example.net/feed.json"),
                    "url",
                    "host_not_allowed",
                ),
                (bind("name", file=secret), "file", "outside_data_dir"),
                (bind("name", file="leak.json"), "file", "outside_data_dir"),  # a link out
                (bind("name", file="../endpoints.json"), "file", "outside_data_dir"),
            ]
            before = {(s, r): refusals(s, r) for _b, s, r in refused}
            for binding, source, rule in refused:
                with pytest.raises(errors.PermissionDenied) as caught:
                    await command(bus, production, lower_third(binding))
                target = binding.url or binding.file
                assert caught.value.code == "PERMISSION_DENIED"
                assert caught.value.field == f"show.bindings[0].{source}"
                assert f"({rule})" in caught.value.message and target in caught.value.message
            after = {(s, r): refusals(s, r) for _b, s, r in refused}
            assert {k: after[k] - before[k] for k in after} == {
                ("url", "address_loopback"): 1,
                ("url", "address_metadata"): 1,
                ("url", "host_not_allowed"): 1,
                ("file", "outside_data_dir"): 3,
            }
            listed = await command(bus, production, graphics_pb2.GfxCommand(list={}))
            assert list(listed.instances) == []
            assert not rx.canvas.any()  # nothing on air

            # An allowed file airs; a name on the list that resolves to a loopback address
            # is refused where the connection is made, and its field keeps its own value.
            await command(
                bus,
                production,
                lower_third(
                    bind("name", file="reporter.json"),
                    bind("title", url=f"http://localhost:{feed.port}/feed.json"),
                    title="江门台记者",
                ),
            )
            event = await states.until(states.refused("title", "address_loopback"))
            assert event.refusal.target == f"http://localhost:{feed.port}/feed.json"
            assert "127.0.0.1" in event.refusal.message or "::1" in event.refusal.message
            await states.until(lambda s: s.instance.fields.get("name") == "王芳")
            template = shipped("lower_third")
            values = {**template.defaults(), "name": "王芳", "title": "江门台记者"}
            expected, (x0, y0, x1, y1) = at_rest(template, values, 1280, 720)
            await rx.wait_for(
                lambda: np.array_equal(rx.canvas[y0:y1, x0:x1], expected[y0:y1, x0:x1])
            )
            assert feed.hits == []  # never connected

            # The file swapped for a link out of the folder while watched: refused, told.
            (files / "reporter.json").unlink()
            (files / "reporter.json").symlink_to(files.parent / "endpoints.json")
            event = await states.until(states.refused("name", "outside_data_dir"))
            assert "endpoints.json" in event.refusal.message
            listed = await command(bus, production, graphics_pb2.GfxCommand(list={}))
            assert [i.fields["name"] for i in listed.instances] == ["王芳"]
            assert SECRET not in str(listed)
    finally:
        await bus.drain()


async def test_redirects_stay_on_the_allow_list(
    nats_server: NatsServer, production: str, files: Path
) -> None:
    other = Site({"/secret.json": lambda _r: web.json_response({"name": SECRET})})
    feed = Site(
        {
            "/feed.json": lambda _r: web.json_response(FEED),
            "/hop": lambda _r: redirect(302, "/feed.json"),
            "/to-other": lambda _r: redirect(302, f"http://127.0.0.1:{other.port}/secret.json"),
            # On the list by name, but a loopback address no allowed network holds (nothing
            # listens there: a broken guard would still not leave this machine).
            "/to-loopback": lambda _r: redirect(307, f"http://127.0.0.2:{feed.port}/feed.json"),
        }
    )
    bus = Bus(nats_server.url, "test-ctl")
    await bus.connect()
    states = StateLog()
    await bus.subscribe(
        subject("prod", production, "gfx", "state"), graphics_pb2.GfxState, states.on_state
    )
    try:
        async with (
            other.running(),
            feed.running(),
            running_service(
                GraphicsService,
                GraphicsSettings,
                nats_server.url,
                # Loopback opened explicitly: one address, and the feed's port only.
                binding_hosts=(f"127.0.0.1:{feed.port}", f"127.0.0.2:{feed.port}"),
                binding_networks=("127.0.0.1/32",),
                binding_data_dir=str(files),
            ) as svc,
            LayerReceiver(f"127.0.0.1:{svc.grpc.port}", production, 1280, 720) as rx,
        ):
            base = f"http://127.0.0.1:{feed.port}"
            before = refusals("url", "redirect")
            await command(
                bus,
                production,
                lower_third(
                    bind("title", url=f"{base}/hop"),
                    bind("name", url=f"{base}/to-other"),
                    bind("station", url=f"{base}/to-loopback"),
                    name="赵磊",
                    station="江门台",
                ),
            )
            # A redirect within the list is followed: the allowed source airs.
            await states.until(lambda s: s.instance.fields.get("title") == "佛山台记者")
            to_other = await states.until(states.refused("name", "redirect"))
            to_loopback = await states.until(states.refused("station", "redirect"))
            assert to_other.refusal.target == f"{base}/to-other"
            assert f"127.0.0.1:{other.port}" in to_other.refusal.message
            assert "allow-list" in to_other.refusal.message
            assert "127.0.0.2" in to_loopback.refusal.message
            assert "loopback" in to_loopback.refusal.message
            assert refusals("url", "redirect") - before >= 2
            assert other.hits == []  # the redirect out was not followed

            template = shipped("lower_third")
            values = {**template.defaults(), "name": "赵磊", "title": "佛山台记者"}
            values["station"] = "江门台"
            expected, (x0, y0, x1, y1) = at_rest(template, values, 1280, 720)
            await rx.wait_for(
                lambda: np.array_equal(rx.canvas[y0:y1, x0:x1], expected[y0:y1, x0:x1])
            )
            listed = await command(bus, production, graphics_pb2.GfxCommand(list={}))
            assert SECRET not in str(listed)
    finally:
        await bus.drain()
