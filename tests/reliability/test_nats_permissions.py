"""Item 12: NATS users per service with subject permissions from `services.common.nats_accounts`.

A nats-server runs with the generated configuration. A client without credentials (or with a
wrong password) is refused; the graphics user cannot publish a mixer command; ingest, mixer and
graphics run as processes, each with its own user, and do their work (commands answered, state
stored, graphics keyed by the mixer) without a single permissions violation in their logs.
"""

from __future__ import annotations

import asyncio
import uuid

import nats
import nats.aio.msg
import pytest

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import graphics_pb2, ingest_pb2, mixer_pb2
from services.common.handles import HandleDirectory
from services.common.nats_accounts import generate_passwords, server_config, user_url
from tests.reliability.helpers import (
    STATION_COMMANDS,
    create_production,
    gfx_command,
    graphics_process,
    ingest_process,
    mixer_command,
    mixer_process,
    processes,
    recording,
    wait_for,
)
from tests.support.media_source import Card, FakeMediaServer
from tests.support.nats import NatsServer, free_port

pytestmark = pytest.mark.timeout(120)

Cmd = mixer_pb2.MixerCommand


async def refused(url: str) -> str:
    """The error a connection attempt gets ("" if it was let in)."""
    try:
        nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    except Exception as exc:
        return str(exc) or type(exc).__name__
    await nc.close()
    return ""


async def test_users_and_subject_permissions(media: FakeMediaServer, tmp_path) -> None:
    passwords = generate_passwords()
    config = tmp_path / "nats.conf"
    config.write_text(server_config(passwords))
    nats_server = NatsServer(port=free_port(), config=str(config)).start()
    base = nats_server.url
    urls = {user: user_url(base, user, pw) for user, pw in passwords.items()}
    tag = uuid.uuid4().hex[:5]
    prod_id, a, b = f"perm-{tag}", f"perm-a-{tag}", f"perm-b-{tag}"
    try:
        anonymous = await refused(base)
        wrong = await refused(user_url(base, "mixer", "not-the-password"))
        assert anonymous and wrong

        # graphics' user may not send a mixer command: the server refuses the publish.
        violations: list[str] = []

        async def on_error(exc: Exception) -> None:
            violations.append(str(exc))

        gfx_nc = await nats.connect(urls["graphics"], error_cb=on_error)
        operator = Bus(urls["operator"], "perm-operator")
        await operator.connect()
        received: list[bytes] = []

        async def spy_cb(msg: nats.aio.msg.Msg) -> None:
            received.append(msg.data)

        spy = await operator.nc.subscribe("baycast.v1.prod.x.mixer.cmd", cb=spy_cb)
        await gfx_nc.publish("baycast.v1.prod.x.mixer.cmd", b'{"take": {}}')
        await gfx_nc.flush()
        await wait_for(lambda: bool(violations), 5, "permissions violation reported")
        await asyncio.sleep(0.2)
        await spy.unsubscribe()
        await gfx_nc.close()

        media.add(Card(f"source/{a}", (81, 90, 240)))
        media.add(Card(f"source/{b}", (145, 54, 34)))
        services = {
            "ingest": ingest_process(urls["ingest"], tmp_path),
            "mixer": mixer_process(urls["mixer"], tmp_path),
            "graphics": graphics_process(urls["graphics"], tmp_path),
        }
        with processes(*services.values()):
            await media.announce(HandleDirectory(operator))
            station = await operator.request(
                STATION_COMMANDS,
                ingest_pb2.StationCommand(add=ingest_pb2.AddStation(id=f"p{tag}", name="站")),
                ingest_pb2.StationReply,
            )
            await create_production(
                operator,
                mixer_pb2.Production(
                    id=prod_id,
                    name="权限",
                    width=1280,
                    height=720,
                    sources=[
                        mixer_pb2.ProductionSource(id=a, name="广州台"),
                        mixer_pb2.ProductionSource(id=b, name="深圳台"),
                    ],
                ),
            )
            cut = await mixer_command(operator, prod_id, Cmd(cut=Cmd.Cut(source=b)))
            shown = await gfx_command(
                operator,
                prod_id,
                graphics_pb2.GfxCommand(show=graphics_pb2.GfxShow(template="live_badge", cut=True)),
            )
            # The mixer finds the graphics layer through the handles bucket and keys it.
            endpoint = f"127.0.0.1:{services['mixer'].grpc_port}"
            async with recording(endpoint, f"prod/{prod_id}/program") as rec:
                await wait_for(lambda: len(rec.frames) >= 10, 15, "program frames")
            gfx_handle = await HandleDirectory(operator).resolve(f"gfx/{prod_id}")
            state_events: list[mixer_pb2.MixerState] = []

            async def on_state(state: mixer_pb2.MixerState, _s: str) -> None:
                state_events.append(state)

            sub = await operator.subscribe(
                subject("prod", prod_id, "mixer", "state"), mixer_pb2.MixerState, on_state
            )
            await mixer_command(operator, prod_id, Cmd(cut=Cmd.Cut(source=a)))
            await wait_for(lambda: bool(state_events), 5, "mixer state event")
            await sub.unsubscribe()
            logs = {name: proc.logs() for name, proc in services.items()}
        await operator.drain()
    finally:
        nats_server.cleanup()

    print(
        f"\nitem 12: anonymous refused ({anonymous!r}), wrong password refused ({wrong!r});"
        f" graphics -> mixer.cmd: {violations[0]!r}, delivered {len(received)};"
        f" ingest/mixer/graphics worked with their own users"
        f" ({len(rec.frames)} program frames, graphics handle {gfx_handle})"
    )
    assert "authorization" in anonymous.lower() or "auth" in anonymous.lower(), anonymous
    assert "permissions violation" in violations[0].lower()
    assert received == []
    assert station.token
    assert cut.switcher.program == b
    assert shown.instances[0].template == "live_badge"
    assert gfx_handle is not None
    for name, text in logs.items():
        assert "ermissions violation" not in text, (name, text[-3000:])
        for password in passwords.values():
            assert password not in text, name
