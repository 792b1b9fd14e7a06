"""Item 12: NATS users per service with subject permissions from `services.common.nats_accounts`.

A nats-server runs with the generated configuration. A client without credentials (or with a
wrong password) is refused; the graphics user cannot publish a mixer command; ingest, mixer and
graphics run as processes, each with its own user, and do their work (a station added and its
`baycast station` process publishing to ingest, the mixer finding its source and the graphics
layer through the handles bucket, commands answered, state stored) without a single permissions
violation in their logs.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path

import nats
import nats.aio.msg
import pytest
import structlog

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import graphics_pb2, mixer_pb2
from services.common.handles import HandleDirectory
from services.common.media import proto_to_i420
from services.common.nats_accounts import USERS, generate_passwords, user_url
from services.common.telemetry import mask_secrets
from tests.reliability.helpers import (
    create_production,
    gfx_command,
    graphics_process,
    ingest_process,
    live_station,
    mixer_command,
    mixer_process,
    processes,
    recording,
    shows_card,
    wait_for,
)
from tests.support.nats import (
    INSPECTOR,
    NatsServer,
    config_with_inspector,
    free_port,
    permission_violations,
)

pytestmark = pytest.mark.timeout(120)

Cmd = mixer_pb2.MixerCommand
MARKER = b'{"marker": true}'


def service_log_line(event: str, **fields: str) -> str:
    """One line as a service's JSON log writes it (the same processors and renderer)."""
    entry = mask_secrets(None, "warning", {"event": event, "level": "warning", **fields})
    rendered = structlog.processors.JSONRenderer(ensure_ascii=False)(None, "warning", entry)
    return str(rendered)


def test_the_log_search_finds_a_logged_violation() -> None:
    """What a service logs when the server refuses one of its publishes (the bus's error
    callback: `nats_error` with the client's error text, as nats-py words it) is what the search
    finds; the test below feeds it the error its own refused publish raised as well."""
    refused = 'nats: permissions violation for publish to "baycast.v1.prod.x.mixer.cmd.take"'
    line = service_log_line("nats_error", error=refused)
    assert json.loads(line)["error"] == refused
    assert permission_violations("other line\n" + line + "\n") == [line]
    assert permission_violations(service_log_line("nats_error", error="nats: timeout")) == []


async def refused(url: str) -> str:
    """The error a connection attempt gets ("" if it was let in)."""
    try:
        nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    except Exception as exc:
        return str(exc) or type(exc).__name__
    await nc.close()
    return ""


async def test_users_and_subject_permissions(tmp_path: Path) -> None:
    passwords = generate_passwords((*USERS, INSPECTOR))
    config = tmp_path / "nats.conf"
    config.write_text(config_with_inspector(passwords))
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
        inspector = Bus(urls[INSPECTOR], "perm-inspector")
        await inspector.connect()
        operator = Bus(urls["admin"], "perm-admin")
        await operator.connect()
        received: list[bytes] = []

        async def spy_cb(msg: nats.aio.msg.Msg) -> None:
            received.append(msg.data)

        spy = await inspector.nc.subscribe("baycast.v1.prod.x.mixer.cmd.take", cb=spy_cb)
        await inspector.nc.flush()
        await gfx_nc.publish("baycast.v1.prod.x.mixer.cmd.take", b'{"take": {}}')
        await gfx_nc.flush()
        await wait_for(lambda: bool(violations), 5, "permissions violation reported")
        # The server refused the publish before it said so; a message the test may send on the
        # same subject afterwards reaches the spy after anything the server let through.
        await inspector.nc.publish("baycast.v1.prod.x.mixer.cmd.take", MARKER)
        await wait_for(lambda: MARKER in received, 5, "the test's marker")
        await spy.unsubscribe()
        await gfx_nc.close()

        services = {
            "ingest": ingest_process(urls["ingest"], tmp_path),
            "mixer": mixer_process(urls["mixer"], tmp_path),
            "graphics": graphics_process(urls["graphics"], tmp_path),
        }
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(processes(*services.values()))
            # A real station publishing to ingest (which announces its source with its own user).
            await stack.enter_async_context(
                live_station(operator, services["ingest"], a, "广州台", tmp_path)
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
            source_handle = await HandleDirectory(operator).resolve(f"source/{a}")
            state_events: list[mixer_pb2.MixerState] = []

            async def on_state(state: mixer_pb2.MixerState, _s: str) -> None:
                state_events.append(state)

            sub = await operator.subscribe(
                subject("prod", prod_id, "mixer", "state"), mixer_pb2.MixerState, on_state
            )
            back = await mixer_command(operator, prod_id, Cmd(cut=Cmd.Cut(source=a)))
            await wait_for(lambda: bool(state_events), 5, "mixer state event")
            await sub.unsubscribe()
            # The station's pictures, from ingest through the mixer, on program.
            async with recording(endpoint, f"prod/{prod_id}/program") as on_air:
                await wait_for(
                    lambda: any(shows_card(proto_to_i420(f.frame), a) for f in on_air.frames[-3:]),
                    15,
                    "the station on program",
                )
        logs = {name: proc.logs() for name, proc in services.items()}
        await operator.drain()
        await inspector.drain()
    finally:
        nats_server.cleanup()

    print(
        f"\nitem 12: anonymous refused ({anonymous!r}), wrong password refused ({wrong!r});"
        f" graphics -> mixer.cmd: {violations[0]!r}, delivered {len(received) - 1} (before the"
        f" test's marker); ingest/mixer/graphics worked with their own users"
        f" ({len(rec.frames)} program frames, station {source_handle}, graphics {gfx_handle})"
    )
    assert "authorization violation" in anonymous.lower(), anonymous
    assert "authorization violation" in wrong.lower(), wrong
    assert "permissions violation" in violations[0].lower()
    # The search of the services' logs below finds this very error as a service would log it.
    assert permission_violations(service_log_line("nats_error", error=violations[0]))
    assert received == [MARKER]
    assert cut.switcher.program == b
    assert back.switcher.program == a
    assert shown.instances[0].template == "live_badge"
    assert gfx_handle is not None and source_handle is not None
    for name, text in logs.items():
        assert permission_violations(text) == [], (name, text[-3000:])
        for password in passwords.values():
            assert password not in text, name
