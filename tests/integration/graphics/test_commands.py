"""Commands over a real nats-server: show, update, hide, validation, state events, restart."""

from __future__ import annotations

import asyncio
import signal
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from services.common import errors
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import graphics_pb2, mixer_pb2
from services.common.handles import HandleDirectory
from services.graphics.service import GraphicsService
from services.graphics.settings import GraphicsSettings
from services.mixer.service import MixerService
from services.mixer.settings import MixerSettings
from tests.integration.graphics.receiver import LayerReceiver, at_rest, shipped
from tests.support.mixer import admin
from tests.support.nats import NatsServer
from tests.support.services import running_service, service_process


def show(template: str, iid: str = "", **fields: str) -> graphics_pb2.GfxCommand:
    return graphics_pb2.GfxCommand(
        show=graphics_pb2.GfxShow(template=template, instance=iid, fields=fields, cut=True)
    )


async def command(bus: Bus, production: str, cmd: graphics_pb2.GfxCommand) -> graphics_pb2.GfxReply:
    return await bus.request(
        subject("prod", production, "gfx", "cmd"), cmd, graphics_pb2.GfxReply, timeout=10
    )


async def test_show_and_hide_round_trip(nats_server: NatsServer, production: str) -> None:
    bus = Bus(nats_server.url, "test-ctl")
    await bus.connect()
    events: list[graphics_pb2.GfxState] = []

    async def on_state(state: graphics_pb2.GfxState, _subject: str) -> None:
        events.append(state)

    await bus.subscribe(
        subject("prod", production, "gfx", "state"), graphics_pb2.GfxState, on_state
    )
    try:
        async with running_service(GraphicsService, GraphicsSettings, nats_server.url) as svc:
            endpoint = f"127.0.0.1:{svc.grpc.port}"
            async with LayerReceiver(endpoint, production, 1280, 720) as rx:
                assert not rx.canvas.any()  # nothing on air: a transparent layer
                reply = await command(bus, production, show("live_badge", "badge"))
                assert [(i.id, i.template, i.fields["label"]) for i in reply.instances] == [
                    ("badge", "live_badge", "直播 LIVE")
                ]
                await rx.wait_for(lambda: rx.canvas[..., 3].any())
                shown = await rx.settle()
                ys, xs = np.nonzero(shown[..., 3])
                # live_badge's box is at (1624, 54) 200×56 in 1080p: at 720p (1083, 36) 133×37,
                # plus a soft shadow (a few pixels of blur on every side).
                assert 1072 <= xs.min() <= 1084 and 30 <= ys.min() <= 37
                assert xs.max() < 1230 and ys.max() < 85

                # The handle is in the directory, pointing at this service.
                assert await HandleDirectory(bus).resolve(f"gfx/{production}") == endpoint

                listed = await command(bus, production, graphics_pb2.GfxCommand(list={}))
                assert [i.id for i in listed.instances] == ["badge"]

                hide = graphics_pb2.GfxCommand(hide=graphics_pb2.GfxHide(instance="badge"))
                await command(bus, production, hide)
                await rx.wait_for(lambda: not rx.canvas[..., 3].any())
                listed = await command(bus, production, graphics_pb2.GfxCommand(list={}))
                assert list(listed.instances) == []
                # Hidden and shown again at once with new values: the new values are drawn.
                await command(bus, production, show("live_badge", "badge", label="LIVE 直播中"))
                cut = graphics_pb2.GfxCommand(hide=graphics_pb2.GfxHide(instance="badge", cut=True))
                await command(bus, production, cut)
                await command(bus, production, show("live_badge", "badge", label="深圳 LIVE"))
                template = shipped("live_badge")
                expected, _ = at_rest(template, {"label": "深圳 LIVE"}, 1280, 720)
                await rx.wait_for(lambda: np.array_equal(rx.canvas, expected))
            await asyncio.sleep(0.2)
            assert [(e.event, e.instance.id) for e in events][:2] == [
                ("shown", "badge"),
                ("hidden", "badge"),
            ]
            assert [e.instance.revision for e in events] == [1, 1, 2, 2, 3]
    finally:
        await bus.drain()


