"""A rundown drives the mixer and graphics, and every cue lands in the as-run log in order."""

from __future__ import annotations

import asyncio

import pytest

from services.common import errors
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import graphics_pb2, mixer_pb2, rundown_pb2
from services.graphics.service import GraphicsService
from services.graphics.settings import GraphicsSettings
from services.mixer.rundown import parse_rundown
from services.mixer.service import MixerService
from tests.integration.mixer.conftest import CreateProduction
from tests.support.media_source import FakeMediaServer
from tests.support.mixer import asrun_log, cards, command, production, rundown, unique
from tests.support.nats import NatsServer
from tests.support.services import running_service

RCmd = rundown_pb2.RundownCommand


def rundown_document(prefix: str) -> dict[str, object]:
    """The rundown file's content (as YAML would load it), with this test's source ids."""
    return {
        "name": "测试节目",
        "loop": True,
        "segments": [
            {
                "title": "开场 Opening",
                "duration": 1.0,
                "layout": "two",
                "graphics": [{"show": {"template": "live_badge", "instance": "live"}}],
            },
            {
                "title": "广州 Guangzhou",
                "duration": 1.0,
                "layout": "solo",
                "program": f"{prefix}-gz",
                "transition": {"type": "mix", "duration_ms": 200},
                "graphics": [
                    {
                        "show": {
                            "template": "lower_third",
                            "instance": "lt",
                            "fields": {"name": "李明"},
                        }
                    }
                ],
            },
            {
                "title": "深圳 Shenzhen",
                "duration": "manual",
                "program": f"{prefix}-sz",
                "graphics": [
                    {"hide": {"instance": "lt"}},
                    {"show": {"template": "no_such_template", "instance": "x"}},
                ],
            },
        ],
    }


async def test_rundown_runs_its_cues_in_order(
    nats_server: NatsServer,
    bus: Bus,
    media: FakeMediaServer,
    announce,
    mixer: MixerService,
    create_production: CreateProduction,
) -> None:
    prefix = unique("rd")
    card_list = cards(prefix, 3)
    for card in card_list:
        media.add(card)
    await announce()
    ids = [c.name.removeprefix("source/") for c in card_list]
    prod_id = unique("show")
    p = production(prod_id, card_list)
    p.layouts.add(name="two", kind="side_by_side", sources=ids[:2])
    p.layouts.add(name="solo", kind="full")
    await create_production(p)

    plan = parse_rundown(rundown_document(prefix))
    assert [s.duration_ms for s in plan.segments] == [1000, 1000, 0]

    async with running_service(GraphicsService, GraphicsSettings, nats_server.url):
        # A rundown naming a source the production lacks is refused whole, naming the field.
        bad = rundown_pb2.Rundown()
        bad.CopyFrom(plan)
        bad.segments[1].program = "nobody"
        with pytest.raises(errors.InvalidArgument) as info:
            await rundown(bus, prod_id, RCmd(load=bad))
        assert info.value.field == "load.segments[1].program"

        status = await rundown(bus, prod_id, RCmd(load=plan))
        assert (status.running, status.segment, len(status.rundown.segments)) == (False, -1, 3)
        started = asyncio.get_running_loop().time()
        status = await rundown(bus, prod_id, RCmd(start=RCmd.Start()))
        assert status.running and status.segment == 0

        while status.segment != 2:
            assert asyncio.get_running_loop().time() - started < 15, (
                "rundown did not reach segment 2"
            )
            await asyncio.sleep(0.2)
            status = await rundown(bus, prod_id, RCmd(status=RCmd.Status()))
        took = asyncio.get_running_loop().time() - started
        assert 1.8 < took < 6.0, took

        # Manual segment: it stays until `next`.
        await asyncio.sleep(1.5)
        status = await rundown(bus, prod_id, RCmd(status=RCmd.Status()))
        assert status.segment == 2 and status.running

        state = await command(
            bus, prod_id, mixer_pb2.MixerCommand(get=mixer_pb2.MixerCommand.Get())
        )
        assert state.switcher.program == f"{prefix}-sz"
        assert state.switcher.layout.name == "solo"
        scene = await bus.request(
            subject("prod", prod_id, "gfx", "cmd"),
            graphics_pb2.GfxCommand(list=graphics_pb2.GfxList()),
            graphics_pb2.GfxReply,
        )
        assert sorted(i.id for i in scene.instances) == ["live"]

        entries = await asrun_log(bus, prod_id)
        cues = [(e.segment, e.cue, e.ok) for e in entries]
        assert cues == [
            (0, "segment", True),
            (0, "layout", True),
            (0, "graphics", True),
            (1, "segment", True),
            (1, "layout", True),
            (1, "program", True),
            (1, "graphics", True),
            (2, "segment", True),
            (2, "program", True),
            (2, "graphics", True),
            (2, "graphics", False),
        ]
        assert "no_such_template" in entries[-1].error
        assert [e.time_us for e in entries] == sorted(e.time_us for e in entries)
        assert entries[3].title == "广州 Guangzhou"

        # `next` from the last segment of a looping rundown goes back to the first.
        status = await rundown(bus, prod_id, RCmd(next=RCmd.Next()))
        assert status.segment == 0
        state = await command(
            bus, prod_id, mixer_pb2.MixerCommand(get=mixer_pb2.MixerCommand.Get())
        )
        assert state.switcher.layout.name == "two"
        status = await rundown(bus, prod_id, RCmd(stop=RCmd.Stop()))
        assert not status.running
