"""Fixtures for the control service: a real NATS, the control service, a real mixer with cards."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import mixer_pb2, operators_pb2
from services.common.handles import HandleDirectory
from services.control.service import ControlService
from services.control.settings import ControlSettings
from services.mixer.productions import ProductionStore
from services.mixer.service import MixerService
from services.mixer.settings import MixerSettings
from tests.support.media_source import FakeMediaServer
from tests.support.mixer import admin, cards, command, production, unique
from tests.support.nats import NatsServer
from tests.support.services import running_service

Cmd = mixer_pb2.MixerCommand
ROLES = {
    "director": operators_pb2.ROLE_DIRECTOR,
    "graphics": operators_pb2.ROLE_GRAPHICS,
    "audio": operators_pb2.ROLE_AUDIO,
    "viewer": operators_pb2.ROLE_VIEWER,
}


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    b = Bus(nats_server.url, "control-test")
    await b.connect()
    yield b
    await b.drain()


async def operator_cmd(bus: Bus, cmd: operators_pb2.OperatorCommand) -> operators_pb2.OperatorReply:
    return await bus.request(subject("operator", "cmd"), cmd, operators_pb2.OperatorReply)


AddOperator = Callable[..., Awaitable[tuple[str, str]]]


@pytest.fixture
def add_operator(bus: Bus) -> AddOperator:
    """Add an operator with a fresh id: (id, token)."""

    async def add(role: str, name: str = "") -> tuple[str, str]:
        operator_id = unique(role)
        reply = await operator_cmd(
            bus,
            operators_pb2.OperatorCommand(
                add=operators_pb2.AddOperator(
                    id=operator_id, name=name or operator_id, role=ROLES[role]
                )
            ),
        )
        return operator_id, reply.token

    return add


def control_settings(**overrides: Any) -> dict[str, Any]:
    return {"unready_seconds": 0.0, "drain_seconds": 3.0, **overrides}


# Media grants on, as on a platform that shares the secret with ingest and distribution.
GRANT_SECRET = "control-tests-media-grant-secret"


@pytest.fixture
async def control(nats_server: NatsServer) -> AsyncIterator[ControlService]:
    async with running_service(
        ControlService,
        ControlSettings,
        nats_server.url,
        **control_settings(media_grant_secret=GRANT_SECRET),
    ) as service:
        yield service


def base_url(service: ControlService) -> str:
    return f"http://127.0.0.1:{service.http.port}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # The cookie jar keeps cookies for 127.0.0.1 (aiohttp skips IP hosts unless unsafe).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


@dataclass
class Show:
    id: str
    sources: list[str]  # ids, in order
    names: dict[str, str]  # id -> name


@pytest.fixture
async def show(bus: Bus, nats_server: NatsServer) -> AsyncIterator[Show]:
    """A production of three cards run by a real mixer."""
    media = await FakeMediaServer().start()
    prod_id = unique("ctl")
    card_list = [media.add(c) for c in cards(prod_id, 3)]
    await media.announce(HandleDirectory(bus))
    spec = production(prod_id, card_list)
    async with running_service(
        MixerService,
        MixerSettings,
        nats_server.url,
        lease_renew_seconds=0.3,
        drain_seconds=3.0,
        unready_seconds=0.0,
    ):
        await admin(bus, mixer_pb2.ProductionCommand(create=spec))
        await command(bus, prod_id, Cmd(get=Cmd.Get()))
        try:
            yield Show(prod_id, [s.id for s in spec.sources], {s.id: s.name for s in spec.sources})
        finally:
            store = await ProductionStore.open(bus)
            with contextlib.suppress(Exception):
                await store.delete(prod_id)
    for card in media.cards.values():
        card.ended = True
    await media.stop()


@dataclass
class SseEvent:
    name: str
    data: Any


class SseReader:
    """Reads Server-Sent Events from an open aiohttp response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = 5.0) -> SseEvent | None:
        """The next event (None when the stream ended)."""
        name, data = "message", []

        async def read() -> SseEvent | None:
            nonlocal name
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    return None
                line = raw.decode().rstrip("\n")
                if not line:
                    if data:
                        return SseEvent(name, json.loads("\n".join(data)))
                    continue
                if line.startswith(":") or line.startswith("retry:"):
                    continue
                key, _, value = line.partition(": ")
                if key == "event":
                    name = value
                elif key == "data":
                    data.append(value)

        return await asyncio.wait_for(read(), timeout)

    async def until(self, name: str, timeout: float = 5.0) -> SseEvent:
        """Read up to (and including) the next event called `name`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.next(max(0.01, deadline - loop.time()))
            if event is None:
                raise AssertionError(f"the stream ended before {name!r}")
            if event.name == name:
                return event
