"""User templates (good and broken) and data binding from a JSON file and an HTTP URL."""

from __future__ import annotations

import asyncio
import json
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

GOOD = """
name: my_badge
fields:
  label: {default: "深圳 LIVE"}
elements:
  - {type: box, x: 100, y: 100, width: 300, height: 80, color: "#0B3D91"}
  - {type: text, x: 100, y: 100, width: 300, height: 80, text: "{label}", size: 40, align: center}
"""
BROKEN = {
    # The good template's file, edited into a bad colour: the old version stays on air.
    "my_badge.yaml": GOOD.replace('"#0B3D91"', '"#0B3D9G"'),
    "sparkle.yaml": """
name: sparkle
elements:
  - {type: box, x: 0, y: 0, width: 10, height: 10, color: "#FFFFFF"}
  - {type: sparkle, x: 0, y: 0}
""",
    "nofont.json": json.dumps(
        {
            "name": "nofont",
            "elements": [{"type": "text", "text": "字", "font": "/nonexistent/font.ttf"}],
        }
    ),
}
EXPECTED_ERRORS = {
    "my_badge.yaml": "elements[0].color",
    "sparkle.yaml": "elements[1].type",
    "nofont.json": "elements[0].font",
}


async def command(bus: Bus, production: str, cmd: graphics_pb2.GfxCommand) -> graphics_pb2.GfxReply:
    return await bus.request(
        subject("prod", production, "gfx", "cmd"), cmd, graphics_pb2.GfxReply, timeout=10
    )


async def test_a_broken_template_is_rejected_naming_file_and_field_while_graphics_run(
    nats_server: NatsServer, production: str, tmp_path: Path
) -> None:
    (tmp_path / "my_badge.yaml").write_text(GOOD, encoding="utf-8")
    bus = Bus(nats_server.url, "test-ctl")
    await bus.connect()
    try:
        async with (
            running_service(
                GraphicsService,
                GraphicsSettings,
                nats_server.url,
                templates_dir=str(tmp_path),
                template_scan_s=0.2,
            ) as svc,
            LayerReceiver(f"127.0.0.1:{svc.grpc.port}", production, 1280, 720) as rx,
        ):
            for cmd in (
                graphics_pb2.GfxShow(template="my_badge", cut=True),
                graphics_pb2.GfxShow(template="ticker", cut=True),  # keeps the layer moving
            ):
                await command(bus, production, graphics_pb2.GfxCommand(show=cmd))
            await rx.wait_for(lambda: len(rx.frames) > 10)
            badge = rx.canvas[60:130, 60:280].copy()
            assert badge[..., 3].any()

            for name, text in BROKEN.items():
                (tmp_path / name).write_text(text, encoding="utf-8")
            reply = await command(
                bus, production, graphics_pb2.GfxCommand(templates={"reload": True})
            )
            found = {Path(e.file).name: e.field for e in reply.template_errors}
            assert found == EXPECTED_ERRORS
            assert "my_badge" in {t.name for t in reply.templates}  # its last good version

            with pytest.raises(errors.InvalidArgument) as caught:
                await command(
                    bus, production, graphics_pb2.GfxCommand(show={"template": "sparkle"})
                )
            assert caught.value.field == "elements[1].type"
            assert "sparkle.yaml" in caught.value.message and "sparkle" in caught.value.message

            # The layer kept going all along: frames on every tick, the badge untouched.
            seen = len(rx.frames)
            await asyncio.sleep(1.0)
            recent = rx.frames[seen:]
            assert len(recent) >= 10
            assert np.array_equal(rx.canvas[60:130, 60:280], badge)
            listed = await command(bus, production, graphics_pb2.GfxCommand(list={}))
            assert {i.id for i in listed.instances} == {"my_badge", "ticker"}

            # Fixing the file is picked up by the folder scan and re-renders what is on air.
            (tmp_path / "my_badge.yaml").write_text(
                GOOD.replace('"#0B3D91"', '"#D7141A"'), encoding="utf-8"
            )
            await rx.wait_for(lambda: rx.canvas[75, 80, 0] > 150, timeout=10)  # now red
    finally:
        await bus.drain()


