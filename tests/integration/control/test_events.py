"""The event stream: a snapshot first, then the bus's events within a second, ended on revoke."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import jsonschema

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import (
    control_pb2,
    mixer_pb2,
    monitoring_pb2,
    operators_pb2,
)
from services.common.lifecycle import VERSION
from services.common.settings import load_settings
from services.control import openapi
from services.control.service import ControlService
from services.control.settings import ControlSettings
from tests.integration.control.conftest import (
    AddOperator,
    Show,
    SseEvent,
    SseReader,
    base_url,
    control_settings,
    operator_cmd,
)
from tests.support.mixer import command, unique
from tests.support.nats import NatsServer, free_port

Cmd = mixer_pb2.MixerCommand


def drain_settings(nats_server: NatsServer) -> dict[str, object]:
    return {
        "nats_url": nats_server.url,
        "http_addr": "127.0.0.1:0",
        "grpc_addr": "127.0.0.1:0",
        "instance": f"control-drain-{free_port()}",
        **control_settings(),
    }


DOC = openapi.document(VERSION)
EVENT_SCHEMAS = DOC["paths"]["/api/events"]["get"]["x-events"]


def assert_documented(event: SseEvent) -> None:
    schema = {**EVENT_SCHEMAS[event.name], "components": DOC["components"]}
    jsonschema.Draft202012Validator(schema).validate(event.data)


async def test_the_stream_shows_the_show_and_a_cut_from_the_cli_within_a_second(
    bus: Bus,
    control: ControlService,
    show: Show,
    add_operator: AddOperator,
    http: aiohttp.ClientSession,
) -> None:
    operator, token = await add_operator("viewer", "赵看")
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{base_url(control)}/api/events?production={show.id}"
    async with http.get(url, headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        events = SseReader(response)
        hello = await events.next()
        assert hello is not None and hello.name == "hello"
        assert (hello.data["operator"]["id"], hello.data["production"]) == (operator, show.id)
        snapshot = []
        while (event := await events.next()) is not None and event.name != "snapshot":
            snapshot.append(event)
        # Every event is what the OpenAPI document says it is (its `x-events`).
        for e in [hello, *snapshot]:
            assert_documented(e)
        states = [e.data for e in snapshot if e.name == "mixer.state"]
        assert states and states[-1]["switcher"]["program"] == show.sources[0]

        # A cut sent as `baycast ctl` sends it: on the bus, no operator.
        sz = show.sources[1]
        cut_at = time.monotonic()
        await command(bus, show.id, Cmd(cut=Cmd.Cut(source=sz)))
        while True:
            event = await events.until("mixer.state", timeout=1.0)
            if event.data["switcher"]["program"] == sz:
                break
        assert time.monotonic() - cut_at < 1.0
        assert_documented(event)
        tally = await events.until("tally", timeout=1.0)
        assert_documented(tally)
        on_air = [t["source"] for t in tally.data["sources"] if t.get("program")]
        assert on_air == [sz]

        # Audio levels at the mixer's rate (about 12 a second at 25 fps).
        started, count = time.monotonic(), 0
        while time.monotonic() - started < 1.0:
            event = await events.next(timeout=1.0)
            assert event is not None
            if event.name == "mixer.levels":
                count += 1
                assert_documented(event)
        assert count >= 8

        # The platform's events: sources, alerts, the program's loudness from monitoring.
        source = control_pb2.SourceState(source=unique("src"), name="珠海台", online=True)
        await bus.publish(subject("source", source.source, "state"), source)
        state = await events.until("source.state")
        assert state.data["name"] == "珠海台"
        assert_documented(state)
        alert = monitoring_pb2.Alert(
            id=unique("a"),
            condition="program_black",
            severity="critical",
            state=monitoring_pb2.ALERT_STATE_RAISED,
        )
        await bus.publish(subject("alert", "critical"), alert)
        raised = await events.until("alert")
        assert raised.data["condition"] == "program_black"
        assert_documented(raised)
        loudness = monitoring_pb2.ProgramLoudness(production=show.id, short_term_lufs=-23.5)
        await bus.publish(subject("prod", show.id, "loudness"), loudness)
        measured = await events.until("loudness")
        assert measured.data["shortTermLufs"] == -23.5
        assert_documented(measured)
        # Another production's events are not in this stream.
        await bus.publish(
            subject("prod", "elsewhere", "loudness"),
            monitoring_pb2.ProgramLoudness(production="elsewhere", short_term_lufs=-10),
        )
        await bus.publish(subject("prod", show.id, "loudness"), loudness)
        event = await events.until("loudness")
        assert event.data["production"] == show.id


async def test_a_cookie_stream_with_its_snapshot_ends_when_the_operator_is_revoked(
    bus: Bus, control: ControlService, show: Show, add_operator: AddOperator
) -> None:
    operator, token = await add_operator("director", "张导")
    url = base_url(control)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.post(f"{url}/api/session", json={"token": token}) as r:
            csrf = (await r.json())["csrfToken"]
        # A command through the API shows up in the stream's as-run events.
        async with browser.get(f"{url}/api/events?production={show.id}") as response:
            events = SseReader(response)
            hello = await events.until("hello")
            assert hello.data["via"] == "cookie" and "csrfToken" not in hello.data
            await events.until("snapshot")
            headers = {"Origin": url, "X-CSRF-Token": csrf}
            body = {"preview": {"source": show.sources[2]}}
            async with browser.post(
                f"{url}/api/productions/{show.id}/mixer", json=body, headers=headers
            ) as r:
                assert r.status == 200
            entry = await events.until("asrun", timeout=2.0)
            assert (entry.data["operator"], entry.data["detail"]) == (
                operator,
                "张导 previewed 佛山台",
            )

            revoke = operators_pb2.OperatorCommand(revoke=operators_pb2.OperatorRef(id=operator))
            await operator_cmd(bus, revoke)
            revoked_at = time.monotonic()
            while (await events.next(timeout=2.0)) is not None:
                pass  # events still queued, then the end
            assert time.monotonic() - revoked_at < 2.0


async def test_streams_need_an_operator_and_a_known_production(
    control: ControlService, add_operator: AddOperator, http: aiohttp.ClientSession
) -> None:
    _, token = await add_operator("viewer")
    url = f"{base_url(control)}/api/events"
    async with http.get(url) as r:
        assert r.status == 401
    headers = {"Authorization": f"Bearer {token}"}
    async with http.get(f"{url}?production=nowhere", headers=headers) as r:
        assert r.status == 404
    async with http.get(f"{url}?production=no.where", headers=headers) as r:
        assert r.status == 400
    # Without a production: every production's events and the platform's.
    async with http.get(url, headers=headers) as response:
        events = SseReader(response)
        assert (await events.until("hello")).data["production"] == ""
        await asyncio.wait_for(events.until("snapshot"), 5)


async def test_a_draining_service_ends_its_streams(
    nats_server: NatsServer, add_operator: AddOperator, http: aiohttp.ClientSession
) -> None:
    service = ControlService(
        load_settings(ControlSettings, "control", environ={}, **drain_settings(nats_server))
    )
    await service.start()
    try:
        _, token = await add_operator("viewer")
        url = f"{base_url(service)}/api/events"
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
            events = SseReader(response)
            await events.until("snapshot")
            stopping = asyncio.create_task(service.stop())
            assert await events.next(timeout=3.0) is None  # the stream ends, it is not cut
            await asyncio.wait_for(stopping, 5.0)
    finally:
        await service.stop()
