"""Fault 3: nats-server killed (SIGKILL) and restarted on the same port.

Ingest, mixer and graphics run as processes. While NATS is down an operator sends commands with
`baycast ctl` (each a process that retries with one command id): a toggle (fade to black), a
cut and a ticker headline, which would show a double application. After the restart (same port,
same JetStream store) each service is ready again within 5 s and each command is applied once.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from services.common.bus import Bus
from services.common.gen.baycast.v1 import graphics_pb2, mixer_pb2
from services.common.handles import HandleDirectory
from tests.reliability.helpers import (
    create_production,
    ctl,
    gfx_command,
    graphics_process,
    ingest_process,
    mixer_command,
    mixer_process,
    processes,
    retry,
    wait_for,
)
from tests.support.media_source import Card, FakeMediaServer
from tests.support.nats import NatsServer

pytestmark = pytest.mark.timeout(150)

RECONNECT_TARGET_S = 5.0
OUTAGE_S = 3.0
Cmd = mixer_pb2.MixerCommand


async def test_services_rejoin_a_restarted_nats_and_apply_commands_once(
    own_nats_server: NatsServer, media: FakeMediaServer, tmp_path
) -> None:
    nats = own_nats_server
    tag = uuid.uuid4().hex[:5]
    prod_id, a, b = f"nk-{tag}", f"nk-a-{tag}", f"nk-b-{tag}"
    media.add(Card(f"source/{a}", (81, 90, 240)))
    media.add(Card(f"source/{b}", (145, 54, 34)))
    services = {
        "ingest": ingest_process(nats.url, tmp_path),
        "mixer": mixer_process(nats.url, tmp_path),
        "graphics": graphics_process(nats.url, tmp_path),
    }
    bus = Bus(nats.url, "nats-restart-test")
    await bus.connect()
    with processes(*services.values()):
        await media.announce(HandleDirectory(bus))
        await create_production(
            bus,
            mixer_pb2.Production(
                id=prod_id,
                name="重连",
                width=1280,
                height=720,
                sources=[
                    mixer_pb2.ProductionSource(id=a, name="广州台"),
                    mixer_pb2.ProductionSource(id=b, name="深圳台"),
                ],
            ),
        )
        shown = await gfx_command(
            bus,
            prod_id,
            graphics_pb2.GfxCommand(
                show=graphics_pb2.GfxShow(template="ticker", instance="news", cut=True)
            ),
        )
        revision_before = shown.instances[0].revision
        items_before = json.loads(shown.instances[0].fields["items"])
        before = await mixer_command(bus, prod_id, Cmd(get=Cmd.Get()))
        assert before.switcher.program == a and not before.switcher.ftb

        nats.kill()
        killed_at = time.monotonic()
        await wait_for(lambda: not any(s.ready() for s in services.values()), 5, "services notice")
        commands = [
            asyncio.create_task(ctl(nats.url, "ftb", prod_id, "--duration-ms", "40")),
            asyncio.create_task(ctl(nats.url, "cut", prod_id, b)),
            asyncio.create_task(ctl(nats.url, "gfx", "ticker-add", prod_id, "news", "速报 FLASH")),
        ]
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - killed_at)))
        nats.start()
        restarted_at = time.monotonic()
        ready_after: dict[str, float] = {}

        async def until_ready(name: str) -> None:
            proc = services[name]
            await wait_for(lambda: proc.ready(), 30, f"{name} ready again", every=0.1)
            ready_after[name] = time.monotonic() - restarted_at

        await asyncio.gather(*(until_ready(n) for n in services))
        results = await asyncio.gather(*commands)
        commands_done = time.monotonic() - restarted_at

        after = await retry(lambda: mixer_command(bus, prod_id, Cmd(get=Cmd.Get())))
        listed = await gfx_command(
            bus, prod_id, graphics_pb2.GfxCommand(list=graphics_pb2.GfxList())
        )
        news = next(i for i in listed.instances if i.id == "news")

        # A retried id gets the first reply again and is applied once (toggle twice = once).
        get_id = uuid.uuid4().hex
        subj = f"baycast.v1.prod.{prod_id}.mixer.cmd"
        first = await bus.request(
            subj, Cmd(ftb=Cmd.Ftb(duration_ms=40)), mixer_pb2.MixerState, command_id=get_id
        )
        again = await bus.request(
            subj, Cmd(ftb=Cmd.Ftb(duration_ms=40)), mixer_pb2.MixerState, command_id=get_id
        )
        final = await mixer_command(bus, prod_id, Cmd(get=Cmd.Get()))
        await mixer_command(
            bus, prod_id, Cmd(ftb=Cmd.Ftb(on=False, duration_ms=40))
        )  # leave it clean
        await bus.drain()

    print(
        "\nfault 3: ready again after restart: "
        + ", ".join(f"{n} {t:.2f} s" for n, t in sorted(ready_after.items()))
        + f"; ctl commands through a {OUTAGE_S:g} s outage done {commands_done:.2f} s after"
        f" restart; ticker revision {revision_before} -> {news.revision}"
    )
    assert all(code == 0 for code, _ in results), results
    assert max(ready_after.values()) <= RECONNECT_TARGET_S, ready_after
    assert after.switcher.ftb is True  # toggled once, not twice
    assert after.switcher.program == b
    assert news.revision == revision_before + 1
    items = json.loads(news.fields["items"])
    assert items == [*items_before, "速报 FLASH"]
    assert first.switcher.ftb is False and again.switcher.ftb is False
    assert final.switcher.ftb is False