async def test_fields_follow_a_json_file_and_an_http_url(
    nats_server: NatsServer, production: str, tmp_path: Path
) -> None:
    data_file = tmp_path / "reporter.json"
    data_file.write_text(json.dumps({"reporter": {"name": "王芳"}}), encoding="utf-8")
    served = {"headlines": ["第一条"], "title": "佛山台记者"}

    async def feed(_request: web.Request) -> web.Response:
        return web.json_response(served)

    app = web.Application()
    app.router.add_get("/feed.json", feed)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/feed.json"

    bus = Bus(nats_server.url, "test-ctl")
    await bus.connect()
    updates: list[graphics_pb2.GfxInstance] = []
    updated = asyncio.Event()

    async def on_state(state: graphics_pb2.GfxState, _subject: str) -> None:
        if state.event == "updated":
            updates.append(state.instance)
            updated.set()

    await bus.subscribe(
        subject("prod", production, "gfx", "state"), graphics_pb2.GfxState, on_state
    )

    async def until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
        async with asyncio.timeout(timeout):
            while not any(check(i) for i in updates):
                updated.clear()
                await updated.wait()

    try:
        async with (
            running_service(
                GraphicsService,
                GraphicsSettings,
                nats_server.url,
                # The data policy allows this folder, and the feed's address and port only.
                binding_data_dir=str(tmp_path),
                binding_hosts=(f"127.0.0.1:{port}",),
                binding_networks=("127.0.0.1/32",),
            ) as svc,
            LayerReceiver(f"127.0.0.1:{svc.grpc.port}", production, 1280, 720) as rx,
        ):
            lower = graphics_pb2.GfxShow(
                template="lower_third",
                instance="lt",
                cut=True,
                bindings=[
                    graphics_pb2.GfxBinding(
                        field="name", file=str(data_file), path="reporter.name", interval_ms=100
                    ),
                    graphics_pb2.GfxBinding(field="title", url=url, path="title", interval_ms=100),
                ],
            )
            ticker = graphics_pb2.GfxShow(
                template="ticker",
                instance="news",
                cut=True,
                bindings=[
                    graphics_pb2.GfxBinding(
                        field="items", url=url, path="headlines", interval_ms=100
                    )
                ],
            )
            await command(bus, production, graphics_pb2.GfxCommand(show=lower))
            await command(bus, production, graphics_pb2.GfxCommand(show=ticker))

            async def fields() -> dict[str, dict[str, str]]:
                listed = await command(bus, production, graphics_pb2.GfxCommand(list={}))
                return {i.id: dict(i.fields) for i in listed.instances}

            async with asyncio.timeout(10):
                while True:
                    now = await fields()
                    if (
                        now["lt"]["name"] == "王芳"
                        and now["lt"]["title"] == "佛山台记者"
                        and json.loads(now["news"]["items"]) == ["第一条"]
                    ):
                        break
                    await asyncio.sleep(0.1)
            data_file.write_text(json.dumps({"reporter": {"name": "赵磊"}}), encoding="utf-8")
            await until(lambda i: i.id == "lt" and i.fields["name"] == "赵磊")
            served["headlines"] = ["第一条", "第二条 breaking"]
            await until(
                lambda i: i.id == "news" and json.loads(i.fields["items"])[-1] == "第二条 breaking"
            )
            served["title"] = "江门台记者"
            await until(lambda i: i.id == "lt" and i.fields["title"] == "江门台记者")
            # The re-rendered lower third reached the layer (the crawl runs below it).
            template = shipped("lower_third")
            values = {**template.defaults(), "name": "赵磊", "title": "江门台记者"}
            expected, (x0, y0, x1, y1) = at_rest(template, values, 1280, 720)
            await rx.wait_for(
                lambda: np.array_equal(rx.canvas[y0:y1, x0:x1], expected[y0:y1, x0:x1])
            )

            # A value that does not fit its field is refused (counted), the field keeps its value.
            def refused_values() -> float:
                labels = {"source": "value"}
                return (
                    REGISTRY.get_sample_value("baycast_graphics_binding_errors_total", labels) or 0
                )

            before = refused_values()
            served["headlines"] = "not a list"
            async with asyncio.timeout(10):  # polled: a metric has no event to wait on
                while True:
                    if refused_values() > before:
                        break
                    await asyncio.sleep(0.05)
            assert json.loads((await fields())["news"]["items"]) == ["第一条", "第二条 breaking"]

            # A binding naming a field the template lacks is refused up front.
            bad = graphics_pb2.GfxUpdate(
                instance="lt", bindings=[graphics_pb2.GfxBinding(field="score", url=url)]
            )
            with pytest.raises(errors.InvalidArgument) as caught:
                await command(bus, production, graphics_pb2.GfxCommand(update=bad))
            assert caught.value.field == "update.bindings[0].field"
    finally:
        await bus.drain()
        await runner.cleanup()