async def test_commands_are_validated_and_name_the_field(
    nats_server: NatsServer, production: str
) -> None:
    bus = Bus(nats_server.url, "test-ctl")
    await bus.connect()
    try:
        async with running_service(GraphicsService, GraphicsSettings, nats_server.url):
            cases = [
                (show("no_such_template"), errors.NotFound, "show.template"),
                (show("lower_third", colour="red"), errors.InvalidArgument, "show.fields.colour"),
                (show("city_label", x="left"), errors.InvalidArgument, "show.fields.x"),
                (show("ticker", items="not a list"), errors.InvalidArgument, "show.fields.items"),
                (
                    show("countdown", target="tomorrow"),
                    errors.InvalidArgument,
                    "show.fields.target",
                ),
                (show("lower_third", "bad id!"), errors.InvalidArgument, "show.instance"),
                (
                    graphics_pb2.GfxCommand(hide=graphics_pb2.GfxHide(instance="ghost")),
                    errors.NotFound,
                    "hide.instance",
                ),
                (graphics_pb2.GfxCommand(), errors.InvalidArgument, "command"),
            ]

            def refused(verb: str, code: str) -> float:
                labels = {"verb": verb, "result": code}
                return REGISTRY.get_sample_value("baycast_graphics_commands_total", labels) or 0.0

            before = refused("show", "INVALID_ARGUMENT"), refused("hide", "NOT_FOUND")
            for cmd, error, field in cases:
                with pytest.raises(error) as caught:
                    await command(bus, production, cmd)
                assert caught.value.field == field, cmd
            listed = await command(bus, production, graphics_pb2.GfxCommand(list={}))
            assert list(listed.instances) == []  # nothing was applied
            after = refused("show", "INVALID_ARGUMENT"), refused("hide", "NOT_FOUND")
            assert (after[0] - before[0], after[1] - before[1]) == (5, 1)

            # A malformed command never reaches the desk.
            with pytest.raises(errors.InvalidArgument) as caught:
                await bus.request(
                    subject("prod", production, "gfx", "cmd"),
                    graphics_pb2.GfxState(production="x"),
                    graphics_pb2.GfxReply,
                )
            assert caught.value.field == "production"

            templates = await command(
                bus, production, graphics_pb2.GfxCommand(templates={"reload": True})
            )
            names = {t.name for t in templates.templates}
            assert {
                "logo_bug",
                "live_badge",
                "clock",
                "lower_third",
                "ticker",
                "title_card",
                "countdown",
                "city_label",
            } <= names
    finally:
        await bus.drain()


async def test_restart_puts_the_same_graphics_back_on_air(
    nats_server: NatsServer, production: str
) -> None:
    bus = Bus(nats_server.url, "test-ctl")
    await bus.connect()
    try:
        async with running_service(GraphicsService, GraphicsSettings, nats_server.url) as svc:
            await command(bus, production, show("logo_bug", "logo", show="测试台标"))
            async with LayerReceiver(f"127.0.0.1:{svc.grpc.port}", production) as rx:
                await rx.wait_for(lambda: rx.canvas[..., 3].any())
                before = await rx.settle()
        async with running_service(GraphicsService, GraphicsSettings, nats_server.url) as svc:
            listed = await command(bus, production, graphics_pb2.GfxCommand(list={}))
            assert [(i.id, i.fields["show"]) for i in listed.instances] == [("logo", "测试台标")]
            async with LayerReceiver(f"127.0.0.1:{svc.grpc.port}", production) as rx:
                await rx.wait_for(lambda: rx.canvas[..., 3].any())
                after = await rx.settle()
        assert np.array_equal(before, after)
    finally:
        await bus.drain()


async def test_baycast_graphics_runs_as_a_process_and_withdraws_its_handle_on_sigterm(
    nats_server: NatsServer, production: str, tmp_path
) -> None:
    proc = service_process("graphics", nats_server.url, tmp_path, "graphics").start()
    bus = Bus(nats_server.url, "test-ctl")
    await bus.connect()
    try:
        await command(bus, production, show("clock", iid="clk"))
        directory = HandleDirectory(bus)
        assert await directory.resolve(f"gfx/{production}") == f"127.0.0.1:{proc.grpc_port}"
        async with LayerReceiver(f"127.0.0.1:{proc.grpc_port}", production, 640, 360) as rx:
            await rx.wait_for(lambda: rx.canvas[..., 3].any())
        proc.signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
        assert await directory.resolve(f"gfx/{production}") is None
    finally:
        proc.stop()
        await bus.drain()


async def test_a_deleted_production_s_scene_is_let_go_and_removed(
    nats_server: NatsServer, production: str
) -> None:
    """The mixer deletes a production with a badge on air: graphics stops running its scene
    (the handle withdrawn) and removes the stored scene, so no replica takes it up again."""
    bus = Bus(nats_server.url, "test-ctl")
    await bus.connect()
    directory = HandleDirectory(bus)
    try:
        async with (
            running_service(MixerService, MixerSettings, nats_server.url, unready_seconds=0.0),
            running_service(GraphicsService, GraphicsSettings, nats_server.url) as svc,
        ):
            created = mixer_pb2.Production(
                id=production, width=1280, height=720, fps=25, sources=[{"id": "gz"}]
            )
            await admin(bus, mixer_pb2.ProductionCommand(create=created))
            await command(bus, production, show("live_badge", "badge"))
            stored = await bus.kv("gfx", graphics_pb2.GfxScene)
            assert (entry := await stored.get(production)) and len(entry.value.instances) == 1
            assert await directory.resolve(f"gfx/{production}") is not None
            assert svc.steward.owns(production)

            delete = mixer_pb2.ProductionCommand.Delete(id=production)
            await admin(bus, mixer_pb2.ProductionCommand(delete=delete))
            deleted_at = time.monotonic()

            async def gone() -> bool:
                return not (
                    svc.steward.owns(production)
                    or await stored.get(production) is not None
                    or await directory.resolve(f"gfx/{production}") is not None
                )

            for _ in range(200):  # 10 s
                if await gone():
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the deleted production's scene is still run or stored")
            took = time.monotonic() - deleted_at
            print(f"\nthe deleted production's scene let go and removed in {took:.2f} s")
            assert took <= 1.0, took
            assert production not in svc.desk.scenes.running
            assert production not in await svc.desk.scenes.wanted()
    finally:
        await bus.drain()
